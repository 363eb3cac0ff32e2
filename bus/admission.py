"""The broker's gate: who may connect, who sent a message, and how much it may send.

The routing loop (bus.broker) asks an :class:`Admission` before it routes
anything, so the rules of trust read in one place:

* **Connect.** Every broker socket bound on a network transport is a CURVE
  server whose handshakes the ZAP handler checks against the authorised keys of
  the socket's role (bus.security); ipc sockets are 0600 files (bus.endpoints).
* **Identity.** Over CURVE, libzmq stamps the name ZAP gave the peer's key on
  every message as its User-Id. Over ipc, libzmq (on Linux) reads SO_PEERCRED
  when it accepts the connection and appends ``:uid:gid:pid`` to the peer
  address it stamps on every message as ``Peer-Address``; so an ipc peer's uid
  comes from the kernel, not from the peer. Where libzmq gives no credentials,
  the 0600 socket file means only the broker's own user (or root) could
  connect, and that user is the identity.
* **Actor.** The identity is the broker's knowledge, never the peer's claim: it
  replaces every command's ``actor`` before a worker sees the command, and a
  command id belongs to the identity that first sent it (another peer reusing
  it would otherwise be handed the first sender's reply). A gateway that
  publishes for its own callers (the Docker API server) claims
  ``docker-api uid=0 pid=4242 docker-py/7.1.0``: a claim with a gateway prefix
  (``DELEGATING_PREFIXES``) is kept, and the broker appends ``via IDENTITY``, so
  the log says which program asked and which authenticated peer vouched for it
  (the last ``via`` is always the broker's word).
* **Workers.** Over CURVE a worker's key names the one node it may serve, so a
  stolen or misused worker key cannot take over another host's containers.
* **Rate.** Each authenticated identity (a uid on ipc, a key's name over CURVE)
  has one token bucket, however many sockets or processes it sends from (keyed
  by pid, a forking sender would multiply its allowance); the broker tells an
  over-rate peer so (or ignores its unreadable frames), and one identity's flood
  costs the others nothing but a fair share of the broker's loop.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Final

import zmq

from bus.keys import AUDITOR_PREFIX, needs_curve
from bus.protocol import MAX_ACTOR_LENGTH, Command, encode
from bus.security import BrokerSecurity, RateLimit, TokenBucket, ZapHandler, make_curve_server
from engine.command_types import AUDIT_COMMANDS, QUERY_COMMANDS
from engine.errors import BerthError

log = logging.getLogger(__name__)

# Why a worker is refused: the names of the broker's counters for it.
UNAUTHENTICATED: Final = "unauthenticated"
WRONG_NODE: Final = "wrong_node"

_MAX_PEERS: Final = 10_000
DELEGATING_PREFIXES: Final = ("docker-api ",)
"""Claims a gateway makes for the callers it serves: kept, followed by ``via IDENTITY``."""
READ_ONLY_COMMANDS: Final = QUERY_COMMANDS | AUDIT_COMMANDS


# --------------------------------------------------------------------------- identity


@dataclass(frozen=True, slots=True)
class Peer:
    """Who sent a message: ``name`` goes into the actor, ``key`` buckets its rate
    (one bucket per authenticated identity, never per connection or process)."""

    name: str
    key: str
    read_only: bool = False
    """An auditor's key: queries and audit reads only (bus.keys.AUDITORS)."""


