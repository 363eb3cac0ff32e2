"""The broker's security settings and its CURVE handshake check: who may connect.

**Settings.** :class:`BrokerSecurity` (the broker's key pair and the directories
of authorised worker and publisher keys) and :class:`RateLimit` (how fast one
peer may send) are what the composition root hands the broker.

**CURVE and ZAP.** Every broker socket bound on a network transport is a CURVE
server with the broker's key pair and its own ZAP domain. libzmq asks the ZAP
handler (:class:`ZapHandler`, a thread answering ``inproc://zeromq.zap.01`` in the
broker's private context) about every CURVE handshake; the handler accepts a
client key only if it is in the authorised directory of that socket's role
(workers for the backend, publishers for the frontend and the event feed), logs
every refusal with the key and the peer's address, and hands libzmq the key's
*name* as the connection's User-Id. libzmq then stamps that User-Id on every
message of the connection, where bus.admission reads it.

What the broker does with a connected peer's messages (its identity as the
actor, its rate, the nodes a worker may serve) is bus.admission's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import zmq
from zmq.utils.z85 import encode as z85_encode

from bus import keys as _keys
from engine.errors import InvalidArgument

log = logging.getLogger(__name__)

ZAP_ENDPOINT: Final = "inproc://zeromq.zap.01"
DOMAIN_CLIENTS: Final = "berth.clients"
DOMAIN_WORKERS: Final = "berth.workers"
DOMAIN_EVENTS: Final = "berth.events"
DOMAIN_STREAMS: Final = "berth.streams"
"""A worker's tcp stream socket (workers.attach): the broker's clients, nobody else."""
ROLE_OF_DOMAIN: Final = {DOMAIN_CLIENTS: _keys.PUBLISHERS, DOMAIN_WORKERS: _keys.WORKERS,
                         DOMAIN_EVENTS: _keys.PUBLISHERS, DOMAIN_STREAMS: _keys.PUBLISHERS}
DEFAULT_RATE: Final = 1000.0
DEFAULT_BURST: Final = 2000
# Refusal lines per second, so a key-spraying peer cannot fill the log.
_REFUSAL_LOG_RATE: Final = 5.0


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class BrokerSecurity:
    """The broker's CURVE configuration: its own pair and the two authorised dirs."""

    server: _keys.KeyPair
    workers_dir: Path
    publishers_dir: Path
    auditors_dir: Path | None = None
    """Keys admitted read-only on the client and event sockets (optional)."""

    @classmethod
    def load(cls, key_file: str | os.PathLike[str] | None = None,
             workers_dir: str | os.PathLike[str] | None = None,
             publishers_dir: str | os.PathLike[str] | None = None,
             env: Mapping[str, str] | None = None) -> BrokerSecurity:
        """From explicit paths, else ``BERTH_BROKER_KEY``/``BERTH_AUTHORIZED_*``, else
        the defaults under ``$BERTH_ROOT/keys``; a clear error when a part is missing."""
        key_path = Path(key_file) if key_file else _keys.broker_key_file(env)
        if not key_path.exists():
            raise InvalidArgument(
                f"the bus listens on tcp, which needs CURVE keys, and the broker's secret key "
                f"{key_path} does not exist: create it with 'berth keys generate "
                f"{_keys.BROKER_KEY_NAME} --dir {key_path.parent}' or name one with --key "
                f"or {_keys.ENV_BROKER_KEY}")
        dirs = {}
        for role, given in ((_keys.WORKERS, workers_dir), (_keys.PUBLISHERS, publishers_dir)):
            path = Path(given) if given else _keys.authorized_dir(role, env)
            if not path.is_dir():
                raise InvalidArgument(
                    f"the authorised-{role} directory {path} does not exist: create it and put "
                    f"the public keys of the {role} there ('berth keys authorize {role[:-1]} "
                    f"FILE.key')")
            _keys.check_not_writable_by_others(path)
            dirs[role] = path
        auditors = _keys.authorized_dir(_keys.AUDITORS, env)
        if auditors.is_dir():
            _keys.check_not_writable_by_others(auditors)
        return cls(_keys.load_pair(key_path), dirs[_keys.WORKERS], dirs[_keys.PUBLISHERS],
                   auditors if auditors.is_dir() else None)

    @classmethod
    def for_streams(cls, server: _keys.KeyPair,
                    env: Mapping[str, str] | None = None) -> BrokerSecurity:
        """A worker's tcp stream socket: the worker's own pair, and the directories the
        broker reads for its clients as this host has them (``BERTH_AUTHORIZED_PUBLISHERS``
        and ``..._AUDITORS`` or their defaults), so one allow-list says who may use the
        bus and its streams. No worker key is admitted there: the workers' entry names
        the publishers' directory only because the dataclass needs one."""
        publishers = _keys.authorized_dir(_keys.PUBLISHERS, env)
        if not publishers.is_dir():
            raise InvalidArgument(
                f"the authorised-publishers directory {publishers} does not exist on this "
                f"host: copy the broker's (or set {_keys.ENV_AUTHORIZED[_keys.PUBLISHERS]}) "
                "so this worker can admit the same clients on its stream socket")
        _keys.check_not_writable_by_others(publishers)
        auditors = _keys.authorized_dir(_keys.AUDITORS, env)
        if auditors.is_dir():
            _keys.check_not_writable_by_others(auditors)
        return cls(server, publishers, publishers, auditors if auditors.is_dir() else None)

    def directory(self, domain: str) -> Path:
        return self.workers_dir if ROLE_OF_DOMAIN[domain] == _keys.WORKERS else self.publishers_dir


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Commands a second one peer may send to the broker, and the burst it may save."""

    rate: float = DEFAULT_RATE
    burst: int = DEFAULT_BURST

    def __post_init__(self) -> None:
        if not self.rate > 0 or self.burst < 1:
            raise InvalidArgument("a rate limit needs a positive rate and a burst of at least 1")


def make_curve_server(sock: zmq.Socket[Any], security: BrokerSecurity, domain: str) -> None:
    """Turn ``sock`` into a CURVE server authenticated through ZAP ``domain`` (before bind)."""
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, security.server.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, security.server.secret)
    sock.setsockopt(zmq.ZAP_DOMAIN, domain.encode())
    # Refuse, rather than accept, when no ZAP handler answers (a DRAFT option).
    with contextlib.suppress(AttributeError, zmq.ZMQError):
        sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)


# --------------------------------------------------------------------------- ZAP


class KeyRing:
    """The authorised keys of one directory, re-read when the directory changes,
    so a key authorised (or removed) while the broker runs takes effect at the next
    handshake without a restart."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._stamp: tuple[int, int] | None = None
        self._names: dict[bytes, str] = {}

    def name_of(self, public: bytes) -> str | None:
        try:
            st = self.directory.stat()
            stamp = (st.st_mtime_ns, st.st_ino)
        except OSError:
            stamp = (0, 0)
        if stamp != self._stamp:
            self._names, problems = _keys.read_authorized_report(self.directory)
            self._stamp = stamp
            for problem in problems:
                log.warning("%s", problem)
        return self._names.get(public)


