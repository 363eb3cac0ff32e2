"""The worker process: one per node. It owns the node's containers.

Lifecycle (after arq's worker): ``start`` opens the store (migrating it), sets
up the runtime, starts watching exit files *before* reconciling so no exit
slips between the two, reconciles, then connects to the broker. ``close``
stops intake first, then the monitor, and reports what it did. Containers are
never stopped by stopping the worker.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bus.endpoints import default_endpoints, split
from bus.keys import client_keys_for
from bus.worker_link import Handler, WorkerLink
from engine import commands as c
from engine import events as ev
from engine.audit.treehead import load_public, load_signer
from engine.containers.ocimounts import volumes_root
from engine.containers.queries import Queries
from engine.containers.recovery import Reconciled, reconcile
from engine.containers.service import ContainerService
from engine.errors import BerthError
from engine.ids import validate_node
from engine.images.service import ImageService
from engine.images.store import ImageStore
from engine.networks.service import NetworkService, lookup_network
from engine.networks.setup import NetworkSetup
from engine.runtime import OCIRuntime, RuntimeConfig
from engine.store.caused import Announce, CausedWrites
from engine.store.store import EventStore
from engine.volumes.service import VolumeService
from migrations.runner import upgrade
from workers.attach import StreamServer, start_streams
from workers.conmon_watch import ConmonWatch
from workers.dispatch import Dispatch
from workers.exits import ExitMonitor
from workers.health import HealthMonitor
from workers.present import event_message
from workers.restarts import RestartScheduler
from workers.statedirs import private_directory
from workers.usage import UsageReader

if TYPE_CHECKING:
    from types import FrameType

    from prometheus_client import CollectorRegistry

    from bus.metrics import MetricsServer

log = logging.getLogger("berth.worker")

DEFAULT_ROOT = "/var/lib/berth"
DEFAULT_RUN = "/run/berth"


def default_db_url(root: str) -> str:
    return f"sqlite:///{os.path.join(root, 'berth.db')}"


@dataclass
class WorkerConfig:
    node: str = "local"
    root: str = field(default_factory=lambda: os.environ.get("BERTH_ROOT", DEFAULT_ROOT))
    run: str = field(default_factory=lambda: os.environ.get("BERTH_RUN", DEFAULT_RUN))
    db_url: str | None = field(default_factory=lambda: os.environ.get("BERTH_DB"))
    backend: str | None = None
    concurrency: int = 32  # blocked waits and log long-polls each hold a thread
    heartbeat_interval: float = 0.5
    shutdown_timeout: float = 10.0
    """How long a stopping worker lets commands under way finish (stop, exec,
    checkpoint) before it leaves; blocked waits and log polls end at once."""
    key_file: str | None = field(default_factory=lambda: os.environ.get("BERTH_KEY"))
    """This worker's secret CURVE key file, for a tcp backend."""
    server_key_file: str | None = field(default_factory=lambda: os.environ.get("BERTH_SERVER_KEY"))
    """The broker's public CURVE key file, for a tcp backend."""
    audit_key_file: str | None = field(
        default_factory=lambda: os.environ.get("BERTH_AUDIT_KEY"))
    """This node's auditor (Ed25519) secret key file: it signs the log's tree heads.
    Without one, heads are made only on demand, and unsigned."""
    audit_interval: float = field(
        default_factory=lambda: float(os.environ.get("BERTH_AUDIT_INTERVAL", "60")))
    """Seconds between signed tree heads while the log grows (0: only on demand)."""
    default_network: str | None = field(
        default_factory=lambda: os.environ.get("BERTH_DEFAULT_NETWORK"))
    """networks: the network of a container created without --network
    ("berth" when unset; "none" gives every such container only lo)."""

    metrics: str | None = field(default_factory=lambda: os.environ.get("BERTH_METRICS") or None)
    """ADDR:PORT to serve /metrics and /ready on (None: no metrics)."""
    audit_trust: str | None = field(default_factory=lambda: os.environ.get("BERTH_AUDIT_TRUST"))
    """Other writers' auditor public key files (``:``-separated): rows they signed are
    vouched for in this node's heads (several nodes sharing one store)."""
    # stdio streams over tcp
    stream_bind: str | None = field(
        default_factory=lambda: os.environ.get("BERTH_STREAM_BIND") or None)
    """On a tcp bus, where the stream socket binds (``tcp://HOST:PORT``; None: an
    ephemeral port on the address that reaches the broker)."""

    def __post_init__(self) -> None:
        validate_node(self.node)
        if self.metrics is not None:
            from bus.metrics import listen_address

            listen_address(self.metrics)  # a bad address is refused before anything starts

    @property
    def database(self) -> str:
        return self.db_url or default_db_url(self.root)

    def runtime_config(self) -> RuntimeConfig:
        return RuntimeConfig(state_dir=self.root, tmp_dir=os.path.join(self.run, "runtime"))


