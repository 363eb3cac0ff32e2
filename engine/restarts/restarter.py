"""Carrying out restart policies: the service's writes for ``engine.restarts.rules``' rules.

Two steps, each idempotent on its own, each under the container's lock:

1. ``answer_exit``: judge the last exit by the policy; if it is to be restarted,
   record ``container.restarting`` (intent before action) under a command id derived
   from the exit's position, so a second judgement of the same exit writes nothing.
2. ``restart``: once the delay is over, start the container again as podman does
   (the same id and name; ``runc delete``, conmon and ``runc create`` again, ``runc
   start``) through the container service's ``handle``, as a ``container.start`` under a
   system causation whose id is derived from the ``restarting`` event, so it records
   ``pid_received`` and ``started`` once; only if that restart is still due (not
   removed, not started meanwhile). A worker killed -9 between the two finds the due
   ``restarting`` again (``engine.restarts.rules.history``: no ``started`` after it) and
   finishes it; a worker killed inside step 2 before its record leaves an unrecorded
   runtime container that the next attempt's ``runc delete`` clears first.

When to call them is the worker's business (one scheduler thread: workers/restarts.py).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from engine import commands as c
from engine import events as ev
from engine.containers.projection import EXITED
from engine.containers.service import ContainerService, system_command_id
from engine.errors import BerthError, NotFound, StateUnwritable, StoreError
from engine.restarts import rules as r

log = logging.getLogger("berth.restarts")

RESTART = "container.restart"
"""The command type of the events a restart policy records."""


def stream_items(stream: Iterable[ev.RecordedEvent]) -> list[r.StreamItem]:
    """A container's recorded events as the restart rules read them."""
    items: list[r.StreamItem] = []
    for rec in stream:
        e, m = rec.event, rec.metadata
        if isinstance(e, (ev.Started, ev.Restored)):  # a restore runs it again by hand
            items.append(r.StreamItem(m.position, m.recorded_at, "started"))
        elif isinstance(e, ev.Exited):
            items.append(r.StreamItem(m.position, m.recorded_at, "exited", e.exit_code,
                                      e.reason, e.finished_at))
        elif isinstance(e, ev.StopRequested):
            items.append(r.StreamItem(m.position, m.recorded_at, "stopped"))
        elif isinstance(e, ev.CommandFailed) and e.command_type == RESTART:
            items.append(r.StreamItem(m.position, m.recorded_at, "restart_failed"))
        elif isinstance(e, ev.Restarting):
            items.append(r.StreamItem(m.position, m.recorded_at, "restarting",
                                      exit_position=e.exit_position, attempt=e.attempt,
                                      delay_s=e.delay_s))
    return items


@dataclass(frozen=True, slots=True)
class Due:
    """A restart recorded and due at ``at`` (wall clock)."""

    container_id: str
    restarting_position: int
    at: datetime
    attempt: int


class Restarter:
    """Restart policies for the containers of one node, written through its service."""

    def __init__(self, service: ContainerService) -> None:
        self.service = service

    def policy_of(self, container_id: str) -> r.RestartPolicy | None:
        try:
            state = self.service.latest(container_id)
        except NotFound:
            return None
        if state.removed or state.node != self.service.node:
            return None
        return r.parse_policy(state.spec.restart)

    def answer_exit(self, container_id: str) -> Due | None:
        """Judge the container's last exit; record the restart it calls for. Returns the
        restart due (also one recorded earlier and not carried out), or None."""
        svc = self.service
        with svc.locks.hold(container_id):
            try:
                state = svc.container(container_id)
            except NotFound:
                return None
            policy = r.parse_policy(state.spec.restart)
            records = svc.store.read_stream(container_id)
            seen = r.history(stream_items(records))
            decision = r.decide_restart(policy, seen, exited=state.state == EXITED)
            if decision.verdict is r.Verdict.NO:
                return None
            if decision.verdict is r.Verdict.CARRY_OUT:
                pending = seen.pending
                if pending is None:  # pragma: no cover - decide_restart's contract
                    return None
                return Due(container_id, pending.position,
                           _after(pending.recorded_at, pending.delay_s), pending.attempt)
            code = seen.last_exit.exit_code if seen.last_exit else -1
            intent = ev.Restarting(decision.attempt, decision.delay_s,
                                   decision.exit_position, code, str(policy))
            recorded = svc.append(container_id, state.version, [intent],
                                  system=(container_id, "restarting", decision.exit_position),
                                  system_type=RESTART)
        meta = recorded[0].metadata  # a second record of one exit returns the first
        log.info("container %s exited (%d): restart %d in %.1fs (%s)", container_id, code,
                 decision.attempt, decision.delay_s, policy)
        return Due(container_id, meta.position, _after(meta.recorded_at, decision.delay_s),
                   decision.attempt)

    def restart(self, due: Due) -> list[ev.RecordedEvent]:
        """Start the container again if the restart ``due`` names is still due."""
        svc, cid = self.service, due.container_id
        with svc.locks.hold(cid):
            try:
                state = svc.container(cid)
            except NotFound:
                return []
            seen = r.history(stream_items(svc.store.read_stream(cid)))
            if (state.state != EXITED or seen.pending is None
                    or seen.pending.position != due.restarting_position):
                return []
            # The service's own start of an exited container, as a command no one sent:
            # runc delete (a crashed attempt's container), the image's overlay mounted
            # again, conmon and runc create, runc start; pid_received and started.
            causation = c.Causation(system_command_id(cid, "restart", due.restarting_position),
                                    "", svc.system_actor, RESTART)
            try:
                outcome = svc.handle(c.Start(cid), causation)
            except (StoreError, StateUnwritable):
                raise
            except BerthError as exc:
                return self._failed(cid, due, exc)
            return list(outcome.recorded)

    def _failed(self, cid: str, due: Due, exc: BerthError) -> list[ev.RecordedEvent]:
        """The runtime refused the restart: leave no half-made container, and close the
        restart with ``command.failed`` so it is not tried again (held by the lock)."""
        svc = self.service
        log.error("restart %d of %s failed, not retried: %s", due.attempt, cid, exc)
        with contextlib.suppress(BerthError):
            svc.runtime.delete(cid, force=True)
        with contextlib.suppress(BerthError):  # the network its create joined, if it did
            svc.release_network(cid)
        recorded = svc.store.record_failure(
            system_command_id(cid, "restart", due.restarting_position), RESTART, cid,
            exc.code, f"restart {due.attempt} failed: {exc.message}", actor=svc.system_actor,
            node=svc.node)
        svc.forget(cid)
        svc.announce(recorded)
        return list(recorded)


def _after(at: datetime, seconds: float) -> datetime:
    return at + timedelta(seconds=seconds)


def seconds_until(at: datetime) -> float:
    return max(0.0, (at - datetime.now(UTC)).total_seconds())
