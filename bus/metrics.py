"""Prometheus metrics and a readiness endpoint for berth's long-running processes.

Off by default: a broker or worker started with ``--metrics ADDR:PORT`` (or
``BERTH_METRICS``) serves ``/metrics`` (the Prometheus text format) and ``/ready``
(200 when the process can do its work, 503 with the reason otherwise) on one small
HTTP server thread. What a client can make it hold is bounded: at most
MAX_CONNECTIONS connections are served at once (one thread each; one more is
answered 503 and closed at once, without a thread), and each has REQUEST_TIMEOUT to
send its request and take the answer before the server closes it, however slowly it
trickles bytes. Counters that already exist (the broker's ``stats``, the
worker's monitor) are read at scrape time by a collector, so the hot paths only pay
for what has no other home: one histogram observation per answered command.

Imported only when metrics are asked for: ``prometheus_client`` stays off the
client's import path.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from engine.errors import InvalidArgument

if TYPE_CHECKING:
    from bus.broker import Broker

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0)
"""Seconds; commands range from a query (a millisecond) to a stop with a grace period."""

Readiness = Callable[[], str | None]
"""None when ready, else the one sentence saying why not."""

MAX_CONNECTIONS = 16
"""Connections served at once (a thread each); Prometheus scrapes one at a time per
target, so this leaves room for several scrapers and probes."""
REQUEST_TIMEOUT = 5.0
"""Seconds a connection has from its accept to its answer sent; then it is closed."""
_BUSY_BODY = f"busy: {MAX_CONNECTIONS} metrics connections are being served; retry\n".encode()
_BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
         b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY))


def listen_address(text: str) -> tuple[str, int]:
    """``ADDR:PORT`` (``[v6]:PORT`` for IPv6; port 0 picks a free one) or one sentence."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or "\0" in text:
        raise InvalidArgument(f"invalid metrics address {text!r}: use ADDR:PORT, e.g. "
                              "127.0.0.1:9464")
    port = int(port_text)
    if port > 65535:
        raise InvalidArgument(f"invalid metrics port {port}: use 0-65535")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        if bare != "localhost":
            raise InvalidArgument(f"invalid metrics address {host!r}: give an IP address "
                                  "(or localhost)") from None
    return bare, port


class CommandMetrics:
    """Commands answered, by type and outcome, and how long they took."""

    def __init__(self, registry: CollectorRegistry, prefix: str) -> None:
        self.total = Counter(f"{prefix}_commands", "Commands answered, by type and outcome "
                             "(ok or the error code).", ("type", "outcome"), registry=registry)
        self.seconds = Histogram(f"{prefix}_command_seconds", "Time from accepting a command "
                                 "to answering it.", ("type",), buckets=LATENCY_BUCKETS,
                                 registry=registry)

    def observe(self, command_type: str, error_code: str | None, seconds: float) -> None:
        self.total.labels(command_type, error_code or "ok").inc()
        self.seconds.labels(command_type).observe(seconds)


class _Collect(Collector):
    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterator[Metric]:
        yield from self._collect()


def broker_metrics(broker: Broker, registry: CollectorRegistry) -> None:
    """The broker's metrics: its counters, workers per node, queue depths, and
    commands by type and outcome with their latency (set on ``broker.on_answer``)."""
    commands = CommandMetrics(registry, "berth_broker")
    broker.on_answer = commands.observe

    def collect() -> Iterator[Metric]:
        counters = CounterMetricFamily("berth_broker_events", "What the broker counted "
                                       "since it started (see bus.broker.COUNTERS).",
                                       labels=("event",))
        for name, value in sorted(broker.stats.items()):
            counters.add_metric((name,), value)
        yield counters
        router = broker.router
        workers = GaugeMetricFamily("berth_broker_workers", "Live workers, by node.",
                                    labels=("node",))
        depth = GaugeMetricFamily("berth_broker_worker_queue", "Commands a node's workers "
                                  "owe (sent, not answered).", labels=("node",))
        per_node: dict[str, list[int]] = {}
        for worker in list(router.workers.values()):
            entry = per_node.setdefault(worker.node, [0, 0])
            entry[0] += 1
            entry[1] += len(worker.outstanding)
        for node, (live, owed) in sorted(per_node.items()):
            workers.add_metric((node,), live)
            depth.add_metric((node,), owed)
        yield workers
        yield depth
        yield GaugeMetricFamily("berth_broker_commands_waiting", "Commands held for a "
                                "worker of their node.", value=len(router.waiting()))
        yield GaugeMetricFamily("berth_broker_commands_outstanding", "Commands accepted "
                                "and not answered.", value=len(router.outstanding))

    registry.register(_Collect(collect))


