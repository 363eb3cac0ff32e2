"""The worker's end of the bus: Ready, heartbeats, commands in, replies and events out.

One I/O thread owns the zmq DEALER socket (zmq sockets are not thread-safe). The
handler runs on a thread pool: commands for one container run one after another in
arrival order (a serial queue per container), different containers and queries run
concurrently. Pool threads and ``publish_event`` callers never touch the socket:
they append an encoded frame to an outbox and write one byte to a pipe the I/O
thread polls next to the socket, so a reply leaves within one poll.

When the broker stops beating, the link closes its socket (LINGER 0), waits a
doubling interval with a cap and reconnects (zguide Paranoid Pirate worker);
replies produced meanwhile wait in the outbox and go out on the new socket.

Heartbeats share the socket with commands and replies, so command traffic must
not starve them: the I/O thread reads at most a batch of commands per turn and
sends a due heartbeat before the outbox. How many commands wait here is bounded
by the broker, which hands a worker only as many as its queue limit
(bus.routing); replies kept for resends are bounded in bytes.

Over tcp the link is a CURVE client (``curve=`` or BERTH_KEY/BERTH_SERVER_KEY);
the broker admits it only if its public key is in the authorised-workers
directory. Keys are set on every new socket, so reconnects stay authenticated.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import zmq

from bus import endpoints as _endpoints
from bus.keys import ClientKeys, client_keys_from_env, needs_curve, peer_socket
from bus.protocol import (
    MAX_FRAME_SIZE,
    Command,
    Disconnect,
    EventMessage,
    Heartbeat,
    Ready,
    Reply,
    decode,
    encode,
    error_reply,
    remembered,
)
from engine.command_types import CHANGE_COMMANDS, EXEC
from engine.errors import BerthError, HandedBack, ProtocolError, Unavailable

log = logging.getLogger(__name__)

EXEC_CONCURRENCY = 128
"""Exec sessions one worker runs at once (their own threads, beside the command pool)."""

Handler = Callable[[Command], Reply]
"""Runs one command and answers it; raise an engine.errors.BerthError to refuse."""

_RECENT = 1024
_RECENT_BYTES = 64 * 1024 * 1024  # replies kept for resends, at most (a reply may be 1 MiB)
_BATCH = 256  # commands read per turn of the I/O loop, so heartbeats keep their pace


class WorkerLink:
    """Connect a command handler of one node to the broker's backend."""

    def __init__(
        self,
        backend_endpoint: str | None,
        node: str,
        handler: Handler,
        *,
        concurrency: int = 4,
        heartbeat_interval: float = 0.5,
        liveness: int = 3,
        reconnect_max: float = 8.0,
        context: zmq.Context[Any] | None = None,
        curve: ClientKeys | None = None,
    ) -> None:
        """``curve``: this worker's keys for a tcp backend (None: from BERTH_KEY and
        BERTH_SERVER_KEY when the endpoint is tcp)."""
        self.endpoints = _endpoints.split(backend_endpoint
                                          or _endpoints.default_endpoints().backend)
        """One broker, or a Binary Star pair: a silent broker's successor is tried next."""
        self.endpoint = self.endpoints[0]
        if curve is None and any(needs_curve(e) for e in self.endpoints):
            curve = client_keys_from_env()
            if curve is None:
                log.warning("connecting to %s without CURVE keys: a berth broker refuses "
                            "that; set BERTH_KEY and BERTH_SERVER_KEY", self.endpoint)
        self.curve = curve
        Ready(node, concurrency)  # validates node and capacity before any thread starts
        self.node = node
        self.handler = handler
        self.concurrency = concurrency
        self.heartbeat_interval = heartbeat_interval
        self.liveness = liveness
        self.reconnect_max = reconnect_max
        self.stats: dict[str, int] = dict.fromkeys(
            ("commands", "duplicates", "replies", "events", "reconnects", "dropped_frames",
             "handed_back"), 0
        )
        self._ctx = context or zmq.Context.instance()
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"berth-{node}")
        self._exec_pool = ThreadPoolExecutor(max_workers=EXEC_CONCURRENCY,
                                             thread_name_prefix=f"berth-{node}-exec")
        """Exec sessions run here: each lasts as long as its process (an interactive
        shell), so in the command pool enough of them would leave no thread for the
        stop or ``rm -f`` meant to end them. Beyond EXEC_CONCURRENCY at once, an exec
        waits for a thread; the broker bounds what a worker may owe in all."""
        self._lock = threading.Lock()
        self._queues: dict[str, deque[Command]] = {}
        self._inflight: set[str] = set()
        """Commands accepted and not answered yet (queued or running)."""
        self._started: set[str] = set()
        """Those of ``_inflight`` whose handler has been called."""
        self._recent: OrderedDict[str, bytes] = OrderedDict()
        self._recent_bytes = 0
        self._outbox: deque[bytes] = deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._stop = threading.Event()
        self._intake_closed = False
        self._idle = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._disconnect_on_stop = True
        self.heard_at: float | None = None
        """When the broker was last heard from (time.monotonic()); None: never."""
        self.connected = threading.Event()
        """Set once the link has sent Ready on a socket (and heard the broker since)."""

    # ------------------------------------------------------------------ public

    def start(self) -> None:
        """Run the I/O loop in a daemon thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, args=(self._stop,),
                                        name=f"berth-link-{self.node}", daemon=True)
        self._thread.start()

    def close_intake(self) -> None:
        """From now on a new command is handed back to the broker, which holds it
        for the node's next worker; so is every command accepted but not started
        yet (queued behind its container's commands, or waiting for a thread). The
        drain then waits only for the commands actually running, not for a queue
        it would run one by one (a stop may take its container's whole timeout),
        and nothing is run by a worker that is leaving. Resends of commands under
        way are still answered once they finish."""
        with self._lock:
            self._intake_closed = True
            for command_id in self._inflight - self._started:
                self._hand_back(command_id)
            self._inflight &= self._started
            self._idle.notify_all()
        self._post_wakeup()

    def _hand_back(self, command_id: str) -> None:
        """Give an unstarted command back to the broker (``_lock`` held; the caller
        forgets it from ``_inflight``)."""
        self.stats["handed_back"] += 1
        self._outbox.append(encode(error_reply(
            command_id, HandedBack.code,
            f"the worker of node {self.node} is stopping; retry once it is back")))

    def stop(self, timeout: float = 5.0, *, disconnect: bool = True, drain: float = 0.0) -> None:
        """Stop intake, give the commands under way up to ``drain`` seconds to finish
        (their replies still leave), then stop the I/O thread. ``disconnect=False``
        leaves silently, as a crashed worker would (the broker notices by missing
        heartbeats). A command still running after ``drain`` is answered
        ``unavailable`` (it did not finish here), so no publisher waits for a worker
        that has gone."""
        self.close_intake()
        deadline = time.monotonic() + drain
        with self._idle:
            while self._inflight and (left := deadline - time.monotonic()) > 0:
                self._idle.wait(left)
            if self._inflight and disconnect:
                log.warning("stopping with %d command(s) still running", len(self._inflight))
                for command_id in self._inflight:
                    self._outbox.append(encode(error_reply(
                        command_id, Unavailable.code,
                        f"the worker of node {self.node} stopped before this command "
                        "finished; check the container once the engine is back")))
        self._disconnect_on_stop = disconnect
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._exec_pool.shutdown(wait=False, cancel_futures=True)
        self.close()

    def close(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def publish_event(self, event: EventMessage) -> None:
        """Send a committed event to the broker for XPUB fan-out (any thread)."""
        self._post(encode(event))
        self.stats["events"] += 1

    def run(self, stop_event: threading.Event) -> None:
        """The I/O loop; returns when ``stop_event`` is set."""
        delay = self.heartbeat_interval
        sock = self._connect()
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        last_heard = next_beat = time.monotonic()
        try:
            while not stop_event.is_set():
                now = time.monotonic()
                wait = max(0.0, min(next_beat - now, 0.1))
                ready = dict(poller.poll(int(wait * 1000)))
                if sock in ready and self._receive(sock):
                    last_heard = self.heard_at = time.monotonic()
                    delay = self.heartbeat_interval
                if self._wake_r in ready:
                    self._drain_wakeups()
                now = time.monotonic()
                if now >= next_beat:  # ahead of queued replies
                    self._send(sock, encode(Heartbeat(self.node)))
                    next_beat = now + self.heartbeat_interval
                self._flush(sock)
                if now - last_heard > self.heartbeat_interval * self.liveness:
                    log.warning("broker silent for %.1fs; reconnecting in %.1fs",
                                now - last_heard, delay)
                    self.connected.clear()
                    poller.unregister(sock)
                    sock.close(linger=0)
                    if stop_event.wait(delay):
                        sock = self._connect(send_ready=False)
                        break
                    delay = min(delay * 2, self.reconnect_max)
                    self.stats["reconnects"] += 1
                    if len(self.endpoints) > 1:  # fail over to the pair's other broker
                        nxt = (self.endpoints.index(self.endpoint) + 1) % len(self.endpoints)
                        self.endpoint = self.endpoints[nxt]
                        delay = self.heartbeat_interval  # no backoff between the two
                    sock = self._connect()
                    poller.register(sock, zmq.POLLIN)
                    last_heard = next_beat = time.monotonic()
        finally:
            if self._disconnect_on_stop:
                self._flush(sock)
                self._send(sock, encode(Disconnect()))
                sock.close(linger=200)  # let the Disconnect and last replies leave
            else:
                sock.close(linger=0)
            self.connected.clear()

    # ------------------------------------------------------------------ I/O thread

    def _connect(self, *, send_ready: bool = True) -> zmq.Socket[bytes]:
        sock = peer_socket(self._ctx, zmq.DEALER, self.endpoint, self.curve,
                           max_message=4 * MAX_FRAME_SIZE)
        sock.connect(self.endpoint)
        if send_ready:
            self._send(sock, encode(Ready(self.node, self.concurrency)))
            self.connected.set()
        return sock

    def _receive(self, sock: zmq.Socket[bytes]) -> bool:
        """Take up to _BATCH messages (the rest wait for the next turn); whether
        anything came from the broker."""
        heard = False
        for _ in range(_BATCH):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return heard
            heard = True
            if len(frames) != 1:
                self.stats["dropped_frames"] += 1
                log.warning("dropped a %d-frame message from the broker", len(frames))
                continue
            try:
                msg = decode(frames[0])
            except ProtocolError as exc:
                self.stats["dropped_frames"] += 1
                log.warning("dropped a bad frame from the broker: %s", exc)
                continue
            if isinstance(msg, Command):
                self._accept(msg)
            elif not isinstance(msg, (Heartbeat, Disconnect)):
                self.stats["dropped_frames"] += 1
                log.warning("dropped a %s from the broker", type(msg).__name__)
        return heard

    def _send(self, sock: zmq.Socket[bytes], frame: bytes) -> bool:
        try:
            sock.send(frame, zmq.NOBLOCK)
        except zmq.ZMQError:
            return False
        return True

    def _flush(self, sock: zmq.Socket[bytes]) -> None:
        while self._outbox:
            frame = self._outbox.popleft()
            if not self._send(sock, frame):
                self._outbox.appendleft(frame)  # the broker's queue is full: next poll
                return

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _accept(self, command: Command) -> None:
        """Queue a command: once per id, in order per container."""
        with self._lock:
            answered = self._recent.get(command.id)
            if answered is not None:
                self.stats["duplicates"] += 1
                self._outbox.append(answered)
                return
            if command.id in self._inflight:
                self.stats["duplicates"] += 1
                return
            if self._intake_closed:  # the broker holds it for this node's next worker
                self._hand_back(command.id)
                return
            self._inflight.add(command.id)
            self.stats["commands"] += 1
            # Only commands that change a container are serialised per container;
            # reads and waits run beside them, or `wait` would block the `stop`
            # it waits for.
            key = command.container if command.type in CHANGE_COMMANDS else None
            if key is None:
                self._pool.submit(self._run_one, command)
                return
            queue = self._queues.setdefault(key, deque())
            queue.append(command)
            if len(queue) == 1:
                self._pool.submit(self._run_queue, key)

    # ------------------------------------------------------------------ pool threads

    def _run_queue(self, key: str) -> None:
        while True:
            with self._lock:
                command = self._queues[key][0]
            if command.type == EXEC:
                # In order after the changes before it, but beside those after it: an
                # exec lasts as long as its process (an interactive shell, a reader
                # that is slow), and a stop or ``rm -f`` must not wait for it.
                self._exec_pool.submit(self._run_one, command)
            else:
                self._run_one(command)
            with self._lock:
                queue = self._queues[key]
                queue.popleft()
                if not queue:
                    del self._queues[key]
                    return

    def _run_one(self, command: Command) -> None:
        with self._lock:
            if command.id not in self._inflight:  # handed back by close_intake
                return
            self._started.add(command.id)
        reply = self._call(command)
        try:
            frame = encode(reply)
        except ProtocolError as exc:
            frame = encode(error_reply(command.id, exc.code, f"the reply could not be sent: {exc}"))
        with self._lock:
            if remembered(reply):  # a "not now" answer is no answer to a resend
                self._recent[command.id] = frame
                self._recent_bytes += len(frame)
            while len(self._recent) > _RECENT or self._recent_bytes > _RECENT_BYTES:
                _, dropped = self._recent.popitem(last=False)
                self._recent_bytes -= len(dropped)
            self.stats["replies"] += 1
            self._outbox.append(frame)
            # Only once its reply is in the outbox: stop() then flushes it.
            self._inflight.discard(command.id)
            self._started.discard(command.id)
            self._idle.notify_all()
        self._post_wakeup()

    def _call(self, command: Command) -> Reply:
        try:
            reply = self.handler(command)
        except BerthError as exc:
            return error_reply(command.id, exc.code, exc.message)
        except Exception as exc:  # a handler bug must not take the worker down
            log.exception("handler failed on %s %s", command.type, command.id)
            return error_reply(command.id, BerthError.code, f"{type(exc).__name__}: {exc}")
        if not isinstance(reply, Reply):
            return error_reply(command.id, BerthError.code,
                               f"handler returned {type(reply).__name__}, not a Reply")
        if reply.command_id != command.id:
            log.error("handler answered %s with a reply for %s", command.id, reply.command_id)
            return error_reply(command.id, BerthError.code, "handler replied to another command")
        return reply

    def _post(self, frame: bytes) -> None:
        self._outbox.append(frame)
        self._post_wakeup()

    def _post_wakeup(self) -> None:
        # A full pipe means a wakeup is pending already; a closed one, a closed link.
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"\0")
