/*
 * berth: the small front end of the berth command line.
 *
 * Python's start-up and the CLI's imports cost ~80 ms before a command sends a
 * byte, so this program asks the warm command server ($BERTH_RUN/cli.sock,
 * berth/cliserver) to run the command instead: it hands over its stdin, stdout
 * and stderr (SCM_RIGHTS) with its arguments, environment, working directory and
 * umask, forwards the signals it receives to the server's child that runs the
 * command, and exits with that child's exit code.
 *
 * Whenever the server cannot run the command (no socket, a refusal, anything
 * unexpected before the command started) it runs the plain Python CLI instead,
 * with the same arguments: every command works with or without the server. The
 * commands that run servers (up, worker, broker, db, cli-server) always go to
 * Python directly, as does everything when BERTH_CLI_SERVER=0.
 *
 * The protocol is berth/cliserver/protocol.py's; libc only.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#ifndef BERTH_PYTHON
#error "build with -DBERTH_PYTHON='\"/path/to/venv/bin/python\"' (scripts/install.sh does)"
#endif

#define DEFAULT_RUN "/run/berth"
#define SOCKET_NAME "cli.sock"
#define MAGIC "berth-cli/1"          /* and its NUL: 12 bytes */
#define MAGIC_LEN 12
#define MAX_REQUEST (2 * 1024 * 1024) /* protocol.MAX_REQUEST */
#define START_TIMEOUT_S 10           /* waiting for the command to start */

extern char **environ;

static volatile sig_atomic_t child_pid;
static volatile sig_atomic_t pending_sig; /* received before the command started */

/* The plain Python CLI, same arguments. */
static void run_python(char **argv)
{
    if (pending_sig != 0) { /* asked to end before anything ran: end so */
        signal(pending_sig, SIG_DFL);
        raise(pending_sig);
    }
    int argc = 0;
    while (argv[argc] != NULL)
        argc++;
    char **args = calloc((size_t)argc + 4, sizeof(char *));
    if (args == NULL) {
        perror("berth");
        exit(125);
    }
    args[0] = (char *)BERTH_PYTHON;
    args[1] = (char *)"-P"; /* no working directory on the module path */
    args[2] = (char *)"-m";
    args[3] = (char *)"berth";
    for (int i = 1; i < argc; i++)
        args[i + 3] = argv[i];
    execv(BERTH_PYTHON, args);
    fprintf(stderr, "berth: cannot run %s: %s\n", BERTH_PYTHON, strerror(errno));
    exit(errno == ENOENT ? 127 : 126);
}

/* The sub-command named on the command line (as berth.cli._command_word). */
static const char *command_word(char **argv)
{
    for (int i = 1; argv[i] != NULL; i++) {
        const char *w = argv[i];
        if (strcmp(w, "--timeout") == 0 || strcmp(w, "--key") == 0 ||
            strcmp(w, "--server-key") == 0) {
            if (argv[i + 1] == NULL)
                return NULL;
            i++;
        } else if (w[0] != '-') {
            return w;
        }
    }
    return NULL;
}

static int runs_in_python(const char *word)
{
    static const char *const direct[] = {"up", "worker", "broker", "db", "cli-server", NULL};
    if (word == NULL)
        return 0;
    for (int i = 0; direct[i] != NULL; i++)
        if (strcmp(word, direct[i]) == 0)
            return 1;
    return 0;
}

struct buf {
    char *data;
    size_t len, cap;
};

static int put(struct buf *b, const char *s, size_t n)
{
    if (b->len + n > (size_t)MAGIC_LEN + 4 + MAX_REQUEST)
        return -1;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        char *data = realloc(b->data, cap);
        if (data == NULL)
            return -1;
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    return 0;
}

static int put_field(struct buf *b, const char *s)
{
    return put(b, s, strlen(s) + 1);
}

