"""Attached commands: ``run`` (attached), ``start -a``, ``attach``, ``exec`` and
``logs``, streaming stdio over the worker's stream socket (``bus.stream``).

Output is printed as the worker pushes it, stdout to stdout and stderr to stderr;
this process takes it only as fast as it can write it (the credit it grants is
topped up after printing). With ``-i`` stdin is forwarded and its end closes the
process's stdin; with ``-t`` this terminal is put in raw mode, its size is sent at
the start and on SIGWINCH, and the detach keys (``ctrl-p,ctrl-q``) leave the
container running (only then: without a terminal stdin is data, passed byte-exact).
With ``--sig-proxy`` (the default) the signals a user sends to this process go to the
container as ``kill`` commands instead of ending the client.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import queue
import select
import signal
import struct
import sys
import termios
import threading
import tty
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import zmq

from berth.cli import format as fmt
from bus.client import Client
from bus.endpoints import ipc_path
from bus.keys import ClientKeys
from bus.protocol import Reply
from bus.stream import Frame, StreamSession, stream_endpoint
from engine.errors import BerthError, InvalidArgument, InvalidState, NotFound, Unavailable
from engine.ids import new_uuid

if TYPE_CHECKING:
    from berth.cli import AddCommand

COMMANDS = ("attach",)

DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"
PROXIED = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1,
           signal.SIGUSR2, signal.SIGALRM)
"""The signals ``--sig-proxy`` forwards (podman forwards all it can catch; these are the
ones a user sends)."""
_READY_TIMEOUT = 10.0


class Detached(Exception):
    """The user typed the detach keys."""


class NoStream(InvalidState):
    """The node has no stream socket, and the command needs one (-i, -t, attach, the
    logs filters): said before anything starts, and not an engine that is down."""


def parse_detach_keys(text: str) -> bytes:
    """podman's ``--detach-keys``: comma-separated ``ctrl-X`` or single characters."""
    if text == "":
        return b""
    out = bytearray()
    for key in text.split(","):
        key = key.strip()
        if key.startswith("ctrl-") and len(key) == 6:
            ch = key[5]
            code = {"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}.get(ch)
            if code is None and ch.isalpha():
                code = ord(ch.lower()) - ord("a") + 1
            if code is None:
                raise InvalidArgument(f"invalid detach key {key!r}")
            out.append(code)
        elif len(key) == 1:
            out.append(ord(key))
        else:
            raise InvalidArgument(f"invalid detach keys {text!r}: use ctrl-X or single "
                                  "characters, separated by commas")
    return bytes(out)


def detach_keys_for(text: str, *, stdin: bool, use_tty: bool) -> bytes:
    """The detach keys a session watches for: only on a terminal, as podman and Docker
    do. Without ``-t`` stdin is data (a pipe, a file, random bytes) and must pass
    byte-exact: ctrl-p ctrl-q (0x10 0x11) in it is not the user asking to leave."""
    keys = parse_detach_keys(text)  # a bad option is refused with or without a terminal
    return keys if stdin and use_tty else b""


def parse_log_time(text: str) -> str:
    """--since/--until: a unix timestamp, RFC 3339 or a duration ago (``10m``)."""
    try:
        return datetime.fromtimestamp(float(text), UTC).isoformat()
    except ValueError:
        return fmt.parse_time(text)


@dataclass(frozen=True)
class Where:
    """A node's stream socket: its endpoint, and on tcp the keys of the session
    (this client's pair, the worker's public key as the worker told it)."""

    endpoint: str
    curve: ClientKeys | None = None

    def session(self) -> StreamSession:
        return StreamSession(self.endpoint, curve=self.curve)


NO_STREAM = ("over tcp the worker needs its CURVE key and the authorised-publishers "
             "directory; its log says why")


def endpoint_for(client: Client, node: str) -> Where | None:
    """The stream socket of ``node``: beside an ipc bus, or on a tcp bus where its
    worker says (``query.stream``, one round trip); None if it has none."""
    endpoint = stream_endpoint(client.endpoint, node)
    if endpoint is not None:
        return Where(endpoint) if os.path.exists(endpoint[len("ipc://"):]) else None
    if client.curve is None:
        return None
    from engine.command_types import STREAM

    try:
        found = client.send(STREAM, node=node).result
    except (NotFound, InvalidArgument):  # none (a worker without keys), or an older worker
        return None
    key = found.get("public_key")
    if not isinstance(found.get("endpoint"), str) or not isinstance(key, str):
        return None
    return Where(str(found["endpoint"]), ClientKeys(client.curve.own, key.encode()))


def located(client: Client, ref: str) -> tuple[Where | None, str, str | None]:
    """(stream socket, container reference, node) for ``ref``. With one worker's
    stream socket next to the bus (``berth up``), that worker resolves the reference
    itself and no round trip is spent on it; else the bus resolves it first."""
    path = ipc_path(client.endpoint)
    if path is not None:
        found = list(path.parent.glob("stream-*.sock"))
        if len(found) == 1:
            return Where(f"ipc://{found[0]}"), ref, None
    resolved = client.resolve(ref)
    return endpoint_for(client, resolved.node), resolved.id, resolved.node


def terminal_size(fd: int) -> tuple[int, int]:
    try:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
        return rows, cols
    except OSError:
        return 0, 0


@contextlib.contextmanager
def raw_terminal(fd: int, enable: bool) -> Iterator[None]:
    """This terminal in raw mode while inside (keys go to the container as typed)."""
    if not enable or not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSANOW)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@dataclass
