"""Exec sessions through conmon, as libpod's ``oci_conmon_exec_linux.go`` runs them.

Each session gets a directory of its own (``exec/<session id>/`` in the container's
directory) that is claimed with ``mkdir`` before anything runs: a second attempt of
the same session finds it and never starts a second process. conmon (``--exec
--exec-process-spec``) runs ``runc exec`` detached from the worker, writes the
session's pid file, its output to a size-capped ``k8s-file`` log, and its exit code
to the session's exit directory. A worker that dies therefore loses nothing: the
next one reads the exit code from the file, or waits for it.

Output is bounded twice: on disk by conmon's ``--log-size-max`` (the log is
truncated when it would grow past ``LOG_SIZE_MAX``), in memory by reading only the
last ``2 * MAX_EXEC_OUTPUT`` bytes of it.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.errors import InvalidArgument, NotFound, RuntimeFailure, Timeout
from engine.runtime import attach as attach_socket
from engine.runtime import conmon
from engine.runtime.config import RuntimeConfig
from engine.runtime.exitfile import read_exit_file
from engine.runtime.runc import classify_start
from engine.runtime.types import MAX_EXEC_OUTPUT, ExecSession
from engine.runtime.waits import pid_alive, readable

log = logging.getLogger("berth.runtime")

LOG_SIZE_MAX = 4 * MAX_EXEC_OUTPUT
"""conmon truncates a session's log when it would grow past this (bytes on disk)."""
SYNC_TIMEOUT = 60.0
EXIT_FILE_GRACE = 5.0
"""After the session's process is gone, how long conmon gets to write its exit file."""


@dataclass(frozen=True)
class SessionPaths:
    dir: str
    container_id: str

    @property
    def process_json(self) -> str:
        return os.path.join(self.dir, "process.json")

    @property
    def pidfile(self) -> str:
        return os.path.join(self.dir, "pid")

    @property
    def conmon_pidfile(self) -> str:
        return os.path.join(self.dir, "conmon.pid")

    @property
    def log(self) -> str:
        return os.path.join(self.dir, "log")

    @property
    def runtime_log(self) -> str:
        return os.path.join(self.dir, "runtime.log")

    @property
    def conmon_stderr(self) -> str:
        return os.path.join(self.dir, "conmon.stderr")

    @property
    def exit_dir(self) -> str:
        return os.path.join(self.dir, "exit")

    @property
    def exit_file(self) -> str:
        # conmon names the exit file after the container (-c), in the session's exit dir.
        return os.path.join(self.exit_dir, self.container_id)


def process_spec(base: dict[str, Any], cmd: list[str], *, env: list[str], cwd: str,
                 user: str, tty: bool, no_new_privileges: bool,
                 cap_add: list[str]) -> dict[str, Any]:
    """The OCI process of a session: the container's process with this command's
    arguments, environment (merged by name), working directory, user and terminal."""
    proc = dict(base)
    proc["args"] = list(cmd)
    merged: dict[str, str] = {}
    for item in [*proc.get("env", []), *env]:
        if "=" not in item:
            raise InvalidArgument(f"invalid environment entry {item!r}: use KEY=VALUE")
        key, _, _value = item.partition("=")
        merged[key] = item
    proc["env"] = list(merged.values())
    if cwd:
        if not os.path.isabs(cwd):
            raise InvalidArgument(f"exec working directory {cwd!r} must be absolute")
        proc["cwd"] = cwd
    if user:
        uid, _, gid = user.partition(":")
        if not uid.isdigit() or (gid and not gid.isdigit()):
            raise InvalidArgument(f"exec user {user!r} must be numeric: uid[:gid]")
        proc["user"] = {"uid": int(uid), "gid": int(gid or 0)}
    proc["terminal"] = tty
    if no_new_privileges:
        proc["noNewPrivileges"] = True
    if cap_add:
        caps = dict(proc.get("capabilities") or {})
        for kind in ("bounding", "effective", "permitted"):
            caps[kind] = sorted({*caps.get(kind, []), *cap_add})
        proc["capabilities"] = caps
    return proc


