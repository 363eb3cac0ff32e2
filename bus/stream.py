"""Stdio streams on the bus: framing, constants and the client end of a session.

A command (``container.start``, ``container.exec``) goes through the broker and gets
one reply; a process's stdio is a stream that lasts as long as the process, so it
travels on a socket of its own: each worker binds one ROUTER **stream socket** next
to its bus sockets (``stream-<node>.sock``), and each session is one client DEALER
connected to it. The broker stays out of the data path; who may reach the socket is
decided as for the bus's ipc sockets (a 0600 file in the private run directory).

On a tcp bus the worker binds its stream socket on tcp instead (``BERTH_STREAM_BIND``,
default an ephemeral port on the address this host reaches the broker from) as a
CURVE server with the worker's own key pair, admitting the keys the broker admits
for its clients (bus.security, ZAP domain ``berth.streams``). A client learns the
endpoint and the worker's public key by asking the node's worker over the bus
(``query.stream``): the broker authenticated that worker for that node, so the key
it answers with is the one to trust.

Every frame is one msgpack map ``{"v": 1, "op": ..., ...}``:

client -> worker
  ``open``    kind (``attach``, ``exec``, ``logs``, ``run``: a ``container.run``'s
              container, attached by the worker once the run has created it),
              container, session, stdin, tty,
              logs options, and the first ``credit``
  ``credit``  n more output messages the client will take
  ``in``      bytes for the process's stdin, one frame per unit of stdin credit: a
              frame past the worker's grant ends the session with an ``error``
  ``eof``     close the process's stdin
  ``resize``  the terminal's height and width
  ``ping``    still here (sent while idle)
  ``close``   the session ends (detach)

worker -> client
  ``ready``   attached; ``credit`` chunks of stdin may be sent
  ``out``     fd (1 or 2) and data, from conmon's attach socket
  ``lines``   k8s-file records ``[time, fd, partial, data]`` from a log
  ``credit``  n more stdin frames may be sent (one per frame written whole to the
              process's stdin)
  ``exit``    the process ended with ``code`` (None: unknown); the session is over
  ``error``   code and message; the session is over
  ``ping``    still here

Back-pressure is credit-based both ways: the worker reads output only while the
client has granted credit, so at most ``WINDOW`` messages of at most ``MAX_CHUNK``
bytes are in flight per session, however fast the process writes (it is held back by
conmon, which waits for its attached readers). A client's grants past ``WINDOW``
outstanding are ignored. Stdin the other way: the worker grants ``STDIN_WINDOW``
frames and returns one for each frame it has written whole to conmon, so it never
holds more than that many frames of a session; an ``in`` frame sent without credit
ends the session (``error``, code ``protocol_error``) and is dropped. Silence is
bounded too: each end pings every ``PING_INTERVAL`` and gives the session up after
``PEER_TIMEOUT``.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack  # type: ignore[import-untyped]
import zmq

from bus.keys import ClientKeys, apply_client
from engine.errors import (
    InvalidArgument,
    PermissionDenied,
    ProtocolError,
    Unavailable,
    error_from_code,
)

STREAM_VERSION: Final = 1
MAX_CHUNK: Final = 64 * 1024
"""Largest payload of one ``out``/``lines``/``in`` message (bytes)."""
WINDOW: Final = 32
"""Output messages a client grants at first; it tops the grant up as it prints."""
STDIN_WINDOW: Final = 16
"""Stdin messages a worker grants at first; it grants more as it writes them."""
PING_INTERVAL: Final = 2.0
PEER_TIMEOUT: Final = 15.0
"""A session whose peer has said nothing (not even a ping) for this long is over."""
MAX_FRAME: Final = 2 * MAX_CHUNK

KINDS: Final = frozenset({"attach", "exec", "logs", "run"})
CLIENT_OPS: Final = frozenset({"open", "credit", "in", "eof", "resize", "ping", "close"})
WORKER_OPS: Final = frozenset({"ready", "out", "lines", "credit", "exit", "error", "ping"})


def stream_endpoint(bus_endpoint: str, node: str) -> str | None:
    """The stream socket of ``node``'s worker, next to an ipc bus endpoint (None for
    tcp: there the worker says where its socket is, ``query.stream``)."""
    if not bus_endpoint.startswith("ipc://"):
        return None
    directory = os.path.dirname(bus_endpoint[len("ipc://"):])
    return f"ipc://{os.path.join(directory, f'stream-{node}.sock')}"


ENV_STREAM_BIND: Final = "BERTH_STREAM_BIND"
"""Where a worker on a tcp bus binds its stream socket (``tcp://HOST:PORT``)."""
_TCP_BIND: Final = re.compile(r"^tcp://([^:/]+|\[[0-9a-fA-F:]+\]):(\d+|\*)$")
_HANDSHAKE_FAILED: Final = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                            | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


def tcp_stream_bind(bind: str | None, backend: str) -> str:
    """The endpoint a worker on a tcp bus binds its stream socket to: ``bind`` (the
    option or BERTH_STREAM_BIND) as given, else an ephemeral port on the address this
    host reaches the broker's ``backend`` from (clients reach the workers where the
    broker does; a firewalled site names a fixed port instead)."""
    if bind:
        if _TCP_BIND.match(bind) is None:
            raise InvalidArgument(f"invalid stream endpoint {bind!r}: use tcp://HOST:PORT")
        return bind
    return f"tcp://{_local_address(backend)}:*"


def advertised(bound: str, backend: str) -> str:
    """What clients connect to for a socket bound at ``bound`` (its LAST_ENDPOINT): a
    wildcard host is replaced by the address this host reaches the broker from."""
    host_port = bound[len("tcp://"):]
    host, _, port = host_port.rpartition(":")
    if host in ("0.0.0.0", "*", "[::]", "::"):
        host = _local_address(backend)
    return f"tcp://{host}:{port}"


def _local_address(backend: str) -> str:
    """The local address the kernel would use to reach the broker's host."""
    import socket

    first = backend.split(",")[0].strip()[len("tcp://"):]
    host = first.rpartition(":")[0].strip("[]") or "127.0.0.1"
    if host in ("*", "0.0.0.0"):
        return "127.0.0.1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_DGRAM)
    try:
        probe.connect((host, 9))  # UDP: no packet is sent, only a route is chosen
        address = str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"
    finally:
        probe.close()
    return f"[{address}]" if family == socket.AF_INET6 else address


@dataclass(frozen=True, slots=True)
class Frame:
    """One stream message: its op and its fields (checked by ``decode``)."""

    op: str
    fields: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)


