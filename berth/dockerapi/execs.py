"""Docker's exec: ``POST /containers/{id}/exec`` keeps a configuration (in this
server's memory, bounded), ``POST /exec/{id}/start`` runs it as a recorded bus
command (``container.exec``) and, unless detached, takes the connection over: the
process's output goes back as Docker's multiplexed frames (raw with a terminal) as it
comes, and the client's bytes go to its stdin when it asked for one.

The output and input travel on the worker's stream socket (bus.stream), as
``berth exec`` does: the command names the stream session, and the session's credit
bounds what is in flight both ways. Without a stream socket (a tcp bus whose worker
has none) the output comes with the command's reply, when the process has ended.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import zmq

from berth.cli.attach import Where
from berth.dockerapi import shapes
from berth.dockerapi.server import HttpError, frames
from bus.client import Client
from bus.stream import MAX_CHUNK, StreamSession
from engine.errors import BerthError
from engine.ids import new_uuid

log = logging.getLogger("berth.docker-api")

MAX_EXECS: Final = 1024
"""Exec configurations kept; the oldest ended ones go first past this."""
_READY_TIMEOUT: Final = 10.0


@dataclass
class ExecConfig:
    id: str
    container: str
    argv: list[str]
    env: list[str]
    user: str
    workdir: str
    tty: bool
    stdin: bool
    stdout: bool
    stderr: bool
    running: bool = False
    started: bool = False
    exit_code: int | None = None
    done: threading.Event = field(default_factory=threading.Event)
    raw: bool | None = None
    """The start's ``Tty``: Docker frames the output by what the start asked, not by
    the exec's terminal (docker-py starts a terminal exec with Tty false and reads
    frames). None: as the exec's terminal."""

    @property
    def unframed(self) -> bool:
        return self.tty if self.raw is None else self.raw

    def inspect(self) -> dict[str, Any]:
        return {
            "ID": self.id, "Running": self.running, "ExitCode": self.exit_code,
            "ProcessConfig": {"tty": self.tty, "entrypoint": self.argv[0],
                              "arguments": self.argv[1:], "privileged": False,
                              "user": self.user},
            "OpenStdin": self.stdin, "OpenStderr": self.stderr, "OpenStdout": self.stdout,
            "CanRemove": False, "ContainerID": self.container, "DetachKeys": "", "Pid": 0,
        }


def exec_config(container: str, body: object) -> ExecConfig:
    """A create body -> a configuration; 400 naming the first bad field."""
    config = shapes.mapping(body if body is not None else {}, "body")
    known = frozenset({"Cmd", "Env", "User", "WorkingDir", "Tty", "AttachStdin",
                       "AttachStdout", "AttachStderr", "DetachKeys", "Privileged",
                       "ConsoleSize", "Container"})  # Container: the path names it
    for key, value in config.items():
        if key not in known and not shapes.empty(value):
            raise HttpError(400, f"exec: {key} is not supported by berth")
    if config.get("Privileged"):
        raise HttpError(400, "exec: Privileged is not supported by berth")
    if config.get("Cmd") is None:
        raise HttpError(400, "No exec command specified")
    argv = shapes.str_or_strings(config["Cmd"], "Cmd")
    if not argv or not argv[0]:
        raise HttpError(400, "No exec command specified")
    env = shapes.strings(config.get("Env") or [], "Env")
    for item in env:
        if "=" not in item or item.startswith("="):
            raise HttpError(400, f"invalid Env entry {item!r}: use KEY=VALUE")

    def flag(key: str) -> bool:
        value = config.get(key)
        return False if value is None else shapes.boolean(value, key)

    return ExecConfig(
        id=uuid.uuid4().hex + uuid.uuid4().hex, container=container, argv=argv, env=env,
        user=shapes.text(config.get("User") or "", "User"),
        workdir=shapes.text(config.get("WorkingDir") or "", "WorkingDir"),
        tty=flag("Tty"), stdin=flag("AttachStdin"), stdout=flag("AttachStdout"),
        stderr=flag("AttachStderr"))


