"""The broker's three listening sockets: their options, their transport security,
binding and closing.

* frontend ROUTER (clients) and backend ROUTER (workers): a reply to a peer that
  has gone is reported, not dropped silently (ROUTER_MANDATORY), and a frame
  far over the frame limit cuts its sender off before it costs memory;
* events XPUB (subscribers): a deep send queue, so a slow subscriber falls
  behind (and catches up from the store) before anything is dropped.

A network endpoint is a CURVE server whose handshakes the broker's ZAP handler
checks; that handler must answer before the first such socket binds, and lives
in a private context so this broker's key checks stay apart from any other
socket in the process. An ipc endpoint gets a 0700 directory and a 0600 socket
file, and binding refuses to take over a socket another broker listens on.

zmq's MAXMSGSIZE caps each frame, not a message: a peer may send a hundred
frames just under it in one message. :func:`receive` reads a message frame by
frame without copying and drops every frame past the whole-message cap unread,
so such a message never costs the broker's Python side more than the cap (libzmq
itself assembles a message before it hands over its first frame; that much
cannot be refused earlier, and it is freed as soon as it has been read). glibc
would keep such freed memory for reuse (a broker hit by 390 MB messages stayed at
270 MB), so the broker pins malloc's mmap threshold: blocks of 1 MiB or more are
mapped apart and go back to the system when freed (:func:`return_big_blocks`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass
from typing import Any, Final

import zmq

from bus import endpoints as _endpoints
from bus.admission import Admission
from bus.protocol import MAX_FRAME_SIZE, MAX_MESSAGE_FRAMES, MAX_MESSAGE_SIZE
from bus.security import DOMAIN_CLIENTS, DOMAIN_EVENTS, DOMAIN_WORKERS
from engine.errors import BerthError

_EVENTS_HWM: Final = 100_000
_M_MMAP_THRESHOLD: Final = -3  # glibc's mallopt parameter
_BIG_BLOCK: Final = 1024 * 1024


def return_big_blocks() -> bool:
    """Make glibc map blocks of 1 MiB or more apart and unmap them when freed
    (whether it could: other C libraries are left as they are)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, _BIG_BLOCK))
    except (OSError, AttributeError):
        return False


class BrokerSockets:
    """Bound on construction (errors such as "address in use" surface at once);
    ``close`` closes the sockets, then the ZAP handler and the private context."""

    def __init__(self, frontend: str, backend: str, events: str, admission: Admission,
                 context: zmq.Context[Any] | None = None) -> None:
        self._admission = admission
        return_big_blocks()
        self._own_ctx: zmq.Context[Any] | None = None
        if context is None and admission.curve:
            # ZAP is one handler per context: a private one keeps this broker's
            # key checks apart from any other broker or socket in the process.
            context = self._own_ctx = zmq.Context()
        self._ctx = context or zmq.Context.instance()
        self._sockets: list[zmq.Socket[bytes]] = []
        try:
            admission.start(self._ctx)  # before any CURVE socket binds
            self.frontend = self._bind(zmq.ROUTER, frontend, DOMAIN_CLIENTS)
            self.backend = self._bind(zmq.ROUTER, backend, DOMAIN_WORKERS)
            self.events = self._bind(zmq.XPUB, events, DOMAIN_EVENTS)
        except BaseException:
            self.close()
            raise
        self.frontend_endpoint = _last_endpoint(self.frontend)
        self.backend_endpoint = _last_endpoint(self.backend)
        self.events_endpoint = _last_endpoint(self.events)

    def _bind(self, kind: int, endpoint: str, domain: str) -> zmq.Socket[bytes]:
        sock: zmq.Socket[bytes] = self._ctx.socket(kind)
        self._sockets.append(sock)
        sock.setsockopt(zmq.LINGER, 0)
        if kind == zmq.ROUTER:
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            # Frames a bit over the limit still get a clear refusal; far bigger ones
            # make zmq drop the peer before they cost memory.
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_SIZE)
        else:
            sock.setsockopt(zmq.SNDHWM, _EVENTS_HWM)
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_SIZE)  # subscribers send only topics
        self._admission.secure(sock, endpoint, domain)
        _endpoints.prepare_bind(endpoint)  # raises AlreadyExists if a broker listens
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            raise BerthError(f"cannot bind the bus on {endpoint}: {exc}") from None
        _endpoints.secure_bound(endpoint)
        return sock

    def pair(self, state_bind: str, peer: str) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes]]:
        """The Binary Star state link: a PUB bound here that says this broker's
        state, a SUB connected to the peer's. Plain (no CURVE): keep it on ipc or a
        private network between the two brokers (docs/operations.md)."""
        pub: zmq.Socket[bytes] = self._ctx.socket(zmq.PUB)
        self._sockets.append(pub)
        pub.setsockopt(zmq.LINGER, 0)
        pub.setsockopt(zmq.SNDHWM, 10)
        _endpoints.prepare_bind(state_bind)
        try:
            pub.bind(state_bind)
        except zmq.ZMQError as exc:
            raise BerthError(f"cannot bind the pair's state link on {state_bind}: {exc}") \
                from None
        _endpoints.secure_bound(state_bind)
        sub: zmq.Socket[bytes] = self._ctx.socket(zmq.SUB)
        self._sockets.append(sub)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.MAXMSGSIZE, 64)  # a state is one byte
        sub.setsockopt(zmq.RCVHWM, 100)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(peer)
        return pub, sub

    def close(self) -> None:
        """Close with LINGER 0 (after the broker's loop has returned)."""
        for sock in self._sockets:
            sock.close(linger=0)
        self._sockets.clear()
        self._admission.close()
        if self._own_ctx is not None:
            self._own_ctx.term()
            self._own_ctx = None


@dataclass(frozen=True, slots=True)
class Oversized:
    """A message past the whole-message cap, of which only the first frame was kept
    (its metadata says who sent it; on a ROUTER it is the sender's identity)."""

    first: zmq.Frame
    size: int
    frames: int


def receive(sock: zmq.Socket[bytes]) -> list[zmq.Frame] | Oversized:
    """One whole message from ``sock``, its frames uncopied, or :class:`Oversized`
    when it is bigger than MAX_MESSAGE_SIZE bytes or MAX_MESSAGE_FRAMES frames (its
    frames past the cap are dropped as they are read). Raises zmq.Again when no
    message waits."""
    first = sock.recv(zmq.NOBLOCK, copy=False)
    kept = [first]
    size, count, more = len(first), 1, first.more
    while more:
        # zmq delivers a message whole: the rest of it is already here.
        frame = sock.recv(zmq.NOBLOCK, copy=False)
        size, count, more = size + len(frame), count + 1, frame.more
        if size <= MAX_MESSAGE_SIZE and count <= MAX_MESSAGE_FRAMES:
            kept.append(frame)
        elif len(kept) > 1:
            del kept[1:]  # over the cap: free what was kept, keep only the sender
    if size > MAX_MESSAGE_SIZE or count > MAX_MESSAGE_FRAMES:
        return Oversized(first, size, count)
    return kept


def _last_endpoint(sock: zmq.Socket[bytes]) -> str:
    value = sock.getsockopt(zmq.LAST_ENDPOINT)
    return value.decode() if isinstance(value, bytes) else str(value)