/* The request frame: MAGIC, length, umask, cwd, argc, argv, environment. */
static int build_request(struct buf *b, char **argv)
{
    char num[32];
    char cwd[PATH_MAX];
    mode_t mask = umask(0);
    umask(mask);
    if (getcwd(cwd, sizeof cwd) == NULL)
        return -1;
    if (put(b, MAGIC, MAGIC_LEN) < 0 || put(b, "\0\0\0\0", 4) < 0)
        return -1;
    snprintf(num, sizeof num, "%o", (unsigned)mask);
    if (put_field(b, num) < 0 || put_field(b, cwd) < 0)
        return -1;
    int argc = 0;
    while (argv[argc] != NULL)
        argc++;
    snprintf(num, sizeof num, "%d", argc - 1);
    if (put_field(b, num) < 0)
        return -1;
    for (int i = 1; i < argc; i++)
        if (put_field(b, argv[i]) < 0)
            return -1;
    for (char **e = environ; *e != NULL; e++)
        if (put_field(b, *e) < 0)
            return -1;
    uint32_t n = (uint32_t)(b->len - MAGIC_LEN - 4);
    unsigned char len[4] = {(unsigned char)(n >> 24), (unsigned char)(n >> 16),
                            (unsigned char)(n >> 8), (unsigned char)n};
    memcpy(b->data + MAGIC_LEN, len, 4);
    return 0;
}

static int connect_server(void)
{
    const char *run = getenv("BERTH_RUN");
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    int n = snprintf(addr.sun_path, sizeof addr.sun_path, "%s/%s",
                     run && *run ? run : DEFAULT_RUN, SOCKET_NAME);
    if (n < 0 || (size_t)n >= sizeof addr.sun_path)
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {START_TIMEOUT_S, 0};
    /* a full backlog blocks connect for at most this long (SO_SNDTIMEO) */
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Send the whole frame, the three descriptors riding on its first bytes. */
static int send_request(int sock, const struct buf *b)
{
    int fds[3] = {0, 1, 2};
    union {
        char buf[CMSG_SPACE(sizeof fds)];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof control);
    size_t off = 0;
    while (off < b->len) {
        struct iovec iov = {b->data + off, b->len - off};
        struct msghdr msg;
        memset(&msg, 0, sizeof msg);
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        if (off == 0) {
            msg.msg_control = control.buf;
            msg.msg_controllen = sizeof control.buf;
            struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof fds);
            memcpy(CMSG_DATA(c), fds, sizeof fds);
        }
        ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        off += (size_t)n;
    }
    return 0;
}

/* Read exactly n bytes; 0 when done, -1 on end of stream or an error (errno). */
static int read_full(int sock, unsigned char *p, size_t n, int patient)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = recv(sock, p + got, n - got, 0);
        if (r == 0) {
            errno = 0;
            return -1;
        }
        if (r < 0) {
            if (errno == EINTR || (patient && (errno == EAGAIN || errno == EWOULDBLOCK)))
                continue;
            return -1;
        }
        got += (size_t)r;
    }
    return 0;
}

static void forward(int sig)
{
    int saved = errno;
    pid_t pid = (pid_t)child_pid;
    if (pid <= 0 && sig != SIGWINCH && sig != SIGCONT) {
        pending_sig = sig; /* delivered once the command's process is known */
    } else if (pid > 0) {
        if (sig == SIGTSTP) {
            /* Stop the command (its own session ignores a SIGTSTP), then ourselves by
             * SIGTSTP itself, so the shell sees the stop the plain CLI would show; the
             * shell's SIGCONT comes back through here. */
            struct sigaction dfl, mine;
            sigset_t set;
            memset(&dfl, 0, sizeof dfl);
            dfl.sa_handler = SIG_DFL;
            sigemptyset(&dfl.sa_mask);
            kill(pid, SIGSTOP);
            sigaction(SIGTSTP, &dfl, &mine);
            sigemptyset(&set);
            sigaddset(&set, SIGTSTP);
            sigprocmask(SIG_UNBLOCK, &set, NULL);
            raise(SIGTSTP); /* stopped here until SIGCONT */
            sigprocmask(SIG_BLOCK, &set, NULL);
            sigaction(SIGTSTP, &mine, NULL);
        } else {
            kill(pid, sig);
        }
    }
    errno = saved;
}

