"""The command server's loop: one thread, one ``selectors`` loop, a fork per command.

Fork safety is the design: the server imports the CLI and the client library but
never makes a ZeroMQ context, a thread or a bus socket, so each child starts from
a clean process and opens its own. The loop only accepts, reads requests and
reaps children:

* the peer's uid (SO_PEERCRED) must be the server's, checked before a byte is read;
* a request is at most ``protocol.MAX_REQUEST`` bytes and must arrive within
  ``READ_TIMEOUT`` seconds; at most ``MAX_CLIENTS`` connections are open and at most
  ``MAX_CHILDREN`` commands run at once (the rest wait in order; a waiting caller that
  gave up is skipped, never run);
* before each command the stamp (``stamp``) is compared; a stale server refuses the
  command (the caller runs the plain CLI) and replaces itself with ``exec``.

Refusals are one ``R`` answer and a closed socket; nothing else has happened then.
"""

from __future__ import annotations

import array
import collections
import errno
import gc
import logging
import os
import selectors
import signal
import socket
import struct
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from berth.cliserver import child, protocol, stamp

log = logging.getLogger("berth.cli-server")

SOCKET_NAME = "cli.sock"
READ_TIMEOUT = 5.0
MAX_CLIENTS = 256
MAX_CHILDREN = 32
BACKLOG = 128
PARENT_CHECK = 1.0
_CRED = struct.Struct("3i")


class AlreadyServed(Exception):
    """Another live server listens on the socket."""


@dataclass(eq=False)
class Caller:
    """One connection, from accept to the fork of its command (or its refusal)."""

    sock: socket.socket
    deadline: float
    data: bytearray = field(default_factory=bytearray)
    fds: list[int] = field(default_factory=list)
    length: int | None = None
    request: protocol.Request | None = None

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()
        self.sock.close()


def socket_path(run_dir: str) -> str:
    return os.path.join(run_dir, SOCKET_NAME)


def preload() -> None:
    """Import everything a command may need, so no child pays for it: the CLI's
    modules, and what argparse and a version look-up import on first use (a parser
    is built and used once; nothing is run)."""
    import importlib.metadata  # noqa: F401
    import platform  # noqa: F401
    import shutil  # noqa: F401

    from berth.cli import attach, build_parser, compose, format, template  # noqa: F401
    from bus import client, subscription  # noqa: F401

    build_parser("ps").parse_args(["ps"])
    gc.collect()
    gc.freeze()  # what the server holds stays out of every child's collections