class ZapHandler:
    """Answers ZAP requests for the broker's CURVE sockets in one daemon thread.

    Bind it (``start``) in the broker's context BEFORE any CURVE socket binds: a
    CURVE server with no ZAP handler would accept any key.
    """

    def __init__(self, context: zmq.Context[Any], security: BrokerSecurity,
                 domains: tuple[str, ...] = tuple(ROLE_OF_DOMAIN)) -> None:
        """``domains``: the ZAP domains answered (a worker's stream socket asks only
        DOMAIN_STREAMS, with the same directories the broker reads for its clients)."""
        self._ctx = context
        self._rings = {domain: KeyRing(security.directory(domain)) for domain in domains}
        self._auditors = (None if security.auditors_dir is None
                          else KeyRing(security.auditors_dir))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._log_bucket = TokenBucket(_REFUSAL_LOG_RATE, 20)
        self.accepted = 0
        self.refused = 0
        self._sock: zmq.Socket[bytes] = context.socket(zmq.REP)
        self._sock.setsockopt(zmq.LINGER, 0)
        try:
            self._sock.bind(ZAP_ENDPOINT)
        except zmq.ZMQError as exc:
            self._sock.close(linger=0)
            raise InvalidArgument(f"cannot start the broker's ZAP handler: {exc}") from None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="berth-zap", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._sock.close(linger=0)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if not self._sock.poll(100):
                    continue
                request = self._sock.recv_multipart()
            except zmq.ZMQError:
                return
            try:
                reply = self.answer(request)
            except Exception:  # a bug here must not leave libzmq waiting: refuse
                log.exception("ZAP handler failed; refusing the handshake")
                reply = [b"1.0", request[1] if len(request) > 1 else b"", b"500",
                         b"internal error", b"", b""]
            try:
                self._sock.send_multipart(reply)
            except zmq.ZMQError:
                return

    def answer(self, request: list[bytes]) -> list[bytes]:
        """The ZAP reply (RFC 27) to one request: 200 with the key's name, or 400."""
        if len(request) < 6:
            return [b"1.0", b"", b"500", b"malformed ZAP request", b"", b""]
        version, request_id, domain, address, _routing, mechanism = request[:6]
        if version != b"1.0":
            return [b"1.0", request_id, b"500", b"unsupported ZAP version", b"", b""]
        ring = self._rings.get(domain.decode(errors="replace"))
        if mechanism != b"CURVE" or ring is None or len(request) != 7 or len(request[6]) != 32:
            self._refuse_log(domain, address, f"mechanism {mechanism.decode(errors='replace')}")
            self.refused += 1
            return [b"1.0", request_id, b"400", b"not allowed", b"", b""]
        z85 = z85_encode(request[6])
        name = ring.name_of(z85)
        if name is None and self._auditors is not None and domain != DOMAIN_WORKERS.encode():
            auditor = self._auditors.name_of(z85)
            name = None if auditor is None else _keys.AUDITOR_PREFIX + auditor
        if name is None:
            self.refused += 1
            self._refuse_log(domain, address,
                             f"unknown key {z85.decode()} (not in {ring.directory})")
            return [b"1.0", request_id, b"400", b"key not authorised", b"", b""]
        self.accepted += 1
        log.info("accepted key %r from %s on %s", name, address.decode(errors="replace"),
                 domain.decode(errors="replace"))
        return [b"1.0", request_id, b"200", b"OK", name.encode(), b""]

    def _refuse_log(self, domain: bytes, address: bytes, why: str) -> None:
        if self._log_bucket.take(time.monotonic()):
            log.warning("refused a connection from %s on %s: %s", address.decode(errors="replace"),
                        domain.decode(errors="replace"), why)


# --------------------------------------------------------------------------- token bucket


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up."""

    rate: float
    burst: float
    tokens: float = -1.0
    stamp: float = 0.0

    def take(self, now: float) -> bool:
        if self.tokens < 0:
            self.tokens, self.stamp = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
