"""Spawning conmon the way libpod's ``createOCIContainer`` does.

conmon gets the sync pipe on fd 3 and the start pipe on fd 4
(``_OCI_SYNCPIPE``/``_OCI_STARTPIPE``); further fds (reserved ports, then any
systemd socket-activation fds) follow. We use ``posix_spawn`` with dup2 file
actions instead of ``preexec_fn`` because workers are threaded.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass, field

from engine.errors import RuntimeFailure, Timeout
from engine.runtime.config import SYSTEMD, RuntimeConfig
from engine.runtime.layout import ContainerPaths
from engine.runtime.runc import classify_start
from engine.runtime.waits import readable, wait_pids_exit

_FIRST_EXTRA_FD = 3
_HIGH_FD = 100


@dataclass(frozen=True)
class ConmonOptions:
    container_id: str
    name: str
    terminal: bool = False
    stdin: bool = False
    restore_path: str | None = None
    restore_tcp_established: bool = False
    extra_fds: tuple[int, ...] = field(default=())
    log_size_max: int | None = None
    """The container's own ``--log-opt max-size`` (bytes); None: the runtime's default."""


def conmon_args(config: RuntimeConfig, paths: ContainerPaths, opts: ConmonOptions) -> list[str]:
    """The conmon command line; pure, so the flag set can be checked without processes."""
    args = [config.conmon_path]
    if config.cgroup_manager == SYSTEMD:
        args.append("-s")
    args += ["-c", opts.container_id, "-u", opts.container_id, "-n", opts.name]
    args += ["-r", config.runtime_path, "-b", paths.bundle, "-p", paths.pidfile]
    args += ["-l", f"k8s-file:{paths.log}", "--exit-dir", config.exits_dir]
    args += ["--runtime-arg", "--root", "--runtime-arg", config.runc_root]
    args += ["--conmon-pidfile", paths.conmon_pidfile]
    if config.exit_command:
        args += ["--exit-command", config.exit_command[0]]
        for arg in config.exit_command[1:]:
            args += ["--exit-command-arg", arg]
    args += ["--socket-dir-path", config.sockets_dir]
    if opts.terminal:
        args.append("-t")
    elif opts.stdin:
        args.append("-i")
    log_size_max = opts.log_size_max if opts.log_size_max is not None else config.log_size_max
    if log_size_max >= 0:
        args += ["--log-size-max", str(log_size_max)]
    if config.no_pivot:
        args.append("--no-pivot")
    if config.debug:
        args += ["--log-level", "debug", "--syslog"]
    else:
        args += ["--log-level", "info"]
    if opts.restore_path is not None:
        # conmon 2.x calls libpod's --restore-arg "--runtime-opt".
        args += ["--restore", opts.restore_path]
        args += ["--runtime-opt", f"--work-path={paths.container_dir}"]
        if opts.restore_tcp_established:
            args += ["--runtime-opt", "--tcp-established"]
    return args


def conmon_env(config: RuntimeConfig, n_extra: int) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in config.conmon_env:
        k, _, v = item.partition("=")
        env[k] = v
    criu_dir = os.path.dirname(config.criu_path)
    env.setdefault("PATH", f"{criu_dir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}")
    env["_OCI_SYNCPIPE"] = "3"
    env["_OCI_STARTPIPE"] = "4"
    env["XDG_RUNTIME_DIR"] = config.tmp_dir
    env["HOME"] = os.environ.get("HOME", "/root")
    if "NOTIFY_SOCKET" in os.environ:
        env["NOTIFY_SOCKET"] = os.environ["NOTIFY_SOCKET"]
    return env


def listen_fds() -> list[int]:
    """systemd socket-activation fds of this process, passed through to conmon."""
    try:
        if int(os.environ.get("LISTEN_PID", "0")) != os.getpid():
            return []
        return list(range(3, 3 + int(os.environ.get("LISTEN_FDS", "0"))))
    except ValueError:
        return []


@dataclass(frozen=True)
class SpawnResult:
    pid: int
    conmon_pid: int


def high_dup(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _HIGH_FD)


def read_sync(fd: int, deadline: float) -> bytes:
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Timeout("container creation timeout: conmon did not report a pid")
        if not readable(fd, left):
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    return buf


def parse_sync(line: bytes, stderr_tail: str) -> int:
    """Decode conmon's ``{"pid": N}`` (or ``{"data": N}`` on API v1) message."""
    if not line.strip():
        extra = f": {stderr_tail}" if stderr_tail else ""
        raise RuntimeFailure(
            f"error reading container (probably exited) json message{extra}"
        )
    try:
        doc = json.loads(line.split(b"\n", 1)[0])
        pid = int(doc.get("pid", doc.get("data")))
    except (ValueError, TypeError, AttributeError):
        raise RuntimeFailure(f"conmon sent an unreadable sync message: {line[:200]!r}") from None
    if pid <= 0:
        message = str(doc.get("message") or "").strip()
        if message:
            raise classify_start(message, "container create failed")
        raise RuntimeFailure("container create failed")
    return pid