static void forward_signals(void)
{
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGWINCH,
                               SIGTSTP, SIGCONT, SIGUSR1, SIGUSR2};
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = forward;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: recv returns EINTR and the loop goes on */
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        sigaction(sigs[i], &sa, NULL);
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* A refusal's sentence, printed when there is one. */
static void print_refusal(int sock, uint32_t len)
{
    if (len == 0 || len > 4096)
        return;
    unsigned char text[4097];
    if (read_full(sock, text, len, 0) == 0) {
        text[len] = '\0';
        fprintf(stderr, "berth: %s\n", (char *)text);
    }
}

int main(int argc, char **argv)
{
    (void)argc;
    const char *off = getenv("BERTH_CLI_SERVER");
    if ((off != NULL && strcmp(off, "0") == 0) || runs_in_python(command_word(argv)))
        run_python(argv);
    for (int fd = 0; fd < 3; fd++)
        if (fcntl(fd, F_GETFD) < 0)
            run_python(argv); /* a closed stdio fd: Python decides what that means */

    struct buf req = {NULL, 0, 0};
    if (build_request(&req, argv) < 0)
        run_python(argv);
    int sock = connect_server();
    if (sock < 0)
        run_python(argv);
    struct termios saved;
    int have_tty = isatty(0) && tcgetattr(0, &saved) == 0;
    forward_signals();
    if (send_request(sock, &req) < 0) {
        /* refused at once (another uid): the refusal may be waiting to be read */
        unsigned char early[5];
        if (read_full(sock, early, sizeof early, 0) == 0 && early[0] == 'R')
            print_refusal(sock, be32(early + 1));
        close(sock);
        run_python(argv);
    }
    free(req.data);

    /* Before the command starts, a refusal or silence means the plain CLI runs it.
     * After P, only the command's own exit code ends this. */
    unsigned char msg[5];
    int started = 0;
    for (;;) {
        if (read_full(sock, msg, sizeof msg, started) < 0) {
            if (!started) {
                close(sock);
                run_python(argv);
            }
            fprintf(stderr, "berth: the command's process ended without an exit code\n");
            if (have_tty)
                tcsetattr(0, TCSADRAIN, &saved);
            return 125;
        }
        uint32_t n = be32(msg + 1);
        if (msg[0] == 'P' && !started) {
            child_pid = (sig_atomic_t)n;
            started = 1;
            if (pending_sig != 0)
                forward(pending_sig);
            struct timeval none = {0, 0};
            setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
        } else if (msg[0] == 'X') {
            return (int)(n & 0xff);
        } else if (msg[0] == 'S' && n > 0 && n < 65) {
            struct termios now;
            /* killed: it could not restore the terminal (compared first: a write to
             * the terminal from the background would stop us) */
            if (have_tty && tcgetattr(0, &now) == 0 && memcmp(&now, &saved, sizeof now) != 0)
                tcsetattr(0, TCSADRAIN, &saved);
            /* die of the same signal, as the plain CLI's process would have */
            signal((int)n, SIG_DFL);
            sigset_t set;
            sigemptyset(&set);
            sigaddset(&set, (int)n);
            sigprocmask(SIG_UNBLOCK, &set, NULL);
            kill(getpid(), (int)n);
            return 128 + (int)n;
        } else if (msg[0] == 'R' && !started) {
            print_refusal(sock, n);
            close(sock);
            run_python(argv);
        } else if (!started) {
            close(sock);
            run_python(argv);
        } else {
            fprintf(stderr, "berth: unexpected answer from the command server\n");
            return 125;
        }
    }
}