def collector(collect: Callable[[], Iterable[Metric]]) -> Collector:
    """A collector that reads existing counters at scrape time."""
    return _Collect(collect)


def broker_readiness(broker: Broker) -> Readiness:
    """Ready while the routing loop goes round (it does at least every 0.1 s)."""
    def why_not() -> str | None:
        if broker.ticked_at is None:
            return "the broker's routing loop has not started"
        idle = time.monotonic() - broker.ticked_at
        if idle > 5.0:
            return f"the broker's routing loop has not run for {idle:.1f}s"
        return None
    return why_not


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most ``limit`` at once, each closed ``timeout``
    seconds after its accept (the serving loop looks every half second)."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # a burst waits to be answered, not dropped by the kernel

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], *,
                 limit: int, timeout: float) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)
        self.limit = limit
        self.request_timeout = timeout
        self._active: dict[socket.socket, float] = {}
        self._lock = threading.Lock()
        self.refused = 0

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            full = len(self._active) >= self.limit
            if not full:
                self._active[request] = time.monotonic() + self.request_timeout
        if full:  # answered here, in the accepting thread, without waiting on the client
            self.refused += 1
            with contextlib.suppress(OSError):
                request.setblocking(False)
                request.send(_BUSY)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(request)

    def _release(self, request: Any) -> None:
        with self._lock:
            self._active.pop(request, None)

    def service_actions(self) -> None:
        """Between two accepts: a connection past its deadline is shut down, which
        ends its thread's read or write at once."""
        now = time.monotonic()
        with self._lock:
            late = [sock for sock, deadline in self._active.items() if deadline <= now]
        for sock in late:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client gone, or cut off at its deadline, is not news; anything else is
        logged (not printed: the process's stderr is its log)."""
        import sys

        if isinstance(sys.exc_info()[1], OSError):
            return
        log.exception("metrics request from %s failed", client_address)

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._active)


class MetricsServer:
    """``/metrics`` and ``/ready`` on one address, in a daemon thread: at most
    ``limit`` connections at once, each closed ``timeout`` seconds after its accept."""

    def __init__(self, address: tuple[str, int], registry: CollectorRegistry,
                 ready: Readiness, *, limit: int = MAX_CONNECTIONS,
                 timeout: float = REQUEST_TIMEOUT) -> None:
        handler = _handler(registry, ready, timeout)
        self._server = _BoundedServer(address, handler, limit=limit, timeout=timeout)
        self.address: tuple[str, int] = self._server.server_address[:2]  # type: ignore[assignment]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.5,),
                                        name="metrics", daemon=True)

    @property
    def active(self) -> int:
        """Connections being served now."""
        return self._server.active

    @property
    def refused(self) -> int:
        """Connections answered 503 because MAX_CONNECTIONS were being served."""
        return self._server.refused

    def start(self) -> MetricsServer:
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics", *self.address)
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _handler(registry: CollectorRegistry, ready: Readiness,
             io_timeout: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = io_timeout
        """Each read and write waits at most this long (StreamRequestHandler sets it on
        the socket); the server's deadline bounds a client that trickles bytes."""

        def do_GET(self) -> None:  # noqa: N802 - the http.server name
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/ready":
                why = _safely(ready)
                if why is None:
                    self._send(200, b"ready\n")
                else:
                    self._send(503, f"not ready: {why}\n".encode())
            elif path == "/live":
                self._send(200, b"alive\n")
            else:
                self._send(404, b"not found: try /metrics, /ready or /live\n")

        def _send(self, status: int, body: bytes,
                  content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return  # a scrape every few seconds is not news

    return Handler


def _safely(ready: Readiness) -> str | None:
    try:
        return ready()
    except Exception as exc:  # noqa: BLE001 - a readiness probe answers, it does not crash
        return f"the readiness check failed: {type(exc).__name__}: {exc}"