class Execs:
    """The exec configurations of this server, bounded."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[str, ExecConfig] = OrderedDict()

    def add(self, config: ExecConfig) -> None:
        with self._lock:
            self._items[config.id] = config
            while len(self._items) > MAX_EXECS:
                oldest = next((k for k, v in self._items.items() if not v.running), None)
                if oldest is None:
                    raise HttpError(503, f"too many exec sessions (at most {MAX_EXECS})")
                del self._items[oldest]

    def get(self, exec_id: str) -> ExecConfig:
        with self._lock:
            found = self._items.get(exec_id)
        if found is None:
            raise HttpError(404, f"No such exec instance: {exec_id}")
        return found

    def claim(self, config: ExecConfig) -> None:
        """An exec starts once: Docker answers 409 to a second start."""
        with self._lock:
            if config.started:
                raise HttpError(409, f"exec {config.id} has already been started")
            config.started = config.running = True


def _options(config: ExecConfig) -> dict[str, Any]:
    return {"env": config.env, "cwd": config.workdir, "user": config.user, "tty": config.tty}


def run_detached(client: Client, config: ExecConfig) -> None:
    """``Detach: true``: the command runs on its own thread and client; its end is
    recorded by the worker whoever waits for it."""

    def run() -> None:
        try:
            reply = client.exec(config.container, config.argv, **_options(config))
            code = reply.result.get("exit_code")
            config.exit_code = code if isinstance(code, int) else None
        except BerthError as e:
            log.warning("detached exec %s failed: %s", config.id[:12], e)
            config.exit_code = 126
        finally:
            config.running = False
            config.done.set()
            client.close()

    threading.Thread(target=run, daemon=True, name="docker-exec").start()


def pump(sock: socket.socket, leftover: bytes, client: Client, config: ExecConfig,
         where: Where | None) -> None:
    """The hijacked connection of an attached exec, until the process ends."""
    try:
        if where is None:
            _unstreamed(sock, client, config)
        else:
            _streamed(sock, leftover, client, config, where)
    except OSError as e:
        log.debug("exec %s: the client went away: %s", config.id[:12], e)
    except BerthError as e:
        with contextlib.suppress(OSError):
            sock.sendall(_out(config, 2, f"berth: {e}\n".encode()))
        if config.exit_code is None:
            config.exit_code = 126
    finally:
        config.running = False
        config.done.set()


def _out(config: ExecConfig, fd: int, data: bytes) -> bytes:
    if config.unframed:
        return data
    return b"".join(frames([(fd, data)]))


def _unstreamed(sock: socket.socket, client: Client, config: ExecConfig) -> None:
    reply = client.exec(config.container, config.argv, **_options(config))
    code = reply.result.get("exit_code")
    config.exit_code = code if isinstance(code, int) else None
    output = str(reply.result.get("output") or "").encode()
    if output:
        sock.sendall(_out(config, 1, output))


def _streamed(sock: socket.socket, leftover: bytes, client: Client, config: ExecConfig,
              where: Where) -> None:
    sid = new_uuid()
    outcome: dict[str, Any] = {}
    own = Client(client.endpoint, events_endpoint=client.events_endpoint,
                 actor=client.actor, timeout=client.timeout, curve=client.curve)

    def command() -> None:
        try:
            outcome["reply"] = own.exec(config.container, config.argv, session_id=sid,
                                        streamed=True, stdin=config.stdin,
                                        **_options(config))
        except BerthError as e:
            outcome["error"] = e
        finally:
            own.close()

    thread = threading.Thread(target=command, daemon=True, name="docker-exec")
    pipes = Pipes(tty=config.unframed, stdin=config.stdin, stdout=config.stdout,
                  stderr=config.stderr)
    try:
        with where.session() as session:
            session.open("exec", config.container, session=sid, stdin=config.stdin,
                         tty=config.tty)
            thread.start()
            ended, code = pump_session(sock, leftover, session, pipes,
                                       lambda: outcome.get("error"))
            if ended:
                config.exit_code = code
    finally:
        if thread.is_alive() or thread.ident is not None:
            thread.join(5)
        reply = outcome.get("reply")
        if config.exit_code is None and reply is not None:
            found = reply.result.get("exit_code")
            config.exit_code = found if isinstance(found, int) else None


@dataclass(frozen=True)
class Pipes:
    """Which of a process's streams a hijacked client takes, and how."""

    tty: bool
    stdin: bool
    stdout: bool = True
    stderr: bool = True
    detach_keys: bytes = b""


