"""A worker's Prometheus metrics (``--metrics ADDR:PORT``; see bus.metrics).

Commands by type and outcome with their latency, measured around the dispatch;
exits recorded and how long after the exit each was recorded; and, read at scrape
time from what the worker already keeps: containers by state on this node, the
log's position, store calls retried, conmons lost, exits waiting for the store.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import Counter as Counter_
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from bus.metrics import CommandMetrics, Readiness, collector
from bus.protocol import Command, Reply
from bus.worker_link import Handler
from engine import events as ev
from engine.containers.projection import STATES
from engine.errors import BerthError
from engine.store.retry import RETRIES

if TYPE_CHECKING:
    from workers.worker import Worker

EXIT_DELAY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 120.0)


class WorkerMetrics:
    """What one worker reports; ``instrument`` wraps its command handler."""

    def __init__(self, worker: Worker, registry: CollectorRegistry) -> None:
        self.worker = worker
        self.commands = CommandMetrics(registry, "berth_worker")
        self.exit_delay = Histogram(
            "berth_worker_exit_recording_seconds", "Time from a container's exit (its "
            "exit file written) to its exit event recorded.", buckets=EXIT_DELAY_BUCKETS,
            registry=registry)
        self.appended = Counter_("berth_worker_events_appended", "Events this worker "
                                 "appended to the log.", registry=registry)
        registry.register(collector(self._collect))

    def observe(self, recorded: Sequence[ev.RecordedEvent]) -> None:
        """After each commit: the events appended, and the delay of every exit
        recorded, whoever found it (the exit monitor, the conmon watcher, a stop,
        reconciliation)."""
        self.appended.inc(len(recorded))
        for r in recorded:
            if isinstance(r.event, ev.Exited) and r.event.finished_at is not None:
                delay = (r.metadata.recorded_at - r.event.finished_at).total_seconds()
                self.exit_delay.observe(max(0.0, delay))

    def instrument(self, handler: Handler) -> Handler:
        def measured(command: Command) -> Reply:
            started = time.monotonic()
            code: str | None = "internal"
            try:
                reply = handler(command)
                code = None if reply.ok else reply.error_code
                return reply
            except BerthError as exc:
                code = exc.code
                raise
            finally:
                self.commands.observe(command.type, code, time.monotonic() - started)
        return measured

    def _collect(self) -> Iterator[Metric]:
        worker = self.worker
        node = worker.config.node
        by_state = Counter(s.state for s in worker.store.list_containers(all=True, node=node))
        states = GaugeMetricFamily("berth_worker_containers", "Containers of this node, by "
                                   "state (removed ones not counted).", labels=("state",))
        for state in STATES:
            if state != "removed":
                states.add_metric((state,), by_state.get(state, 0))
        yield states
        yield GaugeMetricFamily("berth_log_position", "The event log's newest position.",
                                value=worker.store.max_position())
        yield CounterMetricFamily("berth_store_retries", "Store calls retried after a lost "
                                  "connection.", value=RETRIES[0])
        monitor, conmons = worker.monitor, worker.conmons
        yield CounterMetricFamily("berth_worker_exits_recorded", "Exits recorded by the "
                                  "exit monitor.", value=monitor.recorded if monitor else 0)
        yield GaugeMetricFamily("berth_worker_exits_waiting", "Exits waiting for the store "
                                "to accept them.", value=monitor.pending if monitor else 0)
        yield CounterMetricFamily("berth_worker_conmons_lost", "Containers whose conmon died "
                                  "without an exit status.",
                                  value=conmons.settled if conmons else 0)


def worker_readiness(worker: Worker) -> Readiness:
    """Ready when the broker was heard lately and the store answers."""
    def why_not() -> str | None:
        link = worker.link
        if link is None or link.heard_at is None or not link.connected.is_set():
            return "the worker is not connected to the broker"
        silent = time.monotonic() - link.heard_at
        if silent > link.heartbeat_interval * link.liveness:
            return f"the broker has not been heard for {silent:.1f}s"
        try:
            worker.store.max_position()
        except BerthError as exc:
            return f"the store does not answer: {exc}"
        return None
    return why_not