class Worker:
    def __init__(self, config: WorkerConfig, *, store: EventStore | None = None) -> None:
        self.config = config
        private_directory(config.root, "BERTH_ROOT")
        private_directory(config.run, "BERTH_RUN")
        if store is None:
            upgrade(config.database)  # a starting worker brings its database to head
            store = EventStore(config.database)
        self.signer = (load_signer(config.audit_key_file) if config.audit_key_file
                       else None)
        trusted = [load_public(path) for path in (config.audit_trust or "").split(os.pathsep)
                   if path]
        if self.signer is not None or trusted:
            store.sign_appends_with(self.signer, trusted)  # every row this worker appends
        self.store = store
        # Built in dependency order, each given what it needs; nothing is set afterwards.
        # networks: CNI networks for the containers; the default network
        # is $BERTH_DEFAULT_NETWORK (docs/operations.md), "berth" when unset. The setup
        # reads networks from the store itself, so it comes before the network service
        # that holds it and the runtime that joins containers to it.
        runtime_config = config.runtime_config()
        setup = NetworkSetup(runtime_config.tmp_dir, functools.partial(lookup_network, store),
                             default=config.default_network)
        self.runtime = OCIRuntime(runtime_config, networks=setup)
        self.networks = NetworkService(self.store, setup, config.node)
        # The volume and image services announce their events to the container
        # service's observers, and the container service is given both (it provides
        # volumes and root filesystems on create): a true cycle, broken by handing
        # them a narrow announcer that reaches the service once it exists (no event
        # is appended before then: nothing runs until start()).
        announce: Announce = lambda recorded: self.service.announce(recorded)  # noqa: E731
        self.volumes = VolumeService(  # volumes
            self.store, volumes_root(config.root), config.node, announce)
        self.images = ImageService(ImageStore(config.root),
                                   CausedWrites(self.store, config.node, announce))
        self.service = ContainerService(self.store, self.runtime, config.node,
                                        volumes=self.volumes, images=self.images)
        if self.signer is None:
            log.warning("no auditor key (BERTH_AUDIT_KEY): tree heads are unsigned and "
                        "the log's integrity rests on the database alone")
        self.queries = Queries(self.service, signer=self.signer)
        self.dispatch: Dispatch | None = None
        """Built by start(), once the health monitor and stream server it answers
        with exist."""
        self._heads: threading.Thread | None = None
        self.monitor: ExitMonitor | None = None
        self.conmons: ConmonWatch | None = None
        self.restarts: RestartScheduler | None = None
        self.health_monitor: HealthMonitor | None = None
        self.link: WorkerLink | None = None
        self.streams: StreamServer | None = None
        self.reconciled = Reconciled()
        self._stopped = threading.Event()
        self._wake: int | None = None  # serve_forever's wake-up pipe (signals, stop())
        self.registry: CollectorRegistry | None = None
        """Where this worker's metrics go when the caller serves them (the embedded
        engine: one endpoint for its broker and worker); else ``config.metrics``."""
        self._metrics_server: MetricsServer | None = None

    def start(self) -> None:
        self.monitor = ExitMonitor(self.service, self.runtime.config.exits_dir)
        self.reconciled = reconcile(self.service)
        self.volumes.sweep()  # volumes: removals a crash cut short
        log.info("reconciled %s", self.reconciled)
        self.images.reconcile()  # leftover overlays of containers that no longer exist
        released, failed = self.networks.reconcile()  # networks
        if released or failed:
            log.info("networks reconciled: %d released, %d failing CHECK", released, failed)
        for cid, session in self.reconciled.running_execs:
            threading.Thread(target=self._finish_exec, args=(cid, session), daemon=True,
                             name=f"berth-exec-{session[:12]}").start()
        self.monitor.start()
        self.conmons = ConmonWatch(self.service)
        self.service.observers.append(self.conmons.observe)
        self.conmons.start()
        # restart policies: after reconciliation recorded the exits it found
        self.restarts = RestartScheduler(self.service)
        self.service.observers.append(self.restarts.observe)
        self.restarts.start()
        self.health_monitor = HealthMonitor(self.service)
        self.service.observers.append(self.health_monitor.observe)
        self.health_monitor.start()
        backend = self.config.backend or default_endpoints().backend
        # The stream server and the link share the worker's keys; the link takes
        # commands for the dispatch, which answers with the stream server.
        curve = client_keys_for(tuple(split(backend)), key_file=self.config.key_file,
                                server_key_file=self.config.server_key_file)
        self.streams = start_streams(self.runtime, self.config.backend, self.config.node,
                                     self.service.resolve, curve=curve,
                                     bind=self.config.stream_bind)
        self.dispatch = Dispatch(self.service, self.queries, self.images, self.networks,
                                 health=self.health_monitor,
                                 usage=UsageReader(self.service, self.runtime),
                                 streams=self.streams)
        handler = self._measured(self.dispatch.handle)
        self.link = WorkerLink(
            self.config.backend, self.config.node, handler,
            concurrency=self.config.concurrency, heartbeat_interval=self.config.heartbeat_interval,
            curve=curve,
        )
        self.service.observers.append(self._publish)
        self.link.start()
        if self.signer is not None and self.config.audit_interval > 0:
            self._heads = threading.Thread(target=self._sign_heads, name="tree-heads",
                                           daemon=True)
            self._heads.start()

    def _measured(self, handler: Handler) -> Handler:
        """The handler, measured when metrics are asked for (they import
        prometheus_client, so only then)."""
        if self.registry is None and self.config.metrics is None:
            return handler
        from prometheus_client import CollectorRegistry

        from bus.metrics import MetricsServer, listen_address
        from workers.metrics import WorkerMetrics, worker_readiness

        registry = self.registry or CollectorRegistry()
        metrics = WorkerMetrics(self, registry)
        self.service.observers.append(metrics.observe)
        if self.registry is None and self.config.metrics is not None:
            self._metrics_server = MetricsServer(listen_address(self.config.metrics), registry,
                                                 worker_readiness(self)).start()
        return metrics.instrument(handler)

    def _sign_heads(self) -> None:
        """A signed tree head every ``audit_interval`` seconds while the log grows, so
        a rewrite is pinned between two heads (engine.audit.transparency)."""
        signed = -1
        while not self._stopped.wait(self.config.audit_interval):
            try:
                if self.store.max_position() != signed:
                    signed = self.queries.checkpoint(c.AuditCheckpoint()).size
            except BerthError as exc:
                log.error("no tree head signed: %s", exc)

    def _finish_exec(self, container_id: str, session_id: str) -> None:
        """Wait for an exec session that outlived the previous worker; record its end."""
        try:
            self.service.finish_exec(container_id, session_id)
        except BerthError as exc:
            log.error("could not record the end of exec session %s of %s: %s",
                      session_id, container_id, exc)

    def _publish(self, recorded: Sequence[ev.RecordedEvent]) -> None:
        """Publish committed events on the bus (the link queues them; never blocks)."""
        link = self.link
        if link is not None:
            for r in recorded:
                link.publish_event(event_message(r))

    def health(self) -> dict[str, Any]:
        return {
            "node": self.config.node,
            "connected": bool(self.link and self.link.connected.is_set()),
            "exits_recorded": self.monitor.recorded if self.monitor else 0,
            "conmons_lost": self.conmons.settled if self.conmons else 0,
            "reconciled": {k: v for k, v in vars(self.reconciled).items()
                           if isinstance(v, int)},
        }

    def serve_forever(self, on_stop: Callable[[], object] | None = None,
                      on_ready: Callable[[], object] | None = None) -> None:
        """Run until SIGTERM/SIGINT; containers keep running afterwards. ``on_ready``
        runs once reconciliation is done and commands are taken (readiness for a
        service manager); ``on_stop`` first when the signal comes (the embedded
        engine closes its broker's intake there, since no other worker will take the
        node's commands)."""
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        self._wake = wake_w

        def on_signal(signum: int, frame: FrameType | None) -> None:
            # A handler runs on the main thread between two bytecodes, possibly
            # while that thread holds the lock inside ``threading.Event`` (in
            # ``wait``); setting the event here could then deadlock. So the handler
            # only writes a byte, which needs no lock.
            _wake(wake_w)

        previous = {sig: signal.signal(sig, on_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        # The handler alone is not enough: the kernel gives a process-directed
        # signal to whichever thread takes it first, and under load that is often a
        # command thread coming out of a system call. Its C-level handler only marks
        # the signal; the Python handler waits for the main thread to run bytecode,
        # and the main thread sleeps in ``os.read`` below, never interrupted (seen:
        # a SIGTERM'd worker kept serving until a second signal came). The wake-up
        # fd is written by the C-level handler on whatever thread it runs.
        previous_wakeup = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        try:
            try:
                self.start()
                if on_ready is not None:
                    on_ready()
                if not self._stopped.is_set():  # stop() may have come first
                    _wait_for_stop(wake_r)
            finally:
                self._wake = None
            self._stopped.set()
            if on_stop is not None:
                on_stop()
            self.close()
        finally:
            # Only now: a second SIGTERM while the worker closes (a service manager
            # repeating itself) is absorbed by the pipe, not fatal half-way.
            signal.set_wakeup_fd(previous_wakeup)
            for sig, old in previous.items():
                signal.signal(sig, old)
            os.close(wake_r)
            os.close(wake_w)

    def stop(self) -> None:
        self._stopped.set()
        if self._wake is not None:
            _wake(self._wake)

    def close(self, *, disconnect: bool = True) -> None:
        """Stop with a deadline, leaving nothing half-done: new commands, those
        accepted but not started, and blocked waits and log polls (cancelled) are
        handed back to the broker unrun (it holds them for the node's next worker,
        or answers "retry" when the whole engine stops), commands running get
        ``shutdown_timeout`` to finish and
        send their replies. The exit monitor closes last, so an exit that lands
        meanwhile is recorded before the worker stops; one that lands after is in its
        exit file, which the next start's reconciliation records."""
        if self.link is not None:
            self.link.close_intake()
            self.service.begin_shutdown()
            self.link.stop(disconnect=disconnect,
                           drain=self.config.shutdown_timeout if disconnect else 0.0)
            log.info("worker %s stopped: %s", self.config.node, self.link.stats)
            self.link = None
        self._stopped.set()
        if self._metrics_server is not None:
            self._metrics_server.close()
            self._metrics_server = None
        if self.streams is not None:
            self.streams.close()
            self.streams = None
        if self._heads is not None:
            self._heads.join(timeout=10)
            self._heads = None
        if self.health_monitor is not None:
            self.service.observers.remove(self.health_monitor.observe)
            self.health_monitor.close()
            self.health_monitor = None
        if self.restarts is not None:
            self.service.observers.remove(self.restarts.observe)
            self.restarts.close()
            self.restarts = None
        if self.conmons is not None:
            self.service.observers.remove(self.conmons.observe)
            self.conmons.close()
            self.conmons = None
        if self.monitor is not None:
            self.monitor.close()
            self.monitor = None
        self.store.close()


_STOP_BYTES = frozenset({0, signal.SIGTERM, signal.SIGINT})
"""What on the wake-up pipe means "stop": ``_wake``'s zero, or the number of a stop
signal the C-level handler wrote (serve_forever sets the pipe as the wake-up fd)."""


def _wait_for_stop(fd: int) -> None:
    """Read the wake-up pipe until it says stop: the wake-up fd also carries the
    number of any other signal given a Python handler in this process (SIGALRM in
    a test, say), which must not stop the worker."""
    while True:
        got = os.read(fd, 64)  # retried after each handler (PEP 475)
        if not got or _STOP_BYTES.intersection(got):
            return


def _wake(fd: int) -> None:
    """Wake ``serve_forever``; a full pipe already holds a wake-up."""
    try:
        os.write(fd, b"\0")
    except (BlockingIOError, OSError):
        pass