def conmon_exec_args(config: RuntimeConfig, session: SessionPaths, session_id: str,
                     tty: bool, stdin: bool = False, attach: bool = False) -> list[str]:
    """conmon's command line for one session (pure, like ``conmon.conmon_args``)."""
    args = [config.conmon_path, "--api-version", "1", "-c", session.container_id,
            "-u", session_id, "-n", session_id, "-r", config.runtime_path,
            "-b", session.dir, "-p", session.pidfile, "-l", f"k8s-file:{session.log}",
            "--log-size-max", str(LOG_SIZE_MAX), "--exit-dir", session.exit_dir,
            "--runtime-arg", "--root", "--runtime-arg", config.runc_root,
            "--runtime-arg", "--log", "--runtime-arg", session.runtime_log,
            "--conmon-pidfile", session.conmon_pidfile,
            "--socket-dir-path", config.sockets_dir, "--log-level", "info",
            "--exec", "--exec-process-spec", session.process_json]
    if tty:
        args.append("-t")
    elif stdin:
        args.append("-i")
    if attach:
        args.append("--exec-attach")
    return args


def claim(session: SessionPaths) -> bool:
    """Create the session's directory; False if an earlier attempt already did."""
    os.makedirs(os.path.dirname(session.dir), mode=0o700, exist_ok=True)
    try:
        os.mkdir(session.dir, 0o700)
    except FileExistsError:
        return False
    os.mkdir(session.exit_dir, 0o700)
    return True