class Server:
    """Serves berth commands on ``path`` until SIGTERM or SIGINT."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.uid = os.geteuid()
        self.interpreter = interpreter_settings(os.environ)
        self.files = stamp.watched_files()
        self.stamp = stamp.take(self.files)
        self.listener = _listen(path)
        self.bound = _identity(path)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.listening = True
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.selector.register(self.wake_r, selectors.EVENT_READ)
        self.callers: set[Caller] = set()
        self.waiting: collections.deque[Caller] = collections.deque()
        self.children: dict[int, socket.socket] = {}
        self.stopping = False
        parent = os.environ.get(protocol.PARENT_ENV, "")
        self.parent = int(parent) if parent.isdigit() else None

    # ------------------------------------------------------------------ loop

    def serve_forever(self) -> int:
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        log.info("berth cli-server: serving on %s (pid %d)", self.path, os.getpid())
        try:
            while not self.stopping:
                self._turn()
        finally:
            self.close()
        return 0

    def _turn(self) -> None:
        now = time.monotonic()
        timeout = min((c.deadline for c in self.callers if c.request is None),
                      default=now + 60) - now
        if self.parent is not None:
            timeout = min(timeout, PARENT_CHECK)
        for key, _ in self.selector.select(max(timeout, 0)):
            if key.fileobj is self.listener:
                self._accept()
            elif key.fileobj == self.wake_r:
                _drain(self.wake_r)
            else:
                self._read(key.data)
        self._reap()
        self._expire(time.monotonic())
        self._start_waiting()
        if self.parent is not None and os.getppid() != self.parent:
            log.warning("cli-server: berth up (pid %d) is gone; stopping", self.parent)
            self.stopping = True
        self._listen_while_room()

    def _listen_while_room(self) -> None:
        """Watch the listener only while another caller fits: a full server that kept
        watching it would wake at once, forever (the kernel's backlog holds the rest)."""
        room = len(self.callers) < MAX_CLIENTS
        if room != self.listening:
            if room:
                self.selector.register(self.listener, selectors.EVENT_READ)
            else:
                self.selector.unregister(self.listener)
            self.listening = room

    def _stop(self, *_: object) -> None:
        self.stopping = True

    def close(self) -> None:
        try:
            if _identity(self.path) == self.bound:  # not a successor's socket
                os.unlink(self.path)
        except OSError:
            pass
        for caller in list(self.callers):
            caller.close()
        self.callers.clear()
        self.listener.close()
        self.selector.close()
        for conn in self.children.values():
            conn.close()  # each child tells its own caller the exit code

    # ------------------------------------------------------------------ callers

    def _accept(self) -> None:
        while len(self.callers) < MAX_CLIENTS:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("cli-server: cannot accept: %s", exc.strerror)
                    return
                raise
            sock.setblocking(False)
            pid, uid, _gid = _CRED.unpack(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))
            if uid != self.uid:
                log.warning("cli-server: refused uid %d (pid %d)", uid, pid)
                _refuse(sock, f"the berth command server serves uid {self.uid} only, not "
                              f"uid {uid}; running the command without it")
                continue
            caller = Caller(sock, time.monotonic() + READ_TIMEOUT)
            self.callers.add(caller)
            self.selector.register(sock, selectors.EVENT_READ, caller)

    def _read(self, caller: Caller) -> None:
        try:
            data, ancdata, flags, _ = caller.sock.recvmsg(
                65536, socket.CMSG_SPACE(protocol.FDS * 4), socket.MSG_CMSG_CLOEXEC)
        except BlockingIOError:
            return
        except OSError:
            self._drop(caller)
            return
        for level, kind, cdata in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(cdata[: len(cdata) - len(cdata) % fds.itemsize])
                caller.fds.extend(fds)
        try:
            if flags & socket.MSG_CTRUNC or len(caller.fds) > protocol.FDS:
                raise protocol.BadRequest("the request carried more descriptors than "
                                          "stdin, stdout and stderr")
            if not data:  # the caller left before its request was whole
                self._drop(caller)
                return
            if caller.request is not None:
                raise protocol.BadRequest("the request went on after its end")
            caller.data += data
            if caller.length is None and len(caller.data) >= protocol.HEADER:
                caller.length = protocol.payload_length(bytes(caller.data[:protocol.HEADER]))
            if caller.length is not None:
                whole = protocol.HEADER + caller.length
                if len(caller.data) > whole:
                    raise protocol.BadRequest("the request went on after its end")
                if len(caller.data) == whole:
                    if len(caller.fds) != protocol.FDS:
                        raise protocol.BadRequest("the request did not carry stdin, stdout "
                                                  "and stderr")
                    caller.request = protocol.parse(bytes(caller.data[protocol.HEADER:]))
                    caller.data = bytearray()
                    self.waiting.append(caller)
            elif len(caller.data) >= protocol.HEADER:
                raise protocol.BadRequest("unreadable request")
        except protocol.BadRequest as exc:
            log.warning("cli-server: refused a request: %s", exc)
            self._drop(caller, str(exc))

    def _drop(self, caller: Caller, sentence: str | None = None) -> None:
        if caller in self.callers:
            self.callers.discard(caller)
            self.selector.unregister(caller.sock)
        if caller in self.waiting:
            self.waiting.remove(caller)
        if sentence is not None:
            _refuse(caller.sock, sentence)
        caller.close()

    def _expire(self, now: float) -> None:
        for caller in [c for c in self.callers if c.request is None and c.deadline <= now]:
            self._drop(caller, f"no whole request within {READ_TIMEOUT:g}s")

    # ------------------------------------------------------------------ commands

    def _start_waiting(self) -> None:
        while self.waiting and len(self.children) < MAX_CHILDREN:
            caller = self.waiting.popleft()
            request = caller.request
            if request is None or _hung_up(caller.sock):
                self._drop(caller)  # it gave up waiting: it runs the command itself
                continue
            if protocol.runs_in_python(request.argv):
                self._drop(caller, "")  # a server of its own: never in our child
                continue
            if interpreter_settings(request.env) != self.interpreter:
                self._drop(caller, "")  # the plain CLI would start another interpreter
                continue
            if stamp.take(self.files) != self.stamp:
                self._drop(caller, "")
                self._replace()
                return
            self._fork(caller, request)

    def _fork(self, caller: Caller, request: protocol.Request) -> None:
        self.callers.discard(caller)
        self.selector.unregister(caller.sock)
        caller.sock.setblocking(True)
        inherited = [self.listener.fileno(), self.selector.fileno(), self.wake_r,
                     self.wake_w, *(c.sock.fileno() for c in self.callers),
                     *(fd for c in self.callers for fd in c.fds),
                     *(conn.fileno() for conn in self.children.values())]
        child.flush_std()
        pid = os.fork()
        if pid == 0:
            child.run(caller.sock, caller.fds, request, inherited)
        for fd in caller.fds:
            os.close(fd)
        caller.fds.clear()
        self.children[pid] = caller.sock

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is None:
                continue
            if os.WIFSIGNALED(status):  # it could not say its code itself
                try:
                    conn.setblocking(False)
                    conn.send(protocol.answer(protocol.KILLED, os.WTERMSIG(status)))
                except OSError:
                    pass
            conn.close()

    def _replace(self) -> None:
        """Start again from the code and configuration as they are now. Running
        commands go on: each child reports to its caller itself."""
        log.warning("cli-server: berth's code or configuration changed since the start; "
                    "replacing this server")
        self.close()
        child.flush_std()
        os.execv(sys.executable, [sys.executable, "-P", "-m", "berth", *sys.argv[1:]])


