"""The worker's stream socket: stdio sessions between clients and conmon.

One ROUTER socket (``bus.stream``) owned by one I/O thread; one thread per session
does the blocking work, so a slow container never holds up another session:

* ``attach``: conmon's attach socket of a container (``berth run``, ``start -a``,
  ``attach``): output read while the client has credit, stdin written while the
  client sends it, resizes to conmon's ctl fifo; ends with the exit code.
* ``exec``: an exec session's output, followed from its k8s-file log from the first
  byte (the session starts before anyone can attach), stdin through its attach
  socket; ends with the session's exit code.
* ``run``: as ``attach``, for the container a ``container.run`` command with the
  same session id creates (``workers.runs``): the session waits for it, attaches
  between the run's create and its start, and tells the run when all the output is
  out, so that the run removes the container only then.
* ``logs``: a container's log, filtered (tail, since, until) and, with ``follow``,
  followed until the container exits.

Session threads hand their frames to the I/O thread through a queue and a wake
pipe; they emit output only against credit, so the queue holds at most ``WINDOW``
data frames per session. Stdin is credited the other way and enforced on the frames
the worker holds: it grants ``STDIN_WINDOW`` frames and one more for each frame it
has written whole to conmon, so a session never holds more than that; a client that
sends past its grant gets its session ended with an ``error`` saying so. Nothing here
decides state: the exit code comes from conmon's exit file, which the exit monitor
records as an event on its own.

What a session costs, and so what bounds their number (``session_limit``): one
thread; its wake pipe (two descriptors), its client's connection (one, in zmq's I/O
thread), conmon's attach socket or the log it reads (one) and a file opened for a
moment (the ctl fifo, the exit file): FDS_PER_SESSION descriptors, fitted under the
process's RLIMIT_NOFILE beside RESERVED_FDS for the rest of the worker; at most
(WINDOW + STDIN_WINDOW) frames of at most MAX_CHUNK bytes buffered; and no inotify
instance of its own: every follow shares the server's one (``SharedInotify``),
because inotify instances are counted per user on the whole host.

On a tcp bus the socket is bound on tcp as a CURVE server (``StreamCurve``): the
worker's own key pair, and a ZAP handler in the server's private context that admits
the keys of the broker's clients (its authorised publishers; auditors may only read
logs). The endpoint clients should use and the public key are ``location()``, which
the worker answers ``query.stream`` with.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from bus import stream as s
from bus.endpoints import prepare_bind, secure_bound
from bus.keys import AUDITOR_PREFIX, ClientKeys, needs_curve
from bus.security import DOMAIN_STREAMS, BrokerSecurity, ZapHandler, make_curve_server
from engine.errors import (
    AlreadyExists,
    BerthError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ProtocolError,
    RateLimited,
)
from engine.ids import validate_container_id, validate_session_id
from engine.runtime import OCIRuntime
from engine.runtime import attach as conmon_attach
from engine.runtime.exitfile import read_exit_file
from engine.runtime.logfile import LogReader, Record, tail_offset
from workers.inotify import POLL_INTERVAL, SharedInotify, Watch

log = logging.getLogger("berth.stream")

_TICK = 1.0
"""Longest a session thread sleeps without checking that its client is still there."""
_RUN_WAIT = 30.0
"""How long a ``run`` session waits for its ``container.run`` to create the container
(the command may queue behind others at the broker and the worker)."""
_EXEC_APPEAR = 30.0
"""How long an exec stream waits for its session's files (the exec command makes them)."""
_EXIT_WAIT = 60.0
"""Longest an attach session waits for conmon's exit file after the output ended."""
_BIND_WAIT = 60.0
"""How long a starting worker retries binding a stream socket another worker holds."""
MAX_SESSIONS = 256
"""Stream sessions a worker serves at once, at most (``session_limit`` may allow
fewer); more are refused."""
MAX_SESSIONS_PER_KEY = 64
"""Stream sessions one client key may hold at once on a tcp stream socket: one key (an
auditor's, say) cannot take every session of the worker."""
FDS_PER_SESSION = 5
"""Descriptors a session holds at most: its wake pipe (2), its client's connection,
conmon's attach socket or its log file, and one opened for a moment."""
RESERVED_FDS = 256
"""Descriptors left to the rest of the worker (store, bus, exit monitor, conmon's
pipes while it starts a container)."""
_PACKET = conmon_attach.BUFFER - 1
"""Largest stdin packet: conmon reads its attach socket STDIO_BUF_SIZE bytes at a time."""
_MAX_CONTROL = 4 * s.STDIN_WINDOW
_SEND_HWM = 2 * s.WINDOW
"""Frames queued for one client: WINDOW data frames, STDIN_WINDOW credit frames and
the pings of PEER_TIMEOUT fit (32 + 16 + 8 < 64)."""
"""Control frames (eof, resize) a session may have waiting; the thread takes them at once."""