def spawn(config: RuntimeConfig, session: SessionPaths, session_id: str,
          proc: dict[str, Any], *, stdin: bool = False,
          attach: Callable[[socket.socket], None] | None = None) -> int:
    """Start the session's conmon and return the session's pid once runc reports it.

    With ``attach``, the session's output is not to be read from its log, which conmon
    truncates at ``LOG_SIZE_MAX`` (a reader that far behind loses output), but from
    its attach socket, where conmon waits for a slow reader: as libpod's exec with
    attach does, conmon is started with ``--exec-attach``, says when its attach
    socket is there (``_OCI_ATTACHPIPE``), and runs the process only after the second
    byte on its start pipe, sent once ``attach`` has the connected socket. So not one
    byte of output is written before a reader is connected."""
    with open(session.process_json, "w") as f:
        json.dump(proc, f)
    argv = conmon_exec_args(config, session, session_id, bool(proc.get("terminal")), stdin,
                            attach is not None)
    sync_r, sync_w = os.pipe()
    env = conmon.conmon_env(config, 0)
    env["_OCI_SYNCPIPE"] = "3"
    env.pop("_OCI_STARTPIPE", None)
    high = conmon.high_dup(sync_w)
    stderr_fd = os.open(session.conmon_stderr,
                        os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    null_fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    actions = [(os.POSIX_SPAWN_DUP2, null_fd, 0), (os.POSIX_SPAWN_DUP2, null_fd, 1),
               (os.POSIX_SPAWN_DUP2, stderr_fd, 2), (os.POSIX_SPAWN_DUP2, high, 3)]
    parent_ends: list[int] = [sync_r]  # closed at the end
    child_ends = [sync_w, high, null_fd, stderr_fd]  # closed once conmon has them
    start_w = attach_r = -1
    if attach is not None:
        start_r, start_w = os.pipe()
        attach_r, attach_w = os.pipe()
        parent_ends += [start_w, attach_r]
        high_start, high_attach = conmon.high_dup(start_r), conmon.high_dup(attach_w)
        child_ends += [start_r, attach_w, high_start, high_attach]
        env["_OCI_STARTPIPE"] = "4"
        env["_OCI_ATTACHPIPE"] = "5"
        actions += [(os.POSIX_SPAWN_DUP2, high_start, 4), (os.POSIX_SPAWN_DUP2, high_attach, 5)]
    deadline = time.monotonic() + SYNC_TIMEOUT
    try:
        try:
            child = os.posix_spawn(argv[0], argv, env, file_actions=actions, setsid=True)
        except OSError as exc:
            raise RuntimeFailure(f"cannot run conmon at {argv[0]}: {exc.strerror}") from None
        finally:
            for fd in child_ends:
                os.close(fd)
        if attach is not None:
            _start(start_w)  # conmon waits for a first byte before it forks
        conmon.reap_daemonising(child, deadline)
        if attach is not None:
            conmon.read_sync(attach_r, deadline)  # its attach socket is there
            try:
                # in the session's bundle: conmon's link to it in the socket
                # directory is one byte short when the full name would be 107 bytes
                attach(attach_socket.connect(session.dir))
            except (NotFound, RuntimeFailure) as exc:  # the reader follows the log instead
                log.warning("exec session %s: no attach socket (%s)", session_id, exc)
            _start(start_w)  # the reader is there: run the process
        line = conmon.read_sync(sync_r, deadline)
    finally:
        for fd in parent_ends:
            os.close(fd)
    return _session_pid(line, session)


def _start(fd: int) -> None:
    """A byte on conmon's start pipe; conmon gone before it read it is a runtime
    failure of the exec (one sentence), not a broken pipe escaping as internal."""
    try:
        os.write(fd, b"0")
    except OSError as exc:
        raise RuntimeFailure(f"conmon ended before the exec session started: "
                             f"{exc.strerror}") from None


def _session_pid(line: bytes, session: SessionPaths) -> int:
    try:
        doc = json.loads(line.split(b"\n", 1)[0])
        pid = int(doc.get("pid", doc.get("data")))
    except (ValueError, TypeError, AttributeError):
        raise RuntimeFailure(f"conmon sent an unreadable exec sync message: {line[:200]!r}") \
            from None
    if pid <= 0:
        message = str(doc.get("message") or "") or read_tail(session.runtime_log)
        raise classify_start(message or "exec failed",
                       f"cannot exec in container {session.container_id}")
    return pid


def on_disk(session: SessionPaths) -> ExecSession:
    claimed = os.path.isdir(session.dir)
    found = read_exit_file(session.exit_file) if claimed else None
    conmon_pid = conmon.read_pidfile(session.conmon_pidfile) if claimed else 0
    return ExecSession(claimed, conmon.read_pidfile(session.pidfile) if claimed else 0,
                         None if found is None else found.exit_code,
                         conmon_pid > 0 and _is_conmon(conmon_pid))


def wait(session: SessionPaths, timeout: float | None) -> int:
    """The session's exit code, waiting for it; -1 if conmon died without one."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        found = read_exit_file(session.exit_file)
        if found is not None:
            return found.exit_code
        pid = conmon.read_pidfile(session.pidfile)
        if pid and pid_alive(pid) and not _zombie(pid):
            _wait_pid(pid, deadline)
            continue
        conmon_pid = conmon.read_pidfile(session.conmon_pidfile)
        if not (conmon_pid and _is_conmon(conmon_pid)):
            found = read_exit_file(session.exit_file)
            return found.exit_code if found is not None else -1
        # The process is gone; conmon is writing the file (it lingers a moment after).
        grace = time.monotonic() + EXIT_FILE_GRACE
        while read_exit_file(session.exit_file) is None and time.monotonic() < grace:
            if not _is_conmon(conmon_pid):
                break
            time.sleep(0.005)
        if read_exit_file(session.exit_file) is None and _is_conmon(conmon_pid):
            _wait_pid(conmon_pid, deadline)


def _wait_pid(pid: int, deadline: float | None) -> None:
    try:
        fd = os.pidfd_open(pid)
    except OSError as exc:
        if exc.errno == errno.ESRCH:
            return
        raise
    try:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise Timeout("the exec session did not finish in time")
        if not readable(fd, left):
            raise Timeout("the exec session did not finish in time")
    finally:
        os.close(fd)


def output_tail(session: SessionPaths, limit: int = MAX_EXEC_OUTPUT) -> bytes:
    """The last ``limit`` bytes of the session's output, from its k8s-file log (read
    from the end: never more than twice the limit in memory)."""
    try:
        with open(session.log, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(0, size - 2 * limit - 4096)
            f.seek(start)
            data = f.read()
    except FileNotFoundError:
        return b""
    lines = data.split(b"\n")
    if start > 0:
        lines = lines[1:]  # the first line may be cut
    out = bytearray()
    for line in lines:
        parts = line.split(b" ", 3)
        if len(parts) < 3:
            continue
        content = parts[3] if len(parts) == 4 else b""
        out += content
        if parts[2] == b"F":
            out += b"\n"
    return bytes(out[-limit:])


def _is_conmon(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv0 = f.read().split(b"\0", 1)[0]
    except OSError:
        return False
    return b"conmon" in os.path.basename(argv0)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def read_tail(path: str) -> str:
    """The last 4,000 characters of a runtime log (empty if it cannot be read)."""
    try:
        with open(path, errors="replace") as f:
            return f.read()[-4000:]
    except OSError:
        return ""