class SignalProxy:
    """Catches signals while a session runs and reads them from a wake pipe, so the
    main loop forwards them (``kill``) between two frames, never inside one."""

    signals: tuple[int, ...]
    read_fd: int = -1
    _write_fd: int = -1
    _old: dict[int, Any] = field(default_factory=dict)
    _old_wakeup: int = -1

    def __enter__(self) -> SignalProxy:
        self.read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        for sig in self.signals:
            self._old[sig] = signal.signal(sig, lambda *_: None)
        self._old_wakeup = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.set_wakeup_fd(self._old_wakeup)
        for sig, old in self._old.items():
            signal.signal(sig, old)
        os.close(self.read_fd)
        os.close(self._write_fd)

    def take(self) -> list[int]:
        try:
            return list(os.read(self.read_fd, 256))
        except BlockingIOError:
            return []


@dataclass
class Printer:
    """Writes output frames: raw bytes to fd 1 or 2; log records with their
    timestamps (``-t``) at the start of each line."""

    timestamps: bool = False
    prefix: bytes = b""
    """Put before each line (``logs`` of several containers: which one said it)."""
    lock: threading.Lock | None = None
    """Shared by printers that write at once (several followed logs), so that a
    frame's lines come out whole, never interleaved inside a line."""
    _at_start: dict[int, bool] = field(default_factory=lambda: {1: True, 2: True})

    def frame(self, frame: Frame) -> None:
        if frame.op == "out":
            self._write(2 if frame.get("fd") == 2 else 1, bytes(frame.get("data", b"")))
        elif frame.op == "lines":
            chunks: dict[int, bytearray] = {1: bytearray(), 2: bytearray()}
            for when, fd, partial, data in frame.get("lines", []):
                fd = 2 if fd == 2 else 1
                out = chunks[fd]
                if self._at_start[fd]:
                    out += self.prefix
                    if self.timestamps:
                        out += f"{when} ".encode()
                out += bytes(data)
                if not partial:
                    out += b"\n"
                self._at_start[fd] = not partial
            for fd, out in chunks.items():
                if out:
                    self._write(fd, bytes(out))

    def _write(self, fd: int, data: bytes) -> None:
        if self.lock is None:
            _write_all(fd, data)
            return
        with self.lock:
            _write_all(fd, data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:  # a non-blocking stdout that is full: wait for room
            select.select([], [fd], [], 1.0)
            continue
        view = view[n:]


@dataclass
class Pump:
    """The client's loop: frames in, stdin out, signals and resizes forwarded."""

    session: StreamSession
    printer: Printer = field(default_factory=Printer)
    stdin: bool = False
    tty: bool = False
    detach_keys: bytes = b""
    proxy: SignalProxy | None = None
    kill: Any = None
    stop_fd: int = -1
    """A descriptor that becomes readable when the exec command has its reply."""
    stop_if: Any = None
    """Called then: True ends the loop at once (the command failed, no output follows)."""
    _typed: bytes = b""

    def run(self) -> int | None:
        """Until the session ends: the exit code (None: unknown); raises Detached."""
        poller = zmq.Poller()
        poller.register(self.session.sock, zmq.POLLIN)
        reading = self.stdin
        if self.proxy is not None:
            poller.register(self.proxy.read_fd, zmq.POLLIN)
        if self.stop_fd >= 0:
            poller.register(self.stop_fd, zmq.POLLIN)
        stdin_registered = False
        while True:
            want_stdin = reading and self.session.stdin_credit > 0
            if want_stdin != stdin_registered:
                if want_stdin:
                    poller.register(0, zmq.POLLIN)
                else:
                    poller.unregister(0)
                stdin_registered = want_stdin
            ready = dict(poller.poll(1000))
            if self.session.sock in ready or not ready:
                while (frame := self.session.recv(0)) is not None:
                    if frame.op == "exit":
                        code = frame.get("code")
                        return int(code) if code is not None else None
                    self.printer.frame(frame)
            if self.proxy is not None and self.proxy.read_fd in ready:
                self._signals()
            if stdin_registered and 0 in ready:
                reading = self._stdin()
            if self.stop_fd >= 0 and self.stop_fd in ready:
                poller.unregister(self.stop_fd)
                self.stop_fd = -1
                if self.stop_if is not None and self.stop_if():
                    return None

    def _signals(self) -> None:
        if self.proxy is None:
            return
        for sig in self.proxy.take():
            if sig == signal.SIGWINCH:
                h, w = terminal_size(0)
                if h and w:
                    self.session.resize(h, w)
            elif self.kill is not None:
                with contextlib.suppress(BerthError):
                    self.kill(sig)

    def _stdin(self) -> bool:
        """Forward what stdin has; False once it has ended."""
        try:
            data = os.read(0, 32 * 1024)
        except BlockingIOError:
            return True
        if not data:
            self.session.send_eof()
            return False
        if self.detach_keys:
            data = self._watch_detach(data)
        if data:
            self.session.send_stdin(data)
        return True

    def _watch_detach(self, data: bytes) -> bytes:
        """Keys that begin the detach sequence are held back until it is complete (then
        Detached) or broken (then they are sent after all)."""
        keys = self.detach_keys
        out = bytearray()
        for byte in data:
            self._typed += bytes([byte])
            if keys.startswith(self._typed):
                if self._typed == keys:
                    raise Detached
                continue
            out += self._typed
            self._typed = b""
        return bytes(out)


def _open(session: StreamSession, kind: str, cid: str, **options: Any) -> Frame:
    session.open(kind, cid, **options)
    frame = session.recv(_READY_TIMEOUT)
    if frame is None:
        raise Unavailable(f"the worker's stream socket at {session.endpoint} did not answer "
                          f"within {_READY_TIMEOUT:g} s")
    if frame.op == "exit":
        return frame
    return frame


def _window(use_tty: bool) -> tuple[int, int]:
    """This terminal's (height, width) for a session with a terminal; else (0, 0)."""
    return terminal_size(0) if use_tty else (0, 0)


def attach_session(client: Client, cid: str, node: str, *, stdin: bool, use_tty: bool,
                   detach_keys: str, sig_proxy: bool, before: Any = None) -> int | None:
    """Attach to a container (``before``: called once attached, e.g. to start it), pump
    until it exits; its exit code, or raises Detached."""
    where = endpoint_for(client, node)
    if where is None:
        if stdin or use_tty:
            raise NoStream(f"no stream socket for node {node}: -i, -t and attach need one "
                           f"({NO_STREAM})")
        if before is not None:
            before()
        return follow_polled(client, cid, node)
    keys = detach_keys_for(detach_keys, stdin=stdin, use_tty=use_tty)
    signals: tuple[int, ...] = PROXIED if sig_proxy else ()
    if use_tty:
        signals = (*signals, signal.SIGWINCH)
    with where.session() as session:
        h, w = _window(use_tty)
        first = _open(session, "attach", cid, stdin=stdin, tty=use_tty, height=h, width=w)
        if first.op == "exit":
            return _code(first)
        if before is not None:
            before()
        proxy = SignalProxy(signals) if signals else None
        with contextlib.ExitStack() as stack:
            if proxy is not None:
                stack.enter_context(proxy)
            stack.enter_context(raw_terminal(0, use_tty and stdin))
            return Pump(session, stdin=stdin, tty=use_tty, detach_keys=keys, proxy=proxy,
                        kill=lambda sig: client.kill(cid, sig, node=node)).run()


def follow_polled(client: Client, cid: str, node: str) -> int | None:
    """Without a stream socket (a tcp bus): the container's log read through the bus
    until it has exited; its exit code."""
    offset = 0
    while True:
        chunk = client.logs(cid, node=node, offset=offset, wait_ms=1000)
        lines = chunk.get("lines", [])
        fmt.write_log_lines(lines)
        offset = int(chunk["offset"])
        if chunk["state"] in ("exited", "removed") and not lines:
            code = chunk.get("exit_code")
            return int(code) if code is not None else None


def _logs_polled(client: Client, cid: str, node: str, follow: bool) -> None:
    offset = 0
    while True:
        chunk = client.logs(cid, node=node, offset=offset, wait_ms=1000 if follow else 0)
        fmt.write_log_lines(chunk.get("lines", []))
        new = int(chunk["offset"])
        if new == offset and (not follow or chunk["state"] in ("exited", "removed")):
            return
        offset = new


def _code(frame: Frame) -> int | None:
    code = frame.get("code")
    return int(code) if code is not None else None


def exit_status(code: int | None) -> int:
    return code if code is not None and code >= 0 else 125


# -- run / start / attach ------------------------------------------------------------


def run_attached(args: argparse.Namespace, client: Client, spec: dict[str, Any]) -> int:
    """``berth run`` without ``-d``: create, attach, start, stream until the exit;
    ``--rm`` removes it afterwards (here, as podman does: the worker removing it would
    race this client for the last of its output)."""
    interactive = bool(getattr(args, "interactive", False))
    keys = getattr(args, "detach_keys", DEFAULT_DETACH_KEYS)
    parse_detach_keys(keys)  # a bad option is refused before anything is created
    spec["auto_remove"] = False
    if interactive:
        spec["stdin"] = True
    if args.rm:
        where = _local_stream(client, args.node)
        if where is not None:
            return run_removed(args, client, spec, where)
    reply = client.create(name=args.name, node=args.node, **spec)
    cid, node = str(reply.result["id"]), str(reply.result["node"])
    on_created = getattr(args, "on_created", None)
    if on_created is not None:  # run --cidfile: the id is written before it runs
        on_created(cid)
    try:
        code = attach_session(
            client, cid, node, stdin=interactive, use_tty=bool(args.tty),
            detach_keys=keys,
            sig_proxy=bool(getattr(args, "sig_proxy", True)),
            before=lambda: client.start(cid, node=node))
    except Detached:
        print(cid)
        return 0
    except NoStream:  # refused before the start: nothing of it is wanted
        with contextlib.suppress(BerthError):
            client.remove(cid, force=True, node=node)
        raise
    except Unavailable as exc:
        if args.rm:
            raise Unavailable(f"{exc}; container {cid[:12]} keeps running and was not "
                              f"removed: remove it with 'berth rm -f {cid[:12]}' once the "
                              "engine is back") from None
        raise
    except BaseException:
        if args.rm:
            with contextlib.suppress(BerthError):
                client.remove(cid, force=True, node=node)
        raise
    if code is None:  # the worker could not read conmon's exit file: the log has it
        code = int(client.wait(cid, node=node).result["exit_code"])
    if args.rm:
        client.remove(cid, force=True, node=node)
    return exit_status(code)


def _local_stream(client: Client, node: str | None) -> Where | None:
    """The stream socket a ``container.run`` can use without a round trip first: the
    one beside an ipc bus (of ``node``, or the only one there is); None on tcp, where
    finding it costs a ``query.stream`` and ``run --rm`` keeps its four commands."""
    path = ipc_path(client.endpoint)
    if path is None:
        return None
    if node is not None:
        endpoint = stream_endpoint(client.endpoint, node)
        if endpoint is None or not os.path.exists(endpoint[len("ipc://"):]):
            return None
        return Where(endpoint)
    found = list(path.parent.glob("stream-*.sock"))
    return Where(f"ipc://{found[0]}") if len(found) == 1 else None


@dataclass
class _RunPrinter(Printer):
    """A run session's printer that also notes the container its ``ready`` names (the
    run created it: signals proxied before then have nothing to go to)."""

    container: str = ""

    def frame(self, frame: Frame) -> None:
        if frame.op == "ready":
            self.container = str(frame.get("container", ""))
        else:
            super().frame(frame)


def run_removed(args: argparse.Namespace, client: Client, spec: dict[str, Any],
                where: Where) -> int:
    """``berth run --rm`` attached, in one command on the bus (``container.run``): the
    worker creates, starts, waits and removes, and streams the stdio to the session
    opened here first under the same session id. The exit code is the reply's: it
    comes once the container has been removed, as podman's ``run --rm`` returns."""
    interactive = bool(getattr(args, "interactive", False))
    use_tty = bool(args.tty)
    keys = detach_keys_for(getattr(args, "detach_keys", DEFAULT_DETACH_KEYS),
                           stdin=interactive, use_tty=use_tty)
    sid = new_uuid()
    outcome: dict[str, Any] = {}
    stop_r, stop_w = os.pipe2(os.O_CLOEXEC)

    def command() -> None:
        with Client(client.endpoint, events_endpoint=client.events_endpoint,
                    actor=client.actor, timeout=client.timeout, curve=client.curve) as own:
            try:
                outcome["reply"] = own.run(name=args.name, node=args.node, session_id=sid,
                                           **spec)
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                outcome["error"] = exc
            finally:
                with contextlib.suppress(OSError):  # the main thread may have finished
                    os.write(stop_w, b"\0")

    printer = _RunPrinter()

    def kill(sig: int) -> None:
        if printer.container:
            client.kill(printer.container, sig)

    thread = threading.Thread(target=command, name="berth-run", daemon=True)
    signals: tuple[int, ...] = PROXIED if getattr(args, "sig_proxy", True) else ()
    if use_tty:
        signals = (*signals, signal.SIGWINCH)
    try:
        streamed = _run_session(where, sid, args, thread, printer, outcome, stop_r,
                                keys=keys, signals=signals, kill=kill)
        if streamed == "detached":
            return 0
        thread.join()
    except BaseException:
        # This client is going away (a closed stdout, ^C without --sig-proxy, a crash
        # here): --rm still holds, as on the plain path; the run's own remove step
        # then finds it gone.
        if printer.container:
            with contextlib.suppress(BerthError):
                client.remove(printer.container, force=True)
        raise
    finally:
        os.close(stop_r)
    error = outcome.get("error")
    if isinstance(error, Unavailable) and printer.container:
        cid = printer.container
        raise Unavailable(f"{error}; container {cid[:12]} may keep running: if it is still "
                          f"there once the engine is back, remove it with 'berth rm -f "
                          f"{cid[:12]}'") from None
    if error is not None:
        raise error
    answer: Reply | None = outcome.get("reply")
    if answer is None:
        raise Unavailable("the run ended without a reply")
    code = answer.result.get("exit_code")
    return exit_status(int(code) if code is not None
                       else streamed if isinstance(streamed, int) else None)


def _run_session(where: Where, sid: str, args: argparse.Namespace, thread: threading.Thread,
                 printer: _RunPrinter, outcome: dict[str, Any], stop_r: int, *,
                 keys: bytes, signals: tuple[int, ...], kill: Any) -> int | str | None:
    """The stream session of a run until its exit frame: the code it gave (None:
    unknown, or the stream was lost), or "detached"."""
    interactive = bool(getattr(args, "interactive", False))
    use_tty = bool(args.tty)
    with where.session() as session:
        h, w = _window(use_tty)
        session.open("run", "", session=sid, stdin=interactive, tty=use_tty,
                     height=h, width=w)
        thread.start()
        proxy = SignalProxy(signals) if signals else None
        with contextlib.ExitStack() as stack:
            if proxy is not None:
                stack.enter_context(proxy)
            stack.enter_context(raw_terminal(0, use_tty and interactive))
            pump = Pump(session, printer=printer, stdin=interactive, tty=use_tty,
                        detach_keys=keys, proxy=proxy, kill=kill, stop_fd=stop_r,
                        stop_if=lambda: "error" in outcome)
            try:
                return pump.run()
            except Detached:  # the worker still removes it once it exits
                print(printer.container or sid)
                return "detached"
            except BerthError as exc:
                if "error" in outcome:
                    raise outcome["error"] from None
                # The worker went away mid-stream (killed, restarted): the run
                # itself goes on (its command is resent, its steps carried on),
                # only the rest of the output is lost to this terminal.
                sys.stderr.write(f"berth: the output stream was lost ({exc.message}); "
                                 "waiting for the run to end\n")
                return None


def start_attached(client: Client, cid: str, node: str, *, stdin: bool = False) -> int:
    """``berth start -a``: attach first, so none of the output is missed."""
    try:
        code = attach_session(client, cid, node, stdin=stdin, use_tty=False,
                              detach_keys=DEFAULT_DETACH_KEYS, sig_proxy=True,
                              before=lambda: client.start(cid, node=node))
    except Detached:
        return 0
    if code is None:
        code = int(client.wait(cid, node=node).result["exit_code"])
    return exit_status(code)


def cmd_attach(args: argparse.Namespace, client: Client) -> int:
    info = client.inspect(args.container)
    if info.get("state") != "running":
        raise InvalidArgument(f"container {args.container} is not running: start it with "
                              f"'berth start -a {args.container}'")
    spec = info.get("spec") or {}
    stdin = bool(spec.get("stdin") or spec.get("terminal")) and not args.no_stdin
    try:
        code = attach_session(client, str(info["id"]), str(info["node"]), stdin=stdin,
                              use_tty=bool(spec.get("terminal")), detach_keys=args.detach_keys,
                              sig_proxy=args.sig_proxy)
    except Detached:
        return 0
    return exit_status(code)


# -- exec ------------------------------------------------------------------------------


def exec_streamed(args: argparse.Namespace, client: Client) -> int:
    """``berth exec``: the exec command goes through the bus (it is recorded), its
    output and input through a stream session named by the same session id."""
    where, target, node = located(client, args.container)
    interactive = bool(getattr(args, "interactive", False))
    if where is None:
        if interactive:
            raise NoStream(f"no stream socket for node {node}: exec -i needs one "
                           f"({NO_STREAM})")
        reply = _exec_command(client, args, target, node, None, False)
        sys.stdout.write(str(reply.result.get("output", "")))
        sys.stdout.flush()
        return int(reply.result["exit_code"])
    sid = new_uuid()
    use_tty = bool(args.tty)
    outcome: dict[str, Any] = {}
    stop_r, stop_w = os.pipe2(os.O_CLOEXEC)

    def command() -> None:
        with Client(client.endpoint, events_endpoint=client.events_endpoint,
                    actor=client.actor, timeout=client.timeout, curve=client.curve) as own:
            try:
                outcome["reply"] = _exec_command(own, args, target, node, sid, interactive)
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                outcome["error"] = exc
            finally:
                with contextlib.suppress(OSError):  # the main thread may have finished
                    os.write(stop_w, b"\0")

    thread = threading.Thread(target=command, name="berth-exec", daemon=True)
    try:
        with where.session() as session:
            h, w = _window(use_tty)
            session.open("exec", target, session=sid, stdin=interactive, tty=use_tty,
                         height=h, width=w)
            thread.start()
            signals = (signal.SIGWINCH,) if use_tty else ()
            proxy = SignalProxy(signals) if signals else None
            with contextlib.ExitStack() as stack:
                if proxy is not None:
                    stack.enter_context(proxy)
                stack.enter_context(raw_terminal(0, use_tty and interactive))
                pump = Pump(session, stdin=interactive, tty=use_tty, proxy=proxy,
                            detach_keys=detach_keys_for(args.detach_keys, stdin=interactive,
                                                        use_tty=use_tty),
                            stop_fd=stop_r, stop_if=lambda: "error" in outcome)
                try:
                    streamed = pump.run()
                except Detached:
                    return 0  # the session goes on; its end is recorded without us
                if "error" in outcome:
                    raise outcome["error"]
        if streamed is not None:
            # conmon's exit file said it: the worker records the same code on its own,
            # so the reply (it follows that write) need not be waited for.
            return exit_status(streamed)
        thread.join()
    finally:
        os.close(stop_r)
    if "error" in outcome:
        raise outcome["error"]
    answer: Reply | None = outcome.get("reply")
    if answer is None:
        raise Unavailable("the exec ended without a reply")
    return int(answer.result["exit_code"])


def _exec_command(client: Client, args: argparse.Namespace, cid: str, node: str | None,
                  session: str | None, interactive: bool) -> Reply:
    options: dict[str, Any] = {}
    if session is not None:
        options["session_id"] = session
        options["streamed"] = True
        h, w = _window(bool(args.tty))
        if h and w:
            options.update(height=h, width=w)
    if interactive:
        options["stdin"] = True
    return client.exec(cid, [args.command, *args.args], node=node, env=list(args.env),
                       cwd=args.workdir or "", user=args.user or "", tty=bool(args.tty),
                       reply_timeout=None, **options)


# -- logs ------------------------------------------------------------------------------


def logs_streamed(args: argparse.Namespace, client: Client) -> int:
    """``berth logs``: each container's log in turn, filtered on its worker."""
    options: dict[str, Any] = {"follow": bool(args.follow)}
    if args.tail is not None:
        if args.tail < 0:
            raise InvalidArgument(f"invalid --tail {args.tail}: give a number of lines >= 0")
        options["tail"] = args.tail
    for name in ("since", "until"):
        value = getattr(args, name)
        if value:
            options[name] = parse_log_time(value)
    several = len(args.container) > 1
    lock = threading.Lock()
    streams: list[tuple[Where, str, Printer]] = []
    for ref in args.container:
        printer = Printer(timestamps=bool(args.timestamps),
                          prefix=f"{ref} ".encode() if several else b"", lock=lock)
        where, target, node = located(client, ref)
        if where is None:
            if len(options) > 1 or args.timestamps:
                raise NoStream(f"no stream socket for node {node}: --tail, --since, "
                               f"--until and -t need one ({NO_STREAM})")
            resolved = client.resolve(ref)
            _logs_polled(client, resolved.id, resolved.node, bool(args.follow))
            continue
        streams.append((where, target, printer))
    if args.follow and len(streams) > 1:
        _follow_together(streams, options)
        return 0
    for where, target, printer in streams:
        _stream_logs(where, target, options, printer)
    return 0


def _stream_logs(where: Where, target: str, options: dict[str, Any], printer: Printer) -> None:
    with where.session() as session:
        _open(session, "logs", target, logs=options)
        Pump(session, printer=printer).run()


def _follow_together(streams: list[tuple[Where, str, Printer]], options: dict[str, Any]) -> None:
    """``logs -f`` of several containers follows them all at once, as podman does (one
    after the other would hold the second back until the first exits): one session and
    one thread each, lines prefixed with the container; done when all have ended. The
    first failure (a wrong name among them) ends it at once, as podman's does, rather
    than once the others have ended."""
    ended: queue.Queue[BaseException | None] = queue.Queue()

    def follow(where: Where, target: str, printer: Printer) -> None:
        try:
            _stream_logs(where, target, options, printer)
        except BaseException as exc:  # reported by the main thread
            ended.put(exc)
        else:
            ended.put(None)

    threads = [threading.Thread(target=follow, args=stream, daemon=True,
                                name=f"berth-logs-{stream[1][:12]}") for stream in streams]
    for thread in threads:
        thread.start()
    for _ in threads:
        while True:
            try:  # short waits: Ctrl-C still reaches the main thread
                failure = ended.get(timeout=0.5)
                break
            except queue.Empty:
                continue
        if failure is not None:
            raise failure


def add_commands(add: AddCommand) -> None:
    p = add("attach", cmd_attach, "attach to a running container's stdio")
    attach_options(p)
    p.add_argument("--no-stdin", action="store_true", help="do not attach stdin")
    p.add_argument("container", metavar="CTR", help="name or id (prefix)")


def attach_options(p: argparse.ArgumentParser, *, sig_proxy: bool = True) -> None:
    """The options of attached commands (run, attach)."""
    p.add_argument("--detach-keys", default=DEFAULT_DETACH_KEYS, metavar="KEYS",
                   help="keys that detach and leave the container running "
                        f"(default {DEFAULT_DETACH_KEYS}; empty: none)")
    if sig_proxy:
        p.add_argument("--sig-proxy", default=True, type=_bool, metavar="BOOL",
                       help="forward the signals this process gets to the container "
                            "(default true)")


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean {text!r}: use true or false")