def encode(op: str, **fields: Any) -> bytes:
    return bytes(msgpack.packb({"v": STREAM_VERSION, "op": op, **fields}, use_bin_type=True))


_TYPES: dict[str, type | tuple[type, ...]] = {
    "kind": str, "container": str, "session": str, "stdin": bool, "tty": bool,
    "n": int, "data": bytes, "fd": int, "h": int, "w": int, "code": (int, str, type(None)),
    "message": str, "lines": list, "logs": dict, "credit": int, "height": int, "width": int,
}


def decode(frame: bytes, ops: frozenset[str]) -> Frame:
    """A frame as a Frame, or ProtocolError saying in one sentence what is wrong."""
    if len(frame) > MAX_FRAME:
        raise ProtocolError(f"stream frame of {len(frame)} bytes exceeds {MAX_FRAME}")
    try:
        body = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except Exception as exc:  # noqa: BLE001 - msgpack raises many types on garbage
        raise ProtocolError(f"unreadable stream frame: {exc}") from None
    if not isinstance(body, dict) or body.get("v") != STREAM_VERSION:
        raise ProtocolError("a stream frame must be a map of protocol version 1")
    op = body.pop("op", None)
    body.pop("v")
    if op not in ops:
        raise ProtocolError(f"unknown stream op {op!r}")
    for name, value in body.items():
        want = _TYPES.get(name)
        if want is None:
            raise ProtocolError(f"unknown field {name!r} in a stream {op} frame")
        if not isinstance(value, want) or (isinstance(value, bool) and want is int):
            raise ProtocolError(f"stream field {name!r} has the wrong type")
    if len(body.get("data", b"")) > MAX_CHUNK:
        raise ProtocolError(f"stream data over {MAX_CHUNK} bytes")
    return Frame(str(op), body)


