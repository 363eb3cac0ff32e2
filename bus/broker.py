"""The broker: routes commands from clients to the worker of the right node.

One thread, one ``zmq.Poller`` over three sockets (zguide Paranoid Pirate queue
plus an event fan-out):

* frontend ROUTER: clients send commands and get replies back on the identity
  that sent them (a retry from a new socket moves the reply to the new identity);
* backend ROUTER: workers send Ready, Heartbeats, Replies and committed events;
* events XPUB: every event a worker publishes goes out with its type as topic.

The broker keeps no container state: the client names the node. It never
crashes on input: a bad frame from a client gets an error reply, a bad frame
from a worker is dropped and logged. Rules of routing live in bus.routing.

Who may connect, who the actor of a command is, which node a worker may serve
and how fast a peer may send are bus.admission's rules; the broker asks its
:class:`~bus.admission.Admission` and acts on the answer.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

import zmq

from bus import endpoints as _endpoints
from bus.admission import Admission, identity_label
from bus.binarystar import BinaryStar, DualActive, State
from bus.broker_sockets import BrokerSockets, Oversized, receive
from bus.protocol import (
    MAX_MESSAGE_FRAMES,
    MAX_MESSAGE_SIZE,
    PROTOCOL_VERSION,
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
    salvage_command_id,
)
from bus.routing import Envelope, Pending, Router
from bus.security import BrokerSecurity, RateLimit
from engine.command_types import PING
from engine.errors import (
    BerthError,
    HandedBack,
    Passive,
    PermissionDenied,
    ProtocolError,
    RateLimited,
    Unavailable,
)

log = logging.getLogger(__name__)


DEFAULT_HEARTBEAT_INTERVAL = 0.5
DEFAULT_LIVENESS = 3
DEFAULT_PENDING_TIMEOUT = 30.0
DEFAULT_REPLY_CACHE = 10_000
_BATCH = 256  # messages read from one socket before the others get a turn
_STOPPING = "the engine is stopping; retry once it is back"
_MAX_ASKERS = 8  # sockets remembered per outstanding command (retries from new sockets)
_SALVAGE_LIMIT = 64 * 1024  # an over-rate frame larger than this is dropped unread
DEFAULT_RATE_LIMIT = RateLimit()
COUNTERS = (
    "commands_received", "commands_routed", "replies_routed", "duplicate_replies",
    "retries_absorbed", "errors", "malformed_frames", "events_published", "workers_lost",
    "redispatched", "subscriptions", "rate_limited", "unauthenticated", "impersonations",
    "wrong_node", "oversized", "busy", "read_only_refused", "held_for_worker",
    "handed_back", "passive_refused",
)
"""What ``stats`` counts (and ``query.ping`` reports)."""


@dataclass(frozen=True)
class Pair:
    """A Binary Star pair: this broker's role, where it says its state, and where
    its peer says its own."""

    role: str
    state_bind: str
    peer: str


class Broker:
    """The bus broker; bind on construction, ``run(stop_event)`` in any one thread.

    Construction binds (so errors such as "address in use" surface at once and a
    client may connect as soon as the constructor returns). ``run`` owns the
    sockets until it returns; ``close`` afterwards. ``start``/``stop`` wrap that
    in a thread for the embedded engine and tests.
    """

    def __init__(
        self,
        frontend_endpoint: str | None = None,
        backend_endpoint: str | None = None,
        events_endpoint: str | None = None,
        *,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        liveness: int = DEFAULT_LIVENESS,
        pending_timeout: float = DEFAULT_PENDING_TIMEOUT,
        reply_cache_size: int = DEFAULT_REPLY_CACHE,
        context: zmq.Context[Any] | None = None,
        security: BrokerSecurity | None = None,
        rate_limit: RateLimit | None = DEFAULT_RATE_LIMIT,
        pair: Pair | None = None,
    ) -> None:
        """``security``: CURVE keys for tcp endpoints (None: loaded from the
        environment's defaults when an endpoint is tcp; a clear error if absent).
        ``rate_limit``: per peer (None: unlimited)."""
        defaults = _endpoints.default_endpoints()
        frontend_endpoint = frontend_endpoint or defaults.frontend
        backend_endpoint = backend_endpoint or defaults.backend
        events_endpoint = events_endpoint or defaults.events
        self.admission = Admission(frontend_endpoint, backend_endpoint, events_endpoint,
                                   security=security, rate_limit=rate_limit,
                                   owners_size=max(1, reply_cache_size) * 2)
        self.heartbeat_interval = heartbeat_interval
        self.router = Router(
            worker_timeout=heartbeat_interval * liveness,
            pending_timeout=pending_timeout,
            cache_size=reply_cache_size,
        )
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._closing = threading.Event()
        self._started_at = time.monotonic()
        self._next_heartbeat = 0.0
        self.ticked_at: float | None = None
        """When the routing loop last went round (time.monotonic()); None before it runs."""
        self.stats: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.on_answer: Callable[[str, str | None, float], None] | None = None
        """Told (command type, error code or None, seconds since accepted) for each
        routed command answered; the metrics set it (None: nothing measured)."""
        self.sockets = BrokerSockets(frontend_endpoint, backend_endpoint, events_endpoint,
                                     self.admission, context)
        self.frontend, self.backend, self.events = (
            self.sockets.frontend, self.sockets.backend, self.sockets.events)
        self.star: BinaryStar | None = None
        """This broker's side of a Binary Star pair (None: a lone broker)."""
        self.fatal: str | None = None
        """Why the broker stopped by itself (two actives in a pair)."""
        self._state_pub: zmq.Socket[bytes] | None = None
        self._state_sub: zmq.Socket[bytes] | None = None
        if pair is not None:
            self.star = BinaryStar.start(pair.role, heartbeat_interval, time.monotonic())
            self._state_pub, self._state_sub = self.sockets.pair(pair.state_bind, pair.peer)
        self.frontend_endpoint = self.sockets.frontend_endpoint
        self.backend_endpoint = self.sockets.backend_endpoint
        self.events_endpoint = self.sockets.events_endpoint

    @property
    def security(self) -> BrokerSecurity | None:
        """The CURVE keys in use (None when every endpoint is ipc or inproc)."""
        return self.admission.security

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Run in a daemon thread (embedded engine, tests)."""
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, args=(self._stop,), name="berth-broker",
                                        daemon=True)
        self._thread.start()

    def close_intake(self) -> None:
        """The whole engine is stopping (``berth down``): from now on a new command,
        and one a stopping worker hands back, is answered ``unavailable`` at once
        instead of being held for a worker that will not come back soon."""
        self._closing.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread started by ``start`` and close the sockets."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.close()

    def close(self) -> None:
        """Close the sockets with LINGER 0 (call after ``run`` has returned), then
        the ZAP handler and the private context, if any."""
        self.sockets.close()

    def serve_forever(self) -> None:
        """Run until SIGINT/SIGTERM (for ``berth broker``), then close."""
        stop = threading.Event()
        with _stop_on_signals(stop):
            try:
                self.run(stop)
            finally:
                self.close()
        log.info("broker stopped: %s", self.stats)

    def run(self, stop_event: threading.Event) -> None:
        """Serve until ``stop_event`` is set; never raises on bad input."""
        poller = zmq.Poller()
        poller.register(self.backend, zmq.POLLIN)
        poller.register(self.frontend, zmq.POLLIN)
        poller.register(self.events, zmq.POLLIN)
        if self._state_sub is not None:
            poller.register(self._state_sub, zmq.POLLIN)
        tick = min(self.heartbeat_interval, 0.1)
        self._next_heartbeat = time.monotonic() + self.heartbeat_interval
        while not stop_event.is_set() and self.fatal is None:
            ready = dict(poller.poll(int(tick * 1000)))
            if self._state_sub is not None and self._state_sub in ready:
                self._on_peer_state(self._state_sub)
            if self.backend in ready:
                self._drain(self.backend, self._on_worker)
            if self.frontend in ready:
                self._drain(self.frontend, self._on_client)
            if self.events in ready:
                self._drain(self.events, self._on_subscription)
            self._guarded(self._tick, time.monotonic())

    def _on_peer_state(self, sock: zmq.Socket[bytes]) -> None:
        """The pair's other broker said its state (bus.binarystar decides)."""
        assert self.star is not None
        for _ in range(_BATCH):
            try:
                frame = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            state = State.from_wire(frame)
            if state is None:
                self.stats["malformed_frames"] += 1
                continue
            before = self.star.state
            try:
                self.star.peer(state, time.monotonic())
            except DualActive as exc:
                log.critical("%s: stopping rather than splitting the engine in two", exc)
                self.fatal = str(exc)
                return
            if self.star.state is not before:
                log.info("pair: %s -> %s (the peer is %s)", before.name.lower(),
                         self.star.state.name.lower(), state.name.lower())

    def _serving(self, now: float) -> bool:
        """Whether this broker serves a client now; a pair's passive side may take
        over here (its peer silent, a client asking), as Binary Star says."""
        if self.star is None:
            return True
        before = self.star.state
        serving = self.star.client_request(now)
        if serving and before is not State.ACTIVE:
            log.warning("pair: taking over as active (the peer is silent and a client asks)")
        return serving

    def _drain(self, sock: zmq.Socket[bytes], handle: Any) -> None:
        """Handle up to _BATCH messages, handed over as uncopied zmq.Frames whose
        metadata (User-Id, Peer-Address) says who sent them; a message over the
        whole-message cap is refused before any of it is copied."""
        for _ in range(_BATCH):
            try:
                received = receive(sock)
            except zmq.Again:
                return
            except zmq.ZMQError as exc:
                log.warning("bus receive failed: %s", exc)
                return
            if isinstance(received, Oversized):
                self._guarded(functools.partial(self._refuse_oversized, sock), received)
            else:
                self._guarded(handle, received)

    def _refuse_oversized(self, sock: zmq.Socket[bytes], big: Oversized) -> None:
        """Log a message over the cap and tell a client (within its rate) why it got
        no answer; its frames were never copied."""
        self.stats["oversized"] += 1
        if sock is self.frontend:
            peer = self.admission.client(big.first)
            if peer is None:
                return
            if not self.admission.within_rate(peer, time.monotonic()):
                self.stats["rate_limited"] += 1  # a flood of these is neither logged nor answered
                return
            who = peer.name
        elif sock is self.backend:
            who = f"worker {big.first.bytes!r}"
        else:
            who = "a subscriber"
        log.warning("refused a message of %d bytes in %d frames from %s: over the broker's "
                    "limit of %d bytes in %d frames", big.size, big.frames, who,
                    MAX_MESSAGE_SIZE, MAX_MESSAGE_FRAMES)
        if sock is self.frontend:
            self._answer((big.first.bytes,), error_reply(
                "", ProtocolError.code,
                f"a message of {big.size} bytes in {big.frames} frames exceeds the bus limit "
                f"of {MAX_MESSAGE_SIZE} bytes in {MAX_MESSAGE_FRAMES} frames"))

    def _guarded(self, handle: Any, arg: Any) -> None:
        try:
            handle(arg)
        except Exception:  # the broker must outlive any bug in one message's handling
            self.stats["errors"] += 1
            log.exception("broker failed to handle a message; carrying on")

    # ------------------------------------------------------------------ clients

    def _on_client(self, received: list[zmq.Frame]) -> None:
        peer = self.admission.client(received[-1])
        if peer is None:  # cannot happen behind ZAP; never route what nobody vouches for
            self.stats["unauthenticated"] += 1
            return
        frames = [frame.bytes for frame in received]
        identity, rest = frames[0], frames[1:]
        if not self.admission.within_rate(peer, time.monotonic()):
            self._refuse_over_rate(identity, rest, peer.name)
            return
        if len(rest) == 1:
            envelope: Envelope = (identity,)
        elif len(rest) == 2 and rest[0] == b"":
            envelope = (identity, b"")
        else:
            self.stats["malformed_frames"] += 1
            self._answer((identity,), error_reply(
                "", ProtocolError.code, "a command must be sent as exactly one frame"))
            return
        payload = rest[-1]
        try:
            msg = decode(payload)
        except ProtocolError as exc:
            self.stats["malformed_frames"] += 1
            self._answer(envelope, error_reply(salvage_command_id(payload), exc.code, exc.message))
            return
        if not isinstance(msg, Command):
            self.stats["malformed_frames"] += 1
            self._answer(envelope, error_reply("", ProtocolError.code,
                f"the command socket accepts commands, not {type(msg).__name__}"))
            return
        self.stats["commands_received"] += 1
        if msg.type == PING:  # "identity": how this peer's commands are recorded
            result = {**self.health(), "identity": peer.name}
            self._answer(envelope, Reply(msg.id, True, result=result), count_error=False)
            return
        if not self._serving(time.monotonic()):
            self.stats["passive_refused"] += 1
            self._answer(envelope, error_reply(msg.id, Passive.code,
                                               "this broker is the passive one of its pair"),
                         count_error=False)
            return
        refused = self.admission.refusal(msg, peer)
        if refused is not None:
            self.stats["read_only_refused"] += 1
            self._answer(envelope, error_reply(msg.id, PermissionDenied.code, refused))
            return
        msg, payload = self.admission.as_sent_by(msg, payload, peer)
        self._accept(msg, payload, envelope)

    def _refuse_over_rate(self, identity: bytes, rest: list[bytes], who: str) -> None:
        """Tell an over-rate sender so when its frame names a command; drop the rest
        unread, so a flood of garbage costs the broker as little as possible."""
        self.stats["rate_limited"] += 1
        payload = rest[-1] if rest else b""
        command_id = salvage_command_id(payload) if len(payload) <= _SALVAGE_LIMIT else ""
        if command_id:
            req_style = len(rest) == 2 and rest[0] == b""
            envelope: Envelope = (identity, b"") if req_style else (identity,)
            self._answer(envelope, error_reply(
                command_id, RateLimited.code,
                f"{who} sends commands faster than the broker allows; retry later"))

    def _accept(self, command: Command, payload: bytes, envelope: Envelope) -> None:
        if self.admission.other_owner(command) is not None:  # not someone else's reply
            self.stats["impersonations"] += 1
            self._answer(envelope, error_reply(command.id, PermissionDenied.code,
                f"command id {command.id} belongs to another sender"))
            return
        cached = self.router.replies.get(command.id)
        if cached is not None:
            self.stats["retries_absorbed"] += 1
            self._send_client(envelope, cached)
            return
        pending = self.router.outstanding.get(command.id)
        if pending is not None:  # a retry while the first try is still running
            self.stats["retries_absorbed"] += 1
            if envelope not in pending.clients:
                pending.clients = [*pending.clients[-(_MAX_ASKERS - 1):], envelope]
            return
        self.admission.claim(command)
        if self._closing.is_set() and command.type != PING:
            self._answer(envelope, error_reply(command.id, Unavailable.code, _STOPPING))
            return
        now = time.monotonic()
        self._route(Pending(command, payload, [envelope], received=now), now, fresh=True)

    def _route(self, pending: Pending, now: float, *, fresh: bool) -> None:
        """Send a command to its worker; with none, let it wait for one until its
        deadline (a fresh one: until just before its publisher stops waiting), unless
        its node never had a worker or too many commands wait already."""
        command = pending.command
        try:
            node = self.router.target_node(command)
        except BerthError as exc:
            self.router.complete(command.id)
            self._answer_all(pending, error_reply(command.id, exc.code, exc.message))
            return
        worker = self.router.choose(command, node)
        if worker is None:
            if fresh and (self.router.refuse_at_once(node)
                          or len(self.router.waiting()) >= self.router.max_waiting):
                refusal = self.router.unavailable(command, node)
                self._answer_all(pending, error_reply(command.id, refusal.code, refusal.message))
                return
            self.router.outstanding[command.id] = pending
            if pending.deadline is None:
                pending.deadline = (self.router.hold_until(command, now) if fresh
                                    else now + self.router.pending_timeout)
            if fresh:
                self.stats["held_for_worker"] += 1
            return
        if fresh and (busy := self.router.busy(command, worker)) is not None:
            self.stats["busy"] += 1
            self._answer_all(pending, error_reply(command.id, busy.code, busy.message))
            return
        self.router.assign(pending, worker)
        try:
            self.backend.send_multipart([worker.identity, pending.frame], zmq.NOBLOCK)
        except zmq.Again:
            self._back_off(pending, worker.node, now, fresh=fresh)
            return
        except zmq.ZMQError as exc:
            log.warning("worker %r of node %s unreachable (%s); dropping it",
                        worker.identity, worker.node, exc)
            self._lose_worker(worker.identity, now)  # re-routes this command too
            return
        self.stats["commands_routed"] += 1

    def _back_off(self, pending: Pending, node: str, now: float, *, fresh: bool) -> None:
        """The worker's pipe is full: it is busy, not dead. A fresh command is told
        to retry later; a re-dispatched one waits for room (``_tick`` tries again)."""
        self.stats["busy"] += 1
        command = pending.command
        self.router.complete(command.id)
        if fresh:
            self._answer_all(pending, error_reply(
                command.id, RateLimited.code,
                f"the worker of node {node} is busy (its queue is full); retry later"))
            return
        pending.worker = None
        if pending.deadline is None:
            pending.deadline = now + self.router.pending_timeout
        self.router.outstanding[command.id] = pending

    def _answer(self, envelope: Envelope, reply: Reply, *, count_error: bool = True) -> None:
        if count_error and not reply.ok:
            self.stats["errors"] += 1
        self._send_client(envelope, encode(reply))

    def _answer_all(self, pending: Pending, reply: Reply) -> None:
        if not reply.ok:
            self.stats["errors"] += 1
        if self.on_answer is not None:
            self.on_answer(pending.command.type, reply.error_code if not reply.ok else None,
                           time.monotonic() - pending.received)
        frame = encode(reply)
        for envelope in pending.clients:
            self._send_client(envelope, frame)

    def _send_client(self, envelope: Envelope, frame: bytes) -> None:
        try:
            self.frontend.send_multipart([*envelope, frame], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # the client went away; its retry will find the reply
            log.debug("reply to a departed client dropped: %s", exc)

    # ------------------------------------------------------------------ workers

    def _on_worker(self, received: list[zmq.Frame]) -> None:
        if self.star is not None and self.star.state in (State.BACKUP, State.PASSIVE):
            self.stats["passive_refused"] += 1  # silence: the worker turns to the other
            return
        frames = [frame.bytes for frame in received]
        identity = frames[0]
        if len(frames) != 2:
            self.stats["malformed_frames"] += 1
            log.warning("dropped a %d-frame message from worker %s", len(frames) - 1,
                        identity_label(identity))
            return
        payload = frames[1]
        try:
            msg = decode(payload)
        except ProtocolError as exc:
            self.stats["malformed_frames"] += 1
            log.warning("dropped a bad frame from worker %s: %s", identity_label(identity), exc)
            return
        now = time.monotonic()
        if isinstance(msg, Reply):
            self.router.touch(identity, now)
            if msg.error_code == HandedBack.code:
                self._take_back(identity, msg.command_id, now)
            else:
                self._on_reply(msg, payload)
        elif isinstance(msg, EventMessage):
            self.router.touch(identity, now)
            self._publish(msg, payload)
        elif isinstance(msg, Heartbeat):
            # An unknown worker's heartbeat (e.g. the broker restarted) re-admits it.
            if (not self.router.touch(identity, now)
                    and self._admits(identity, msg.node, received[-1])):
                self._worker_ready(identity, Ready(msg.node), now)
        elif isinstance(msg, Ready):
            if self._admits(identity, msg.node, received[-1]):
                self._worker_ready(identity, msg, now)
        elif isinstance(msg, Disconnect):
            log.info("worker %s disconnected", identity_label(identity))
            self._lose_worker(identity, now)
        else:
            self.stats["malformed_frames"] += 1
            log.warning("dropped a %s sent by worker %s", type(msg).__name__,
                        identity_label(identity))

    def _admits(self, identity: bytes, node: str, frame: zmq.Frame) -> bool:
        """Whether this worker may serve ``node`` (bus.admission decides)."""
        refusal = self.admission.worker_refusal(identity, node, frame,
                                                known=identity in self.router.workers)
        if refusal is not None:
            self.stats[refusal] += 1
            return False
        return True

    def _worker_ready(self, identity: bytes, ready: Ready, now: float) -> None:
        known = identity in self.router.workers
        self.router.register(identity, ready.node, ready.capacity, now)
        if not known:
            log.info("worker %s ready for node %s (capacity %d)", identity_label(identity),
                     ready.node,
                     ready.capacity)
        for pending in self.router.waiting():
            self._route(pending, now, fresh=False)

    def _take_back(self, identity: bytes, command_id: str, now: float) -> None:
        """A stopping worker gave a command back unrun: route it to another worker
        of its node, or hold it for the next one, as for a fresh command; the
        stopping worker gets no more (a rolling restart fails no command)."""
        pending = self.router.take_back(identity, command_id)
        if pending is None:  # answered meanwhile, or not this worker's
            return
        self.stats["handed_back"] += 1
        if self._closing.is_set():
            self.router.complete(command_id)
            self._answer_all(pending, error_reply(command_id, Unavailable.code, _STOPPING))
            return
        pending.deadline = self.router.hold_until(pending.command, now)
        self._route(pending, now, fresh=False)

    def _on_reply(self, reply: Reply, payload: bytes) -> None:
        pending = self.router.complete(reply.command_id)
        if pending is None:  # answered already (a re-dispatched duplicate) or unknown
            self.stats["duplicate_replies"] += 1
            return
        if remembered(reply):  # a "not now" answer is no answer to a resend
            self.router.replies.put(reply.command_id, payload)
        self.stats["replies_routed"] += 1
        if self.on_answer is not None:
            self.on_answer(pending.command.type, reply.error_code if not reply.ok else None,
                           time.monotonic() - pending.received)
        for envelope in pending.clients:
            self._send_client(envelope, payload)

    def _publish(self, event: EventMessage, payload: bytes) -> None:
        try:
            self.events.send_multipart([event.type.encode(), payload], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # subscribers recover gaps from the store
            log.warning("event %d not published: %s", event.position, exc)
            return
        self.stats["events_published"] += 1

    def _lose_worker(self, identity: bytes, now: float) -> None:
        orphans = self.router.remove(identity)
        self.stats["workers_lost"] += 1
        for pending in orphans:
            self.stats["redispatched"] += 1
            self._route(pending, now, fresh=False)

    def _on_subscription(self, frames: list[zmq.Frame]) -> None:
        kind = frames[0].bytes[:1] if frames else b""
        if kind == b"\x01":
            self.stats["subscriptions"] += 1
        elif kind == b"\x00":
            self.stats["subscriptions"] -= 1

    # ------------------------------------------------------------------ timers

    def _tick(self, now: float) -> None:
        self.ticked_at = now
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.heartbeat_interval
            if self.star is not None and self._state_pub is not None:
                with contextlib.suppress(zmq.ZMQError):
                    self._state_pub.send(self.star.state.wire, zmq.NOBLOCK)
            for worker in list(self.router.workers.values()):
                # On failure its liveness runs out and it is dropped below.
                with contextlib.suppress(zmq.ZMQError):
                    self.backend.send_multipart(
                        [worker.identity, encode(Heartbeat(worker.node))], zmq.NOBLOCK)
        for identity in self.router.expired(now):
            worker = self.router.workers[identity]
            log.warning("worker %r of node %s missed its heartbeats; dropping it",
                        identity, worker.node)
            self._lose_worker(identity, now)
        for pending in self.router.waiting():
            if pending.deadline is not None and pending.deadline <= now:
                self.router.complete(pending.command.id)
                exc = self.router.unavailable(pending.command, pending.command.node)
                self._answer_all(pending, error_reply(pending.command.id, exc.code,
                                                      f"{exc.message} (waited for one)"))
            elif self.router.workers:  # one found busy may have room now
                self._route(pending, now, fresh=False)

    def health(self) -> dict[str, Any]:
        """What ``query.ping`` answers: counters, workers and outstanding work."""
        return {
            "broker": True,
            "protocol": PROTOCOL_VERSION,
            "curve": self.admission.frontend_curve,
            "uptime": round(time.monotonic() - self._started_at, 3),
            "outstanding": len(self.router.outstanding),
            "waiting": len(self.router.waiting()),
            "workers": [
                {"node": w.node, "capacity": w.capacity, "outstanding": len(w.outstanding)}
                for w in self.router.workers.values()
            ],
            "pair": None if self.star is None else self.star.state.name.lower(),
            **self.stats,
        }


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Set ``stop`` on SIGINT/SIGTERM while inside, when running in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