def interpreter_settings(env: Mapping[str, str]) -> dict[str, str]:
    """The variables that shape the interpreter itself (module path, warnings, I/O
    encoding): a caller whose differ from the server's is run by the plain CLI."""
    return {k: v for k, v in env.items() if k.startswith("PYTHON")}


def _listen(path: str) -> socket.socket:
    """Bind ``path`` (0600 through the umask), taking over a socket nobody serves."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except FileNotFoundError:
        pass
    except ConnectionRefusedError:
        os.unlink(path)  # left by a server that died
    else:
        raise AlreadyServed(f"a berth command server already serves {path}")
    finally:
        probe.close()
    old = os.umask(0o177)
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
    finally:
        os.umask(old)
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


def _identity(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _refuse(sock: socket.socket, sentence: str) -> None:
    try:
        sock.setblocking(False)
        sock.send(protocol.refusal(sentence))
    except OSError:
        pass
    sock.close()


def _hung_up(sock: socket.socket) -> bool:
    import select

    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLHUP | select.POLLRDHUP)
    return any(ev & (select.POLLHUP | select.POLLRDHUP | select.POLLERR)
               for _, ev in poller.poll(0))


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def serve(run_dir: str) -> int:
    """``berth cli-server``: serve ``$BERTH_RUN/cli.sock`` in the foreground."""
    from workers.statedirs import private_directory

    if not logging.root.handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    private_directory(run_dir, "BERTH_RUN")
    preload()
    try:
        server = Server(socket_path(run_dir))
    except AlreadyServed as exc:
        print(f"berth: {exc}", file=sys.stderr)
        return 1
    return server.serve_forever()