class StreamSession:
    """The client end of one session; not thread-safe (one per thread, like Client).

    ``open`` connects and sends the request; then ``recv`` gives the worker's frames,
    topping up the output credit as they are taken, and ``send_stdin`` sends input
    while the worker's stdin credit lasts."""

    def __init__(self, endpoint: str, context: zmq.Context[Any] | None = None,
                 curve: ClientKeys | None = None) -> None:
        """``curve``: for a tcp stream socket, this client's pair and the worker's
        public key (``query.stream``); a refused handshake raises PermissionDenied."""
        path = endpoint[len("ipc://"):] if endpoint.startswith("ipc://") else ""
        if path and not os.path.exists(path):
            raise Unavailable(f"the worker's stream socket {path} does not exist")
        self.endpoint = endpoint
        self._ctx = context or zmq.Context.instance()
        self.sock: zmq.Socket[bytes] = self._ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME + 1024)
        self.sock.setsockopt(zmq.RCVHWM, 4 * WINDOW)
        self._monitor: zmq.Socket[bytes] | None = None
        if curve is not None:
            apply_client(self.sock, curve)
            # A refused CURVE handshake is silent on the socket itself (libzmq only
            # retries): its monitor says so, and the session ends with one sentence.
            self._monitor = self.sock.get_monitor_socket(
                _HANDSHAKE_FAILED | zmq.EVENT_HANDSHAKE_SUCCEEDED)
        self.sock.connect(endpoint)
        self.stdin_credit = 0
        self._taken = 0
        self._last_sent = time.monotonic()
        self._last_heard = time.monotonic()

    def close(self) -> None:
        self._stop_monitor()
        if not self.sock.closed:
            with contextlib.suppress(zmq.ZMQError):
                self.sock.send(encode("close"), zmq.NOBLOCK)
            self.sock.close(linger=0)

    def _stop_monitor(self) -> None:
        if self._monitor is not None:
            with contextlib.suppress(zmq.ZMQError):
                self.sock.disable_monitor()
            self._monitor.close(linger=0)
            self._monitor = None

    def _check_handshake(self) -> None:
        """Raise PermissionDenied once the monitor reports a failed CURVE handshake;
        stop watching once one succeeded."""
        from zmq.utils.monitor import recv_monitor_message

        while self._monitor is not None and self._monitor.poll(0, zmq.POLLIN):
            event = int(recv_monitor_message(self._monitor)["event"])
            if event & _HANDSHAKE_FAILED:
                self._stop_monitor()
                raise PermissionDenied(
                    f"the worker's stream socket at {self.endpoint} refused this client's "
                    "key: it admits the keys the broker admits for its clients (its "
                    "authorised-publishers directory)")
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._stop_monitor()

    def __enter__(self) -> StreamSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, op: str, **fields: Any) -> None:
        """Send one frame. Never blocks for good: a DEALER whose only connection was
        refused at the handshake has no peer and would wait forever, so the send is
        retried while the monitor is watched, up to PEER_TIMEOUT."""
        frame = encode(op, **fields)
        deadline = time.monotonic() + PEER_TIMEOUT
        while True:
            self._check_handshake()
            try:
                self.sock.send(frame, zmq.NOBLOCK)
                break
            except zmq.Again:
                if time.monotonic() > deadline:
                    raise Unavailable(f"the worker's stream socket at {self.endpoint} takes "
                                      "no frames") from None
                self.sock.poll(50, zmq.POLLOUT)
        self._last_sent = time.monotonic()

    def open(self, kind: str, container: str, *, session: str = "", stdin: bool = False,
             tty: bool = False, logs: dict[str, Any] | None = None,
             height: int = 0, width: int = 0) -> None:
        self._send("open", kind=kind, container=container, session=session, stdin=stdin,
                   tty=tty, logs=logs or {}, credit=WINDOW, height=height, width=width)

    def fileno(self) -> int:
        """The descriptor to poll for incoming frames (zmq's FD: edge-triggered, so
        ``recv`` must be called until it returns None)."""
        return int(self.sock.getsockopt(zmq.FD))

    def recv(self, timeout: float | None) -> Frame | None:
        """The next frame from the worker, or None if none came within ``timeout``.
        Worker pings are absorbed; a worker silent past PEER_TIMEOUT, or an
        ``error`` frame, raises."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._check_handshake()
            if time.monotonic() - self._last_sent >= PING_INTERVAL:
                self._send("ping")
            left = PING_INTERVAL if deadline is None else min(deadline - time.monotonic(),
                                                              PING_INTERVAL)
            if self._monitor is not None:  # a handshake under way: look again soon
                left = min(left, 0.05)
            if self.sock.poll(max(0, int(left * 1000)), zmq.POLLIN):
                frame = decode(self.sock.recv(), WORKER_OPS)
                self._last_heard = time.monotonic()
                if frame.op == "ping":
                    continue
                if frame.op == "error":
                    raise error_from_code(str(frame.get("code") or "internal"),
                                          str(frame.get("message") or "stream failed"))
                if frame.op == "credit":
                    self.stdin_credit += int(frame.get("n", 0))
                    continue
                if frame.op in ("out", "lines"):
                    self._taken += 1
                    if self._taken >= WINDOW // 2:
                        self._send("credit", n=self._taken)
                        self._taken = 0
                if frame.op == "ready":
                    self.stdin_credit += int(frame.get("credit", 0))
                return frame
            if time.monotonic() - self._last_heard > PEER_TIMEOUT:
                raise Unavailable("the worker stopped answering on the stream socket")
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def send_stdin(self, data: bytes) -> None:
        """Send input (split into MAX_CHUNK pieces, one unit of ``stdin_credit`` each).
        The caller waits for credit first: the worker ends a session that sends more
        frames than it granted."""
        for start in range(0, len(data), MAX_CHUNK):
            self._send("in", data=data[start:start + MAX_CHUNK])
            self.stdin_credit -= 1

    def send_eof(self) -> None:
        self._send("eof")

    def resize(self, height: int, width: int) -> None:
        self._send("resize", h=height, w=width)

