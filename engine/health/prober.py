"""Carrying out health checks: a probe as an exec session, a status change as an event.

``probe`` runs the check once as an exec session of the container's runtime (conmon +
``runc exec``, engine/runtime/execs.py), bounded by the check's timeout; the session is
not recorded (a probe every few seconds would bury the log) and its files are pruned
like any ended session's. ``record`` applies ``engine.health.rules.after_probe`` and appends
``container.health_status`` only when the status changes, under the container's lock
and only while the log has it running. ``act`` carries out ``--health-on-failure``
through the service's own commands (kill; stop then start), under command ids derived
from the unhealthy event, so a retry does not repeat them.

The status shown (``status_of``) is read from the log: the last recorded change since
the container's last start, else ``starting``.
"""

from __future__ import annotations

import logging
import os
import signal
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from engine import commands as c
from engine import events as ev
from engine.containers.projection import RUNNING, ContainerState
from engine.containers.service import KEEP_EXEC_SESSIONS, ContainerService, system_command_id
from engine.errors import BerthError, NotFound, Timeout
from engine.health import rules as h
from engine.runtime.waits import pid_alive
from engine.store.store import EventStore

log = logging.getLogger("berth.health")

ON_FAILURE_STOP_S = 1.0
"""The grace period of ``--health-on-failure restart``'s stop: an unhealthy container
is not trusted to shut down cleanly, so it is not waited for long."""


def status_of(store: EventStore, state: ContainerState) -> str | None:
    """The container's health as the log says (None: no check, or not running)."""
    if not h.enabled(state.spec) or state.state != RUNNING or state.started_at is None:
        return None
    last = store.query(state.id, [ev.CONTAINER_HEALTH_STATUS], since=state.started_at,
                       newest_first=True, limit=1)
    if last and isinstance(last[0].event, ev.HealthStatus):
        return last[0].event.status
    return h.STARTING


def condition_met(store: EventStore, state: ContainerState, condition: str) -> bool:
    """``wait --condition``: running, or healthy (as ``status_of`` reads it)."""
    if condition == "running":
        return state.state == RUNNING
    return status_of(store, state) == h.HEALTHY


@dataclass(frozen=True, slots=True)
class Recorded:
    health: h.Health
    changed: ev.RecordedEvent | None


class Prober:
    def __init__(self, service: ContainerService) -> None:
        self.service = service

    def probe(self, state: ContainerState) -> h.Probe:
        """Run the check once in the container; a probe that outlives the timeout is
        killed and counts as failed (-1), as Docker counts it."""
        rt, spec = self.service.runtime, state.spec
        session = f"health-{uuid.uuid4().hex[:16]}"
        begun = datetime.now(UTC).isoformat()
        try:
            pid = rt.exec_start(state.id, spec.health_cmd, session_id=session,
                                no_new_privileges=spec.no_new_privileges)
            try:
                result = rt.exec_wait(state.id, session, timeout=spec.health_timeout)
                code, output = result.exit_code, h.tail(result.output)
            except Timeout:
                if pid and pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)
                code = -1
                output = f"health check exceeded its timeout ({spec.health_timeout:g}s)"
        except BerthError as exc:
            code, output = -1, f"health check could not run: {exc.message}"
        finally:
            rt.exec_prune(state.id, KEEP_EXEC_SESSIONS)
        return h.Probe(code, output, begun, datetime.now(UTC).isoformat())

    def record(self, container_id: str, current: h.Health, probe: h.Probe, *,
               in_start_period: bool) -> Recorded | None:
        """The status after ``probe``; its change recorded. None: the container is not
        running any more (the probe's result is moot)."""
        svc = self.service
        with svc.locks.hold(container_id):
            try:
                state = svc.container(container_id)
            except NotFound:
                return None
            if state.state != RUNNING:
                return None
            after = h.after_probe(state.spec, current, probe, in_start_period=in_start_period)
            if after.status == current.status:
                return Recorded(after, None)
            event = ev.HealthStatus(after.status, probe.exit_code, probe.output,
                                    after.failing_streak)
            recorded = svc.append(container_id, state.version, [event],
                                  system=(container_id, "health", state.version),
                                  system_type="container.health")
        log.info("container %s is %s (probe exit %d)", container_id, after.status,
                 probe.exit_code)
        return Recorded(after, recorded[0])

    def act(self, container_id: str, unhealthy: ev.RecordedEvent) -> None:
        """``--health-on-failure``: kill, stop, or restart (stop, then start), the
        container that just turned unhealthy."""
        svc = self.service
        try:
            state = svc.latest(container_id)
        except NotFound:
            return
        action = state.spec.health_on_failure
        if action == "none":
            return
        base = unhealthy.metadata.causation_id

        def cause(step: str, command_type: str) -> c.Causation:
            return c.Causation(system_command_id(base, step), base, svc.system_actor,
                               command_type)

        log.warning("container %s is unhealthy: health on-failure %s", container_id, action)
        if action == "kill":
            svc.handle(c.Kill(container_id, int(signal.SIGKILL)), cause("kill", "container.kill"))
            return
        svc.handle(c.Stop(container_id, timeout=ON_FAILURE_STOP_S), cause("stop", "container.stop"))
        if action == "stop":
            return
        svc.handle(c.Start(container_id), cause("start", "container.start"))
