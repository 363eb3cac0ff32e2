"""The restart scheduler: one thread that carries out the node's restart policies.

It decides nothing (``engine.restarts.rules`` does, through
``engine.restarts.restarter``): it hears of
exits from the service's committed events, asks the restarter to answer each one, and
keeps the due restarts in one delay queue (``workers.delays``), so a crash-looping
container waiting out its backoff costs a heap entry, not a thread. Questions,
restarts and retries all run on that queue's one thread, one at a time. At start it
asks again about every exited container of the node with a policy: exits recorded
while no worker ran (or just before one died) get their answer, and restarts
recorded but not carried out are finished; both steps are idempotent, so asking
twice does nothing twice.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Sequence

from engine import events as ev
from engine.containers.projection import EXITED
from engine.containers.service import ContainerService
from engine.errors import BerthError
from engine.faults import crash_point
from engine.restarts import rules as r
from engine.restarts.restarter import Due, Restarter, seconds_until
from workers.delays import Delays

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
        self._due = Delays("berth-restarts")
        """Questions (keyed ("ask", id): a pending one is not asked twice), due restarts,
        and containers to ask about again after an error (keyed ("retry", id))."""

    def start(self) -> None:
        """Ask about every exited container of this node with a policy, then follow."""
        for state in self.service.store.list_containers(all=True, node=self.service.node):
            if state.state == EXITED and r.parse_policy(state.spec.restart).name != r.NO:
                self.ask(state.id)
        self._due.start()

    def close(self) -> None:
        self._due.close()

    def observe(self, recorded: Sequence[ev.RecordedEvent]) -> None:
        """An observer of committed events: an exit is a question for the policy."""
        for rec in recorded:
            if isinstance(rec.event, ev.Exited):
                self.ask(rec.metadata.stream)

    def ask(self, container_id: str) -> None:
        self._due.after(0.0, functools.partial(self._answer, container_id),
                        key=("ask", container_id))

    def _schedule(self, due: Due | str, delay: float) -> None:
        if isinstance(due, str):  # ask again after an error
            self._due.after(delay, functools.partial(self._answer, due), key=("retry", due))
        else:
            self._due.after(delay, functools.partial(self._restart, due))

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