class _Closed(Exception):
    """The client closed the session (detach) or went silent."""


def session_limit() -> int:
    """The stream sessions this worker serves at once: MAX_SESSIONS, or fewer if the
    descriptors they would hold (FDS_PER_SESSION each) do not fit under the process's
    RLIMIT_NOFILE beside RESERVED_FDS (a unit's default soft limit is 1024)."""
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_SESSIONS
    return max(1, min(MAX_SESSIONS, (soft - RESERVED_FDS) // FDS_PER_SESSION))


class Session(threading.Thread):
    def __init__(self, server: StreamServer, identity: bytes, request: s.Frame,
                 user: str = "") -> None:
        super().__init__(name=f"berth-stream-{identity.hex()[:8]}", daemon=True)
        self.server = server
        self.identity = identity
        self.request = request
        self.user = user
        """The client's key name on a tcp socket ("" on ipc): sessions are counted by it."""
        self.credit = min(max(0, int(request.get("credit", 0))), s.WINDOW)
        self.stdin_credit = 0
        """``in`` frames the client may still send: granted, not yet received. Frames
        held (in the inbox or waiting for conmon) plus this never pass STDIN_WINDOW."""
        self.inbox: collections.deque[s.Frame] = collections.deque()
        self.lock = threading.Lock()
        self.heard = time.monotonic()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.closed = False
        self.violation: str | None = None
        """Why the client's session is ended for breaking the protocol (set by the
        I/O thread, raised in the session thread as ProtocolError)."""

    # -- from the I/O thread -------------------------------------------------------

    def deliver(self, frame: s.Frame) -> None:
        with self.lock:
            self.heard = time.monotonic()
            if self.violation is not None or self.closed:
                return  # ended: what it still sends is dropped, never held
            if frame.op == "credit":
                # A client never has more than WINDOW outstanding; more buys it nothing.
                self.credit = min(self.credit + max(0, int(frame.get("n", 0))), s.WINDOW)
            elif frame.op == "close":
                self.closed = True
            elif frame.op == "in":
                if self.stdin_credit <= 0:
                    self._refuse_locked(
                        "stdin sent without credit: the worker holds at most "
                        f"{s.STDIN_WINDOW} stdin frames of a session and grants more as "
                        "it writes them; this client sent past its grant")
                else:
                    self.stdin_credit -= 1
                    self.inbox.append(frame)
            elif frame.op != "ping":
                if len(self.inbox) >= _MAX_CONTROL:
                    self._refuse_locked(f"more than {_MAX_CONTROL} control frames "
                                        "(eof, resize) waiting: a client that floods")
                else:
                    self.inbox.append(frame)
        self.wake()

    def _refuse_locked(self, why: str) -> None:
        """End the session for breaking the protocol: its held frames go at once."""
        self.violation = why
        self.inbox.clear()
        self.server.stats["violations"] += 1

    def grant_stdin(self, n: int) -> None:
        """Let the client send ``n`` more stdin frames (it is told by ``ready`` or
        ``credit``: the grant is counted before it can be used)."""
        with self.lock:
            self.stdin_credit += n

    def wake(self) -> None:
        """Make the session thread look (from the I/O thread, or the shared inotify
        reader, which may call it a moment after the session was disposed)."""
        with self.lock:
            if self.wake_w < 0:
                return  # disposed: its descriptor number may belong to another file now
            with contextlib.suppress(BlockingIOError):
                os.write(self.wake_w, b"\0")

    # -- in the session thread -------------------------------------------------------

    def emit(self, op: str, **fields: Any) -> None:
        self.server.send(self.identity, s.encode(op, **fields))

    def _ready(self, stdin_credit: int) -> None:
        self.grant_stdin(stdin_credit)
        self.emit("ready", credit=stdin_credit)

    def _take(self) -> list[s.Frame]:
        with contextlib.suppress(BlockingIOError):
            os.read(self.wake_r, 4096)
        with self.lock:
            if self.violation is not None:
                raise ProtocolError(self.violation)
            if self.closed or time.monotonic() - self.heard > s.PEER_TIMEOUT:
                raise _Closed
            frames = list(self.inbox)
            self.inbox.clear()
            return frames

    def _spend(self) -> bool:
        """Take one unit of credit if there is one."""
        with self.lock:
            if self.credit <= 0:
                return False
            self.credit -= 1
            return True

    def _has_credit(self) -> bool:
        with self.lock:
            return self.credit > 0

    def wait(self, read: list[int], write: list[int], timeout: float = _TICK) -> set[int]:
        """Wait for the wake pipe or any of ``read``/``write``; the ready descriptors."""
        with selectors.PollSelector() as sel:
            sel.register(self.wake_r, selectors.EVENT_READ)
            events: dict[int, int] = {}
            for fd in read:
                events[fd] = events.get(fd, 0) | selectors.EVENT_READ
            for fd in write:
                events[fd] = events.get(fd, 0) | selectors.EVENT_WRITE
            for fd, mask in events.items():
                sel.register(fd, mask)
            return {key.fd for key, _ in sel.select(timeout)}

    def run(self) -> None:
        try:
            kind = self.request.get("kind")
            if kind == "attach":
                self._attach()
            elif kind == "exec":
                self._exec()
            elif kind == "run":
                self._run()
            elif kind == "logs":
                self._logs()
            else:
                raise InvalidArgument(f"unknown stream kind {kind!r}")
        except _Closed:
            pass
        except BerthError as exc:
            self.emit("error", code=exc.code, message=exc.message)
        except Exception as exc:
            log.exception("stream session %s failed", self.identity.hex())
            self.emit("error", code="internal", message=f"internal error: {exc}")
        finally:
            self.server.forget(self.identity)

    def dispose(self) -> None:
        """Close the wake pipe (by the I/O thread, once it has dropped the session)."""
        with self.lock:
            wake_r, wake_w, self.wake_r, self.wake_w = self.wake_r, self.wake_w, -1, -1
        os.close(wake_r)
        os.close(wake_w)

    # -- attach -----------------------------------------------------------------------

    def _attach(self) -> None:
        cid = self.server.resolve(str(self.request.get("container")))
        # conmon's attach socket and ctl fifo are in the bundle, where podman reaches
        # them: the link to it in the socket directory is named after the id only
        # while that name is not exactly 107 bytes (conmon shortens it then).
        directory = self.server.runtime.paths(cid).bundle
        if not os.path.isdir(directory):
            raise NotFound(f"container {cid[:12]} is not running: nothing to attach to")
        sock = conmon_attach.connect(directory)
        try:
            self._resize_from(self.request, directory)
            self._ready(s.STDIN_WINDOW if self.request.get("stdin") else 0)
            _Pump(self, sock, directory, forward=True).run()
        finally:
            sock.close()
        self.emit("exit", code=self._exit_code(self.server.runtime.paths(cid).exit_file))

    def _run(self) -> None:
        """The stdio of a ``container.run``'s container: waits (while the client is
        there, at most _RUN_WAIT) for the run to name the container it created, then
        attaches as ``attach`` does; the run starts it only once this is attached."""
        sid = validate_session_id(str(self.request.get("session")))
        meeting = self.server.runs.expect(sid)
        try:
            deadline = time.monotonic() + _RUN_WAIT
            while not meeting.named.wait(min(_TICK, max(0.0, deadline - time.monotonic()))):
                self._take()  # raises _Closed once the client has gone
                if time.monotonic() >= deadline:
                    raise NotFound(f"no container.run came for stream session {sid} within "
                                   f"{_RUN_WAIT:g} s")
            cid = meeting.container
            directory = self.server.runtime.paths(cid).bundle
            sock = conmon_attach.connect(directory)
            try:
                self._resize_from(self.request, directory)
                self.grant_stdin(s.STDIN_WINDOW if self.request.get("stdin") else 0)
                self.emit("ready", credit=self.stdin_credit, container=cid)
                meeting.attached.set()
                _Pump(self, sock, directory, forward=True).run()
            finally:
                sock.close()
            self.emit("exit", code=self._exit_code(self.server.runtime.paths(cid).exit_file))
        finally:
            meeting.done.set()  # the exit frame is queued: the run may remove it now
            self.server.runs.forget(sid, meeting)

    def _exit_code(self, exit_file: str) -> int | None:
        """The code in conmon's exit file, waiting for it (inotify) while the client
        is there, at most _EXIT_WAIT: conmon writes it a moment after it closes the
        attach socket, longer on a loaded machine. None if it never came (the client
        then asks the bus, which records the exit in any case), or if its directory is
        gone: an ended exec session's files are pruned once later sessions end, which
        can come before a reader that was behind has had the last of its output."""
        deadline = time.monotonic() + _EXIT_WAIT
        directory = os.path.dirname(exit_file)
        try:
            watch = self._watch(directory)
        except FileNotFoundError:
            return None
        with watch:
            while (found := read_exit_file(exit_file)) is None:
                left = deadline - time.monotonic()
                if left <= 0 or not os.path.isdir(directory):
                    return None
                self.wait([], [], min(left, self._tick(watch)))
                self._take()  # raises once the client has gone
        return found.exit_code

    def _watch(self, directory: str) -> Watch:
        """A watch of ``directory`` on the server's one inotify instance: a change
        there wakes this session (FileNotFoundError if it does not exist)."""
        return self.server.watches.watch(directory, self.wake)

    @staticmethod
    def _tick(*watches: Watch) -> float:
        """How long to wait for a wake: a polled watch is looked at again soon."""
        return POLL_INTERVAL if any(w.polled for w in watches) else _TICK

    def _resize_from(self, frame: s.Frame, directory: str) -> None:
        h, w = int(frame.get("height", frame.get("h", 0)) or 0), int(
            frame.get("width", frame.get("w", 0)) or 0)
        if h and w:
            conmon_attach.resize(directory, h, w)

    # -- exec -------------------------------------------------------------------------

    def _exec(self) -> None:
        cid = self.server.resolve(str(self.request.get("container")))
        sid = validate_session_id(str(self.request.get("session")))
        paths = self.server.runtime.exec_session_paths(cid, sid)
        directory = paths.dir  # the session's bundle (see _attach)
        attached = self._exec_attached(sid, paths)
        if attached is not None:
            # All of its output through the socket conmon connected before the process
            # ran: a slow client holds the process back, nothing is dropped.
            try:
                if self.request.get("tty"):
                    self._resize_from(self.request, directory)
                self._ready(s.STDIN_WINDOW if self.request.get("stdin") else 0)
                _Pump(self, attached, directory, forward=True).run()
            finally:
                attached.close()
            self.emit("exit", code=self._exit_code(paths.exit_file))
            return
        sock: socket.socket | None = None
        if self.request.get("stdin") and read_exit_file(paths.exit_file) is None:
            try:
                sock = conmon_attach.connect(directory, timeout=2.0)
            except NotFound:
                sock = None  # it ended already: nothing takes input any more
        try:
            if self.request.get("tty"):
                self._resize_from(self.request, directory)
            self._ready(s.STDIN_WINDOW if sock is not None else 0)
            pump = _Pump(self, sock, directory, forward=False) if sock is not None else None
            self._follow(LogReader(paths.log), paths.exit_file, os.path.dirname(paths.log),
                         pump=pump)
        finally:
            if sock is not None:
                sock.close()
        found = read_exit_file(paths.exit_file)
        self.emit("exit", code=None if found is None else found.exit_code)

    def _exec_attached(self, sid: str, paths: Any) -> socket.socket | None:
        """The session's attach socket that its exec parked (``exec_start(streamed=
        True)``), waiting for it while the session starts. None once the session ran
        or ended without one (a worker restarted in between, or conmon gave no
        socket): its output is then read from its log, as before the process ran the
        log is all there is."""
        runtime = self.server.runtime
        deadline = time.monotonic() + _EXEC_APPEAR
        while True:
            sock = runtime.take_exec_attach(sid, 0.02)
            if sock is not None:
                return sock
            if os.path.exists(paths.pidfile) or read_exit_file(paths.exit_file) is not None:
                return runtime.take_exec_attach(sid, 0)  # parked just now, or not at all
            if time.monotonic() > deadline:
                raise NotFound(f"exec session {sid} did not start")
            self._take()  # ends the wait if the client gave up (the exec failed)

    # -- logs -------------------------------------------------------------------------

    def _logs(self) -> None:
        cid = self.server.resolve(str(self.request.get("container")))
        options = self.request.get("logs") or {}
        paths = self.server.runtime.paths(cid)
        if not os.path.isdir(paths.container_dir):
            raise NotFound(f"no logs of container {cid[:12]} on this node")
        tail = options.get("tail")
        offset = tail_offset(paths.log, int(tail)) if isinstance(tail, int) and tail >= 0 else 0
        self._ready(0)
        self._follow(LogReader(paths.log, offset), paths.exit_file, paths.container_dir,
                     follow=bool(options.get("follow")), since=_time(options.get("since")),
                     until=_time(options.get("until")))
        self.emit("exit", code=None)

    def _follow(self, reader: LogReader, exit_file: str, log_dir: str, *, follow: bool = True,
                since: Any = None, until: Any = None, pump: _Pump | None = None) -> None:
        """Send the log's records against credit; with ``follow``, wait for more (a
        wake from the server's shared inotify instance, or a poll) until the exit file
        exists and everything before it was sent."""
        with contextlib.ExitStack() as stack:
            watches: list[Watch] = []
            if follow:
                exit_dir = os.path.dirname(exit_file)
                for directory in dict.fromkeys((log_dir, exit_dir)):
                    watches.append(stack.enter_context(self._watch(directory)))
            while True:
                ended = read_exit_file(exit_file) is not None
                drained = self._send_records(reader, since, until)
                if drained is None:
                    return  # past --until
                if drained and (ended or not follow):
                    return
                read: list[int] = []
                write: list[int] = []
                if pump is not None:
                    pump.step(read, write)
                if not drained and self._has_credit():
                    continue
                ready = self.wait(read, write, self._tick(*watches))
                if pump is not None:
                    pump.handle(ready)
                else:
                    for frame in self._take():
                        self._control(frame, None)

    def _send_records(self, reader: LogReader, since: Any, until: Any) -> bool | None:
        """Send records while credit lasts: True once the file is read to its end,
        False if credit ran out first, None once a record is past ``until``."""
        while self._has_credit():
            records = reader.read(s.MAX_CHUNK)
            if not records:
                return True
            out: list[list[Any]] = []
            for r in records:
                when = r.when() if since is not None or until is not None else None
                if until is not None and when is not None and when > until:
                    if out:
                        self._spend()
                        self.emit("lines", lines=out)
                    return None
                if since is not None and when is not None and when < since:
                    continue
                out.append(_wire(r))
            if out:
                self._spend()
                self.emit("lines", lines=out)
        return False

    def _control(self, frame: s.Frame, directory: str | None) -> None:
        if frame.op == "resize" and directory is not None:
            self._resize_from(frame, directory)


class _Pump:
    """Moves bytes between a session and conmon's attach socket: stdin from the client
    to the socket (``in``, ``eof``), output from the socket to the client against
    credit (``forward``; else read and dropped, so conmon never waits for us)."""

    def __init__(self, session: Session, sock: socket.socket, directory: str, *,
                 forward: bool) -> None:
        self.session = session
        self.sock = sock
        self.directory = directory
        self.forward = forward
        self.pending: collections.deque[tuple[bytes, bool]] = collections.deque()
        """Stdin packets for conmon, each with whether it ends its client frame (the
        frame's credit goes back once it is written whole)."""
        self.eof = False
        self.shut = False
        self.written = 0
        self.done = False
        sock.setblocking(False)

    def run(self) -> None:
        """Until conmon closes the socket (the process ended)."""
        while not self.done:
            read: list[int] = []
            write: list[int] = []
            self.step(read, write)
            self.handle(self.session.wait(read, write))

    def step(self, read: list[int], write: list[int]) -> None:
        """What to wait for next."""
        if not self.done and (not self.forward or self.session._has_credit()):
            read.append(self.sock.fileno())
        if self.pending:
            write.append(self.sock.fileno())

    def handle(self, ready: set[int]) -> None:
        session = self.session
        returned = 0
        for frame in session._take():
            if frame.op == "in":
                data = bytes(frame.get("data", b""))
                if not data or self.shut:
                    returned += 1  # nothing to write (or stdin closed): held no longer
                    continue
                last = (len(data) - 1) // _PACKET
                self.pending.extend((data[i * _PACKET:(i + 1) * _PACKET], i == last)
                                    for i in range(last + 1))
            elif frame.op == "eof":
                self.eof = True
            elif frame.op == "resize":
                session._resize_from(frame, self.directory)
        if self.sock.fileno() in ready or self.pending:
            returned += self._write()
        if returned:
            session.grant_stdin(returned)
            session.emit("credit", n=returned)
        if self.sock.fileno() in ready:
            self._read()
        if self.eof and not self.pending and not self.shut:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)
            self.shut = True

    def _write(self) -> int:
        """Write what conmon takes; the number of client frames written whole (or
        dropped: a process that is gone takes no input), whose credit goes back."""
        done = 0
        while self.pending:
            packet, ends = self.pending[0]
            try:
                self.sock.send(packet)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in (errno.EPIPE, errno.ECONNRESET):
                    done += sum(1 for _, e in self.pending if e)
                    self.pending.clear()  # the process is gone: its input goes nowhere
                    break
                raise
            self.pending.popleft()
            done += ends
        return done

    def _read(self) -> None:
        while not self.done and (not self.forward or self.session._has_credit()):
            try:
                packet = self.sock.recv(conmon_attach.BUFFER)
            except BlockingIOError:
                return
            except ConnectionResetError:
                packet = b""
            if not packet:
                self.done = True
                return
            if self.forward and len(packet) > 1:
                self.session._spend()
                fd = 2 if packet[0] == conmon_attach.STDERR else 1
                self.session.emit("out", fd=fd, data=packet[1:])


def _wire(r: Record) -> list[Any]:
    return [r.time, r.fd, r.partial, r.data]


def _time(value: object) -> Any:
    from datetime import datetime

    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise InvalidArgument(f"invalid time {value!r}") from None


class Meeting:
    """Where a ``container.run`` and its ``run`` stream session meet: the run names the
    container it created, the session says when it is attached and when it is done."""

    def __init__(self) -> None:
        self.container = ""
        self.named = threading.Event()
        self.attached = threading.Event()
        self.done = threading.Event()

    def name(self, container_id: str) -> None:
        self.container = container_id
        self.named.set()


class Meetings:
    """The ``run`` sessions waiting for their command, by session id. Bounded by the
    sessions themselves (each holds one entry while it lives, and sessions are
    counted); a command whose session never comes waits only ``wait`` seconds."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._by_session: dict[str, Meeting] = {}

    def expect(self, session_id: str) -> Meeting:
        with self._lock:
            if session_id in self._by_session:
                raise AlreadyExists(f"stream session {session_id} is open already")
            meeting = self._by_session[session_id] = Meeting()
            self._lock.notify_all()
            return meeting

    def forget(self, session_id: str, meeting: Meeting) -> None:
        with self._lock:
            if self._by_session.get(session_id) is meeting:
                del self._by_session[session_id]

    def meet(self, session_id: str, container_id: str, wait: float) -> Meeting | None:
        """The session's meeting, told the container (waiting up to ``wait`` seconds
        for the session to open: its open frame and the command take different
        paths); None if it never came or already has a container."""
        deadline = time.monotonic() + wait
        with self._lock:
            while (meeting := self._by_session.get(session_id)) is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._lock.wait(left)
            if meeting.named.is_set():
                return None
            meeting.name(container_id)
            return meeting


class StreamServer:
    """The worker's stream socket and its I/O thread."""

    def __init__(self, runtime: OCIRuntime, endpoint: str,
                 resolve: Callable[[str], str] = validate_container_id,
                 context: zmq.Context[Any] | None = None, *,
                 curve: BrokerSecurity | None = None, backend: str = "") -> None:
        """``resolve``: a container reference (id, unique prefix, name) -> the id of a
        container of this node (the service's, so a client needs no round trip first).
        ``curve``: for a tcp ``endpoint``, the worker's pair and the clients' key
        directories (``BrokerSecurity.for_streams``); ``backend``: the broker's
        endpoint, to advertise a wildcard-bound socket by the address that reaches it."""
        if needs_curve(endpoint) and curve is None:
            raise InvalidArgument(f"a stream socket on {endpoint} needs CURVE keys")
        self.runtime = runtime
        self.resolve = resolve
        self.endpoint = endpoint
        self.curve = curve
        self.backend = backend
        self.advertised: str | None = None
        """Where clients connect, once bound (a tcp port bound as ``*`` read back)."""
        self._zap: ZapHandler | None = None
        # A CURVE socket's ZAP handler must be the only one in its context: a private one.
        self._own_ctx = curve is not None and context is None
        self._ctx = zmq.Context() if self._own_ctx else (context or zmq.Context.instance())
        self._sessions: dict[bytes, Session] = {}
        self._per_user: collections.Counter[str] = collections.Counter()
        self.limit = session_limit()
        """Sessions served at once (MAX_SESSIONS, or fewer under a low RLIMIT_NOFILE)."""
        self.watches = SharedInotify()
        """The one inotify instance of all this server's sessions."""
        self.runs = Meetings()
        """``run`` sessions waiting for their ``container.run`` (workers.runs)."""
        self._outbox: queue.SimpleQueue[tuple[bytes, bytes]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._stop = threading.Event()
        self._starting = threading.Lock()
        self._thread: threading.Thread | None = None
        self._sock: zmq.Socket[bytes] | None = None
        self.stats = {"sessions": 0, "refused": 0, "violations": 0}
        self._pinged = 0.0

    def start(self) -> None:
        prepare_bind(self.endpoint)
        if self.curve is not None and self._zap is None:
            self._zap = ZapHandler(self._ctx, self.curve, (DOMAIN_STREAMS,))
            self._zap.start()  # before the bind: a CURVE server without ZAP admits anyone
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, s.MAX_FRAME + 1024)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # Credit keeps a session's data frames in flight under WINDOW; beside them an
        # honest client has at most STDIN_WINDOW credit frames and a ping per
        # PING_INTERVAL of PEER_TIMEOUT unread. A client that grants credit and does
        # not read fills this and loses its session rather than the worker's memory.
        sock.setsockopt(zmq.SNDHWM, _SEND_HWM)
        # What zmq reads ahead of the I/O thread per client; past it zmq stops reading
        # that client's connection (its frames wait in its own buffers, not ours).
        sock.setsockopt(zmq.RCVHWM, 4 * s.WINDOW)
        if self.curve is not None:
            make_curve_server(sock, self.curve, DOMAIN_STREAMS)
        try:
            sock.bind(self.endpoint)
        except zmq.ZMQError:
            sock.close(linger=0)
            raise
        secure_bound(self.endpoint)
        bound = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.advertised = (s.advertised(bound, self.backend) if bound.startswith("tcp://")
                           else self.endpoint)
        if self.curve is not None:
            log.info("stream socket on %s (CURVE, key %s)", self.advertised,
                     self.curve.server.public.decode())
        self._sock = sock
        self._thread = threading.Thread(target=self._loop, name="berth-streams", daemon=True)
        self._thread.start()

    def start_when_free(self, timeout: float = _BIND_WAIT) -> None:
        """Bind once no other live worker of this node holds the socket (a rolling
        restart starts the new worker before the old one has gone), retrying for up to
        ``timeout``; meanwhile attached clients wait or fall back, never the bus link."""
        deadline = time.monotonic() + timeout
        while True:
            with self._starting:
                if self._stop.is_set():
                    return
                try:
                    self.start()
                    return
                except AlreadyExists:
                    if time.monotonic() > deadline:
                        log.warning("no stream socket at %s: another worker of this node "
                                    "still holds it", self.endpoint)
                        return
                except (BerthError, zmq.ZMQError) as exc:
                    log.warning("no stream socket at %s: %s", self.endpoint, exc)
                    return
            if self._stop.wait(0.1):
                return

    def close(self) -> None:
        with self._starting:
            self._stop.set()
        self._wake()
        finished = True
        if self._thread is not None:
            self._thread.join(5)
            finished = not self._thread.is_alive()
            self._thread = None
        for session in list(self._sessions.values()):
            with session.lock:
                session.closed = True
            session.wake()
        wake_r, wake_w, self._wake_r, self._wake_w = self._wake_r, self._wake_w, -1, -1
        os.close(wake_r)
        os.close(wake_w)
        if self._zap is not None:
            self._zap.stop()
            self._zap = None
        if self._own_ctx and finished:  # its sockets are closed: the loop's and ZAP's
            self._ctx.term()
        self.watches.close()

    def location(self) -> dict[str, Any]:
        """What ``query.stream`` answers: the endpoint and the public CURVE key (None
        on ipc) clients use; Unavailable until the socket is bound."""
        if self.advertised is None:
            raise NotFound("this worker's stream socket is not bound (yet): its log says why")
        key = self.curve.server.public.decode() if self.curve is not None else None
        return {"endpoint": self.advertised, "public_key": key}

    def send(self, identity: bytes, frame: bytes) -> None:
        self._outbox.put((identity, frame))
        self._wake()

    def forget(self, identity: bytes) -> None:
        self._outbox.put((identity, b""))  # the I/O thread drops the session after its frames
        self._wake()

    def _wake(self) -> None:
        if self._wake_w >= 0:
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self._wake_w, b"\0")

    def _loop(self) -> None:
        sock = self._sock
        if sock is None:
            return
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(int(s.PING_INTERVAL * 1000)))
                if sock in ready:
                    self._receive(sock)
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 65536)
                self._flush(sock)
                self._ping(sock)
        finally:
            sock.close(linger=0)
            self._sock = None

    def _receive(self, sock: zmq.Socket[bytes]) -> None:
        for _ in range(256):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if len(frames) != 2:
                continue  # not [identity, frame]: nothing any client of ours sends
            identity, frame = frames[0].bytes, frames[1].bytes
            try:
                msg = s.decode(frame, s.CLIENT_OPS)
            except ProtocolError as exc:
                self._refuse(sock, identity, exc.code, exc.message)
                continue
            user = _user_id(frames[1]) if msg.op == "open" and self.curve is not None else ""
            if msg.op == "open" and msg.get("kind") != "logs" and user.startswith(AUDITOR_PREFIX):
                self._refuse(sock, identity, PermissionDenied.code,
                             "an auditor's key may only read logs on a stream socket")
                continue
            try:
                self._route(sock, identity, msg, user)
            except Exception:  # the socket's thread must outlive any one bad session
                log.exception("stream frame %s from %s failed", msg.op, identity.hex())

    def _route(self, sock: zmq.Socket[bytes], identity: bytes, msg: s.Frame,
               user: str = "") -> None:
        session = self._sessions.get(identity)
        if session is not None:
            session.deliver(msg)
        elif msg.op == "open" and len(self._sessions) >= self.limit:
            self._refuse(sock, identity, RateLimited.code,
                         f"this worker serves {self.limit} stream sessions already; retry later")
        elif msg.op == "open" and user and self._per_user[user] >= MAX_SESSIONS_PER_KEY:
            self._refuse(sock, identity, RateLimited.code,
                         f"the key {user} holds {MAX_SESSIONS_PER_KEY} stream sessions of this "
                         "worker already; retry once one has ended")
        elif msg.op == "open":
            session = Session(self, identity, msg, user)
            self._sessions[identity] = session
            if user:
                self._per_user[user] += 1
            self.stats["sessions"] += 1
            session.start()
        elif msg.op not in ("close", "ping", "credit"):
            self._refuse(sock, identity, NotFound.code, "no such stream session")

    def _refuse(self, sock: zmq.Socket[bytes], identity: bytes, code: str, message: str) -> None:
        self.stats["refused"] += 1
        with contextlib.suppress(zmq.ZMQError):
            sock.send_multipart([identity, s.encode("error", code=code, message=message)],
                                zmq.NOBLOCK)

    def _flush(self, sock: zmq.Socket[bytes]) -> None:
        while True:
            try:
                identity, frame = self._outbox.get_nowait()
            except queue.Empty:
                return
            if not frame:
                gone = self._sessions.pop(identity, None)
                if gone is not None:
                    if gone.user:
                        self._per_user[gone.user] -= 1
                        if self._per_user[gone.user] <= 0:
                            del self._per_user[gone.user]
                    gone.dispose()
                continue
            try:
                sock.send_multipart([identity, frame], zmq.NOBLOCK)
            except zmq.ZMQError:
                # The client is gone (ROUTER_MANDATORY: unroutable) or its pipe is full,
                # which credit rules out for a client that keeps them: end its session.
                session = self._sessions.get(identity)
                if session is not None:
                    with session.lock:
                        session.closed = True
                    session.wake()

    def _ping(self, sock: zmq.Socket[bytes]) -> None:
        now = time.monotonic()
        if now - self._pinged < s.PING_INTERVAL:
            return
        self._pinged = now
        for identity, session in list(self._sessions.items()):
            with contextlib.suppress(zmq.ZMQError):
                sock.send_multipart([identity, s.encode("ping")], zmq.NOBLOCK)
            session.wake()  # lets it notice a silent client


