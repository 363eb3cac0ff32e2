"""The health monitor: the worker's one scheduler of health-check probes.

It decides nothing (``engine.health.rules`` does, ``engine.health.prober`` records): it follows the
committed events (a start begins a container's checks, an exit or removal ends them),
keeps its due probes in one delay queue (``workers.delays``, keyed by container),
and hands each due probe to a small pool, so a slow
probe delays no other container's and a container never has two probes at once.

The failing streak between two recorded changes and the last ``KEEP_RESULTS`` probe
results live here, in memory (``inspect`` shows them); a worker that restarts starts
them again from the status the log recorded last.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from engine import events as ev
from engine.containers.projection import RUNNING, ContainerState
from engine.containers.service import ContainerService
from engine.errors import BerthError, InvalidArgument, NotFound, Refused, Unavailable
from engine.health import rules as h
from engine.health.prober import Prober, status_of
from workers.delays import Delays

log = logging.getLogger("berth.health")

PROBE_THREADS = 4


@dataclass
class Track:
    health: h.Health
    started_at: datetime
    generation: int
    results: deque[h.Probe] = field(default_factory=lambda: deque(maxlen=h.KEEP_RESULTS))
    busy: threading.Lock = field(default_factory=threading.Lock)


class HealthMonitor:
    def __init__(self, service: ContainerService) -> None:
        self.service = service
        self.prober = Prober(service)
        self._tracks: dict[str, Track] = {}
        self._cond = threading.Condition()
        self._generation = 0
        self._stop = False
        self._pool = ThreadPoolExecutor(PROBE_THREADS, thread_name_prefix="berth-probe")
        self._due = Delays("berth-health")

    # -- following the log -------------------------------------------------------------

    def start(self) -> None:
        for state in self.service.store.list_containers(node=self.service.node):
            if state.state == RUNNING and h.enabled(state.spec):
                status = status_of(self.service.store, state) or h.STARTING
                self._track(state, h.Health(status, 0))
        self._due.start()

    def close(self) -> None:
        with self._cond:
            self._stop = True
        self._due.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def observe(self, recorded: Sequence[ev.RecordedEvent]) -> None:
        for rec in recorded:
            if isinstance(rec.event, (ev.Started, ev.Restored)):
                cid = rec.metadata.stream
                try:
                    state = self.service.latest(cid)
                except NotFound:
                    continue
                if h.enabled(state.spec):
                    self._track(state, h.Health())
            elif isinstance(rec.event, (ev.Exited, ev.Removed)):
                with self._cond:
                    self._tracks.pop(rec.metadata.stream, None)
                    self._due.cancel(rec.metadata.stream)

    def _track(self, state: ContainerState, health: h.Health) -> None:
        with self._cond:
            self._generation += 1
            self._tracks[state.id] = Track(health, state.started_at or datetime.now(UTC),
                                           self._generation)
            self._push(state.id, state.spec.health_interval, self._generation)

    def _push(self, cid: str, delay: float, generation: int) -> None:
        """The next probe of ``cid``, replacing any it had pending (keyed by id)."""
        self._due.after(delay, functools.partial(self._probe_due, cid, generation), key=cid)

    # -- probing -----------------------------------------------------------------------

    def _probe_due(self, cid: str, generation: int) -> None:
        """On the delay queue's thread: hand the due probe to the pool."""
        with self._cond:
            if self._stop:
                return
            track = self._tracks.get(cid)
            if track is None or track.generation != generation:
                return  # ended, or started again (a newer schedule holds it)
        self._pool.submit(self._scheduled, cid, generation)

    def _scheduled(self, cid: str, generation: int) -> None:
        try:
            self.run_once(cid)
        except Exception:
            log.exception("health check of %s failed", cid)
        with self._cond:
            track = self._tracks.get(cid)
            if track is not None and track.generation == generation and not self._stop:
                try:
                    interval = self.service.latest(cid).spec.health_interval
                except BerthError:
                    return
                self._push(cid, interval, generation)

    def run_once(self, cid: str) -> tuple[str, h.Probe] | None:
        """One probe now, its result kept and a status change recorded; then the
        on-failure action if it turned unhealthy. None: the container is not running
        or has no check."""
        state = self.service.latest(cid)
        if state.state != RUNNING or not h.enabled(state.spec):
            return None
        with self._cond:
            track = self._tracks.get(cid)
        if track is None:
            track = Track(h.Health(status_of(self.service.store, state) or h.STARTING),
                          state.started_at or datetime.now(UTC), -1)
        with track.busy:  # one probe at a time per container
            probe = self.prober.probe(state)
            track.results.append(probe)
            ran = (datetime.now(UTC) - track.started_at).total_seconds()
            done = self.prober.record(cid, track.health, probe,
                                      in_start_period=ran < state.spec.health_start_period)
            if done is None:
                return None
            track.health = done.health
        if done.changed is not None and done.health.status == h.UNHEALTHY:
            try:
                self.prober.act(cid, done.changed)
            except BerthError as exc:
                log.error("health on-failure action for %s failed: %s", cid, exc)
        return done.health.status, probe

    def details(self, cid: str) -> dict[str, Any] | None:
        """What ``inspect`` shows of the check: the streak and the last probes."""
        with self._cond:
            track = self._tracks.get(cid)
        if track is None:
            return None
        return {"failing_streak": track.health.failing_streak,
                "log": [{"exit_code": p.exit_code, "output": p.output, "start": p.started_at,
                         "end": p.ended_at} for p in track.results]}


def with_health(row: dict[str, Any], service: ContainerService, state: ContainerState,
                monitor: HealthMonitor | None, *, details: bool = False) -> dict[str, Any]:
    """A ps or inspect row with the health status (from the log) and, for inspect, the
    last probes this worker ran (from its memory)."""
    status = status_of(service.store, state)
    if status is None:
        return row
    row["health"] = status
    if details:
        shown = monitor.details(state.id) if monitor is not None else None
        row["health_log"] = shown or {"failing_streak": 0, "log": []}
    return row


def healthcheck(monitor: HealthMonitor | None, service: ContainerService,
                ref: str) -> dict[str, Any]:
    """``healthcheck run``: one probe now, on this node's container."""
    cid = service.resolve(ref)
    state = service.latest(cid)
    if not h.enabled(state.spec):
        raise InvalidArgument(f"container {ref} has no health check")
    if state.state != RUNNING:
        raise Refused(f"container {ref} is {state.state}: a health check needs it running")
    if monitor is None:
        raise Unavailable("the health monitor is not running")
    done = monitor.run_once(cid)
    if done is None:
        raise Refused(f"container {ref} stopped during its health check")
    status, probe = done
    return {"id": cid, "node": service.node, "status": status, "exit_code": probe.exit_code,
            "output": probe.output}
