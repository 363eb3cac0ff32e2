"""The restart scheduler: one thread that carries out the node's restart policies.

It decides nothing (``engine.restarts.rules`` does, through
``engine.restarts.restarter``): it hears of
exits from the service's committed events, asks the restarter to answer each one, and
keeps the due restarts in one heap, so a crash-looping container waiting out its
backoff costs a heap entry, not a thread. At start it asks again about every exited
container of the node with a policy: exits recorded while no worker ran (or just
before one died) get their answer, and restarts recorded but not carried out are
finished; both steps are idempotent, so asking twice does nothing twice.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Sequence

from engine import events as ev
from engine.containers.projection import EXITED
from engine.containers.service import ContainerService
from engine.errors import BerthError
from engine.faults import crash_point
from engine.restarts import rules as r
from engine.restarts.restarter import Due, Restarter, seconds_until

log = logging.getLogger("berth.restarts")

RETRY_S = 1.0
"""After a store or runtime error, the same container is asked about again this late."""


class RestartScheduler:
    def __init__(self, service: ContainerService) -> None:
        self.service = service
        self.restarter = Restarter(service)
        self.restarted = 0
        self.called_off = 0
        """Restarts that were no longer due when their time came (stopped, removed)."""
        self.judged: dict[str, int] = {}
        """How many times each container's exits were judged (what tests wait on)."""
        self._cond = threading.Condition()
        self._asks: list[str] = []
        self._heap: list[tuple[float, int, Due | str]] = []
        """Due restarts, and containers to ask about again after an error (by id)."""
        self._seq = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="berth-restarts", daemon=True)

    def start(self) -> None:
        """Ask about every exited container of this node with a policy, then follow."""
        for state in self.service.store.list_containers(all=True, node=self.service.node):
            if state.state == EXITED and r.parse_policy(state.spec.restart).name != r.NO:
                self.ask(state.id)
        self._thread.start()

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(10)

    def observe(self, recorded: Sequence[ev.RecordedEvent]) -> None:
        """An observer of committed events: an exit is a question for the policy."""
        for rec in recorded:
            if isinstance(rec.event, ev.Exited):
                self.ask(rec.metadata.stream)

    def ask(self, container_id: str) -> None:
        with self._cond:
            self._asks.append(container_id)
            self._cond.notify_all()

    def _schedule(self, due: Due | str, delay: float) -> None:
        with self._cond:
            self._seq += 1
            heapq.heappush(self._heap, (time.monotonic() + delay, self._seq, due))
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and not self._asks and not self._ready():
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(wait)
                if self._stop:
                    return
                asks, self._asks = self._asks, []
                ready: list[Due] = []
                while self._ready():
                    item = heapq.heappop(self._heap)[2]
                    if isinstance(item, str):
                        asks.append(item)
                    else:
                        ready.append(item)
            for cid in dict.fromkeys(asks):
                self._answer(cid)
            for due in ready:
                self._restart(due)

    def _ready(self) -> bool:
        return bool(self._heap) and self._heap[0][0] <= time.monotonic()

    def _answer(self, cid: str) -> None:
        try:
            crash_point("container.restart.deciding")
            due = self.restarter.answer_exit(cid)
        except BerthError as exc:
            log.error("could not judge the exit of %s by its restart policy: %s", cid, exc)
            self._schedule(cid, RETRY_S)
            return
        with self._cond:
            self.judged[cid] = self.judged.get(cid, 0) + 1
        if due is not None:
            crash_point("container.restart.intended")
            self._schedule(due, seconds_until(due.at))

    def _restart(self, due: Due) -> None:
        try:
            recorded = self.restarter.restart(due)
        except BerthError as exc:
            log.error("restart %d of %s failed: %s", due.attempt, due.container_id, exc)
            self._schedule(due.container_id, RETRY_S)
            return
        if any(isinstance(rec.event, ev.Started) for rec in recorded):
            self.restarted += 1
            log.info("restarted %s (restart %d)", due.container_id, due.attempt)
        elif not recorded:
            self.called_off += 1