def uid_identity(uid: int) -> str:
    """``root(uid 0)``: a local user as the audit log shows it."""
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name}(uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def stamped_actor(claim: str, identity: str) -> str:
    """The actor recorded for a command claiming ``claim`` from ``identity``: the
    identity, or a gateway's claim for its caller followed by ``via IDENTITY`` (the
    claim cut short so the broker's part always fits)."""
    if not claim.startswith(DELEGATING_PREFIXES):
        return identity
    suffix = f" via {identity}"
    return claim[:max(0, MAX_ACTOR_LENGTH - len(suffix))] + suffix


class PeerIdentities:
    """Reads the authenticated identity off a received frame's libzmq metadata."""

    def __init__(self) -> None:
        self._ipc: OrderedDict[str, Peer] = OrderedDict()
        self._own = Peer(uid_identity(os.geteuid()), f"uid:{os.geteuid()}")

    def of(self, frame: zmq.Frame, *, curve: bool) -> Peer | None:
        """The peer of ``frame`` (received with ``copy=False``); None when a CURVE
        socket's frame carries no User-Id, which ZAP makes impossible."""
        if curve:
            try:
                user = frame.get("User-Id")
            except zmq.ZMQError:
                return None
            if not user:
                return None
            return Peer(str(user), f"key:{user}", str(user).startswith(AUDITOR_PREFIX))
        try:
            address = str(frame.get("Peer-Address"))
        except zmq.ZMQError:
            return self._own
        peer = self._ipc.get(address)
        if peer is None:
            peer = self._parse_ipc(address)
            self._ipc[address] = peer
            if len(self._ipc) > _MAX_PEERS:
                self._ipc.popitem(last=False)
        return peer

    def _parse_ipc(self, address: str) -> Peer:
        """``host:uid:gid:pid`` (libzmq's SO_PEERCRED suffix) -> ``user(uid N)``; the
        pid names a connection, not an identity, so it keys nothing."""
        parts = address.rsplit(":", 3)
        if len(parts) == 4 and all(p.isdigit() for p in parts[1:]):
            uid = int(parts[1])
            return Peer(uid_identity(uid), f"uid:{uid}")
        return self._own


# --------------------------------------------------------------------------- rate


@dataclass(slots=True)
class RateLimiter:
    """One token bucket per peer key, the least recently seen forgotten first
    (a forgotten peer comes back with a full bucket, which is the safe side)."""

    limit: RateLimit
    buckets: OrderedDict[str, TokenBucket] = field(default_factory=OrderedDict)

    def allow(self, peer: str, now: float) -> bool:
        bucket = self.buckets.get(peer)
        if bucket is None:
            bucket = self.buckets[peer] = TokenBucket(self.limit.rate, self.limit.burst)
            if len(self.buckets) > _MAX_PEERS:
                self.buckets.popitem(last=False)
        else:
            self.buckets.move_to_end(peer)
        return bucket.take(now)


# --------------------------------------------------------------------------- the gate


class Admission:
    """One broker's admission rules and the state they need.

    ``security``: the CURVE keys for the endpoints that cross a network (None:
    loaded from the environment's defaults when one does; a clear error if they
    are absent). ``rate_limit``: per peer (None: unlimited). ``owners_size``:
    how many recent command ids keep their sender.
    """

    def __init__(self, frontend: str, backend: str, events: str, *,
                 security: BrokerSecurity | None, rate_limit: RateLimit | None,
                 owners_size: int) -> None:
        self.frontend_curve, self.backend_curve, events_curve = (
            needs_curve(frontend), needs_curve(backend), needs_curve(events))
        # Whether any socket runs CURVE (its ZAP handler then needs a private context).
        self.curve = self.frontend_curve or self.backend_curve or events_curve
        if self.curve and security is None:
            security = BrokerSecurity.load()
        self.security = security
        self.zap: ZapHandler | None = None
        self._peers = PeerIdentities()
        self._limiter = None if rate_limit is None else RateLimiter(rate_limit)
        self._owners: OrderedDict[str, str] = OrderedDict()
        self._owners_size = owners_size

    # ------------------------------------------------------------------ connect

    def start(self, context: zmq.Context[Any]) -> None:
        """Start the ZAP handler in ``context``; call BEFORE any CURVE socket binds,
        since a CURVE server with no ZAP handler would accept any key."""
        if self.security is not None and self.curve:
            self.zap = ZapHandler(context, self.security)
            self.zap.start()

    def secure(self, sock: zmq.Socket[Any], endpoint: str, domain: str) -> None:
        """Make ``sock`` a CURVE server of ZAP ``domain`` if ``endpoint`` crosses a
        network (before it binds)."""
        if not needs_curve(endpoint):
            return
        if self.security is None:  # __init__ loads the keys whenever an endpoint needs them
            raise BerthError(f"cannot bind the bus on {endpoint}: it needs CURVE keys")
        make_curve_server(sock, self.security, domain)

    def close(self) -> None:
        if self.zap is not None:
            self.zap.stop()
            self.zap = None

    # ------------------------------------------------------------------ clients

    def client(self, frame: zmq.Frame) -> Peer | None:
        """Who sent a frame to the command socket (received with ``copy=False``);
        None, logged, when nobody vouches for it (ZAP makes that impossible)."""
        peer = self._peers.of(frame, curve=self.frontend_curve)
        if peer is None:
            log.warning("dropped a client message with no authenticated identity")
        return peer

    def within_rate(self, peer: Peer, now: float) -> bool:
        return self._limiter is None or self._limiter.allow(peer.key, now)

    def refusal(self, command: Command, peer: Peer) -> str | None:
        """Why ``peer`` may not send ``command`` (None: it may): a read-only peer
        sends queries and audit reads, never a command that changes a container."""
        if peer.read_only and command.type not in READ_ONLY_COMMANDS:
            log.warning("refused %s from read-only %s", command.type, peer.name)
            return f"{peer.name} is read-only: it may not send {command.type}"
        return None

    def as_sent_by(self, command: Command, frame: bytes, peer: Peer) -> tuple[Command, bytes]:
        """The command and its frame with the peer's identity as the actor: the
        audit records who the broker knows, not a claim."""
        actor = stamped_actor(command.actor, peer.name)
        if command.actor == actor:
            return command, frame
        command = dataclasses.replace(command, actor=actor)
        return command, encode(command)

    def other_owner(self, command: Command) -> str | None:
        """The sender a command id belongs to when that is not this command's
        actor (logged: a reused id is refused, never answered from the cache)."""
        owner = self._owners.get(command.id)
        if owner is None or owner == command.actor:
            return None
        log.warning("%s reused command id %s of %s; refused", command.actor, command.id, owner)
        return owner

    def claim(self, command: Command) -> None:
        """Bind a newly routed command's id to its actor."""
        self._owners[command.id] = command.actor
        if len(self._owners) > self._owners_size:
            self._owners.popitem(last=False)

    # ------------------------------------------------------------------ workers

    def worker_refusal(self, identity: bytes, node: str, frame: zmq.Frame, *,
                       known: bool) -> str | None:
        """Why this worker may not serve ``node`` (UNAUTHENTICATED or WRONG_NODE,
        logged), or None when it may. ``known``: already registered."""
        peer = self._peers.of(frame, curve=self.backend_curve)
        if peer is None:
            log.warning("ignored a worker with no authenticated identity")
            return UNAUTHENTICATED
        if self.backend_curve and peer.name != node:
            log.warning("refused worker %s: its key %r may only serve node %r, not %r",
                        identity_label(identity), peer.name, peer.name, node)
            return WRONG_NODE
        if not known:
            log.info("worker %s authenticated as %s", identity_label(identity), peer.name)
        return None


def identity_label(identity: bytes) -> str:
    """A ZeroMQ routing id as a log shows it: hex, not Python's bytes repr."""
    return identity.hex()