def _user_id(frame: zmq.Frame) -> str:
    """The key name ZAP gave the connection a frame came on ("" if none)."""
    try:
        return str(frame.get("User-Id") or "")
    except zmq.ZMQError:
        return ""


def start_streams(runtime: OCIRuntime, backend: str | None, node: str,
                  resolve: Callable[[str], str] = validate_container_id, *,
                  curve: ClientKeys | None = None,
                  bind: str | None = None) -> StreamServer | None:
    """The node's stream socket, bound in the background (``start_when_free``): next
    to its ipc bus endpoint, or on a tcp bus at ``bind`` (BERTH_STREAM_BIND; default
    an ephemeral port) as a CURVE server with the worker's own pair (``curve``). None
    when a tcp bus leaves it without keys or without the clients' directory (attached
    commands then fall back to reading logs through the bus; -i and -t are refused)."""
    from bus.endpoints import default_endpoints

    backend = backend or default_endpoints().backend
    endpoint = s.stream_endpoint(backend, node)
    security: BrokerSecurity | None = None
    if endpoint is None:
        if curve is None:
            log.warning("no stream socket: the bus is on tcp and this worker has no CURVE "
                        "key pair (BERTH_KEY)")
            return None
        try:
            endpoint = s.tcp_stream_bind(bind or os.environ.get(s.ENV_STREAM_BIND), backend)
            security = BrokerSecurity.for_streams(curve.own)
        except BerthError as exc:
            log.warning("no stream socket: %s", exc.message)
            return None
    server = StreamServer(runtime, endpoint, resolve, curve=security, backend=backend)
    threading.Thread(target=server.start_when_free, name="berth-streams-bind",
                     daemon=True).start()
    return server