def _frame(pipes: Pipes, fd: int, data: bytes) -> bytes:
    return data if pipes.tty else b"".join(frames([(fd, data)]))


def pump_session(sock: socket.socket, leftover: bytes, session: StreamSession, pipes: Pipes,
                 failed: Callable[[], BaseException | None]) -> tuple[bool, int | None]:
    """Move bytes between a hijacked client and a stream session until the process
    ends (True, its code) or the client detaches or leaves (False, None). The client
    is read only while the session has stdin credit for what it sent, and the
    session's output only as fast as the client takes it, so neither end can fill
    this server."""
    pending = bytearray(leftover)
    typed = b""
    stdin_open = pipes.stdin
    poller = zmq.Poller()
    poller.register(session.sock, zmq.POLLIN)
    watching = False
    sock.setblocking(False)
    try:
        while True:
            error = failed()
            if error is not None:
                raise error
            if stdin_open and pending and session.stdin_credit > 0:
                piece = bytes(pending[:MAX_CHUNK])
                del pending[:MAX_CHUNK]
                session.send_stdin(piece)
            want = stdin_open and not pending
            if want != watching:  # read the client only while its bytes can go on
                if want:
                    poller.register(sock.fileno(), zmq.POLLIN)
                else:
                    poller.unregister(sock.fileno())
                watching = want
            ready = dict(poller.poll(500))
            if watching and sock.fileno() in ready:
                data = _read(sock)
                if data == b"":
                    stdin_open = False
                    session.send_eof()
                elif data:
                    if pipes.detach_keys:
                        data, typed, detached = _watch(data, typed, pipes.detach_keys)
                        if detached:
                            return False, None
                    pending += data
            while True:  # the stream's descriptor is edge-triggered: drain it
                frame = session.recv(0)
                if frame is None:
                    break
                if frame.op == "out":
                    fd = 2 if frame.get("fd") == 2 else 1
                    if pipes.tty or (pipes.stdout if fd == 1 else pipes.stderr):
                        _send_all(sock, _frame(pipes, fd, bytes(frame.get("data", b""))))
                elif frame.op == "exit":
                    code = frame.get("code")
                    return True, code if isinstance(code, int) else None
    finally:
        sock.setblocking(True)


def _watch(data: bytes, typed: bytes, keys: bytes) -> tuple[bytes, bytes, bool]:
    """Hold back bytes that begin the detach sequence until it is complete (detached)
    or broken (then they go on): (bytes to send, bytes held, detached)."""
    out = bytearray()
    for byte in data:
        typed += bytes([byte])
        if keys.startswith(typed):
            if typed == keys:
                return bytes(out), b"", True
            continue
        out += typed
        typed = b""
    return bytes(out), typed, False


def _read(sock: socket.socket) -> bytes | None:
    """The client's next bytes (b"": it closed its end; None: nothing after all)."""
    try:
        return sock.recv(MAX_CHUNK)
    except BlockingIOError:
        return None


def _send_all(sock: socket.socket, data: bytes) -> None:
    """Write on a non-blocking socket, waiting (30 s at most per piece) while the
    client's buffer is full: a client that stops reading holds back the process
    (through the session's credit), never the server's memory."""
    import select

    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
            view = view[sent:]
        except BlockingIOError:
            _, writable, _ = select.select([], [sock], [], 30.0)
            if not writable:
                raise TimeoutError("the client stopped reading the exec's output") from None