def spawn(
    config: RuntimeConfig, paths: ContainerPaths, opts: ConmonOptions, timeout: float
) -> SpawnResult:
    """Start conmon, let it create the container, and return the container's pid."""
    argv = conmon_args(config, paths, opts)
    sync_r, sync_w = os.pipe()
    start_r, start_w = os.pipe()
    extra = list(opts.extra_fds) + listen_fds()
    env = conmon_env(config, len(extra))
    if listen_fds():
        env["LISTEN_FDS"] = os.environ.get("LISTEN_FDS", "0")
        env["LISTEN_PID"] = "1"
    high = [high_dup(fd) for fd in [sync_w, start_r, *extra]]
    stderr_fd = os.open(paths.conmon_stderr,
                        os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    null_fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    actions: list[tuple[int, ...]] = [
        (os.POSIX_SPAWN_DUP2, null_fd, 0),
        (os.POSIX_SPAWN_DUP2, null_fd, 1),
        (os.POSIX_SPAWN_DUP2, stderr_fd, 2),
    ]
    actions += [(os.POSIX_SPAWN_DUP2, fd, _FIRST_EXTRA_FD + i) for i, fd in enumerate(high)]
    deadline = time.monotonic() + timeout
    try:
        try:
            child = os.posix_spawn(argv[0], argv, env, file_actions=actions, setsid=True)
        except OSError as exc:
            raise RuntimeFailure(f"cannot run conmon at {argv[0]}: {exc.strerror}") from None
        finally:
            for fd in [sync_w, start_r, null_fd, stderr_fd, *high]:
                os.close(fd)
        # The cgroup is set (cgroupfs: runc places the container itself); let conmon go on.
        os.write(start_w, b"\0")
        reap_daemonising(child, deadline)
        line = read_sync(sync_r, deadline)
        pid = parse_sync(line, _tail(paths.conmon_stderr))
        return SpawnResult(pid=pid, conmon_pid=read_pidfile(paths.conmon_pidfile))
    finally:
        os.close(sync_r)
        os.close(start_w)


def reap_daemonising(pid: int, deadline: float) -> None:
    """Reap conmon's first process, which exits once it has daemonised."""
    if not wait_pids_exit([pid], deadline - time.monotonic()):
        raise Timeout("container creation timeout: conmon did not daemonise")
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeFailure(f"conmon exited with status {code} before creating the container")


def read_pidfile(path: str) -> int:
    """The pid in a pid file, or 0 while it is missing or half-written."""
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def _tail(path: str, limit: int = 2000) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()[-limit:]
    except OSError:
        return ""
    lines = [
        ln for ln in data.decode(errors="replace").splitlines()
        if ln.strip() and "oom_score_adj" not in ln
    ]
    return " ".join(" ".join(lines).split())

