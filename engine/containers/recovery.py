"""Recovery: what happened while no worker watched, and deaths nobody reports.

Start-up reconciliation compares the log with what the runtime says now (exit files
that landed, conmons that died, containers runc lost, ``--rm`` removals that were
due, interrupted checkpoints and exec sessions, runtime containers no event names);
the conmon watcher settles a conmon that dies under a live container. The rules are
``engine.containers.decide``'s (``reconcile``, ``conmon_gone``); every write goes through the
service, the one writer of the node's streams.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from engine import events as ev
from engine.containers import decide as d
from engine.containers.projection import ALIVE, ContainerState
from engine.containers.service import ContainerService
from engine.errors import BerthError, NotFound, RuntimeFailure
from engine.ids import validate_container_id
from engine.runtime.waits import wait_pids_exit

log = logging.getLogger("berth.recovery")

KILL_WAIT_S = 10.0


@dataclass
class Reconciled:
    checked: int = 0
    exits: int = 0
    lost: int = 0
    removed: int = 0
    orphans: int = 0
    checkpoints: int = 0
    execs: int = 0
    networks: int = 0
    """Releases of ended containers' networks recorded here (their exit was recorded
    by a worker that died before the release)."""
    running_execs: list[tuple[str, str]] = field(default_factory=list)
    """Exec sessions that outlived their worker and still run: the worker waits for them
    (``finish_exec``)."""


def reconcile(service: ContainerService) -> Reconciled:
    """Append what happened while no worker was watching: exits whose files landed,
    conmons that died, containers runc lost, ``--rm`` removals that were due, networks
    that ended containers still held; then
    delete runtime containers the log never heard of. Runs before the worker takes
    commands, so no create is half-way through."""
    report = Reconciled()
    for state in service.store.list_containers(all=True, node=service.node):
        report.checked += 1
        try:
            _reconcile_one(service, state, report)
        except BerthError as exc:
            log.error("reconciling %s failed: %s", state.id, exc)
    report.orphans = remove_orphans(service)
    return report


def _reconcile_one(service: ContainerService, state: ContainerState, report: Reconciled) -> None:
    rt, cid = service.runtime, state.id
    if state.state in ALIVE and service.settle_checkpoint(cid):
        report.checkpoints += 1
        state = service.latest(cid)
    if state.state in ALIVE and state.exec_sessions:
        settled, running = service.settle_execs(state)
        report.execs += settled
        report.running_execs += [(cid, session) for session in running]
        state = service.latest(cid)
    has_exit = rt.exit_status(cid) is not None
    conmon = bool(state.conmon_pid) and rt.conmon_alive(state.conmon_pid, cid)
    status = None
    if d.needs_runtime_status(state, has_exit_file=has_exit, conmon_alive=conmon):
        try:
            status = rt.status(cid)
        except NotFound:
            status = None
    match d.reconcile(state, has_exit_file=has_exit, conmon_alive=conmon, status=status):
        case d.Reconcile.RECORD_EXIT:
            report.exits += bool(service.record_exit(cid))
        case d.Reconcile.WAIT_EXIT:
            report.exits += bool(service.record_exit(cid, wait=True))
        case d.Reconcile.SETTLE_CONMON:
            report.lost += bool(settle_conmon_gone(service, cid, state.conmon_pid))
        case d.Reconcile.LOSE:
            report.lost += bool(service.record_lost(cid))
        case d.Reconcile.AUTO_REMOVE:
            report.removed += bool(service.auto_remove(cid))
        case d.Reconcile.NOTHING:
            pass
    # An exit recorded by a worker that died before it gave the network back: the
    # release is finished now (once recorded; nothing if it was done).
    if service.release_network(cid):
        report.networks += 1


def settle_conmon_gone(service: ContainerService, container_id: str,
                       conmon_pid: int | None) -> list[ev.RecordedEvent]:
    """Record what became of a container whose conmon (``conmon_pid``) is gone."""
    with service.locks.hold(container_id):
        try:
            state = service.container(container_id)
        except NotFound:
            return []
        has_exit = service.runtime.exit_status(container_id) is not None
        decision = d.conmon_gone(state, conmon_pid, has_exit,
                                 not has_exit and service.process_alive(container_id))
        if decision is d.ConmonGone.NOTHING:
            return []
        if decision is d.ConmonGone.RECORD_EXIT:
            return service.record_exit(container_id)
        recorded: list[ev.RecordedEvent] = []
        if decision is d.ConmonGone.KILL_AND_LOSE:
            _kill_unsupervised(service, container_id, state)
            recorded += service.append(
                container_id, state.version, [ev.Signalled(d.CONMON_LOST_SIGNAL)],
                system=(container_id, "conmon-lost-kill", state.version),
                system_type="container.kill")
            log.warning("conmon of container %s died; killed the unsupervised container",
                        container_id)
        else:
            log.warning("conmon of container %s died and the container is gone",
                        container_id)
        recorded += service.record_lost(container_id, reason="conmon_lost")
        return recorded


def _kill_unsupervised(service: ContainerService, container_id: str, state: ContainerState) -> None:
    """Kill every process of the container and make runc forget it; raise if it
    lives on (a frozen process cannot die of SIGKILL, so thaw it first)."""
    rt = service.runtime
    if state.paused:
        try:
            rt.unpause(container_id)
        except BerthError as exc:
            log.warning("could not thaw %s before killing it: %s", container_id, exc)
    try:
        rt.kill(container_id, d.CONMON_LOST_SIGNAL, all_processes=True)
    except BerthError:
        if service.process_alive(container_id):
            raise
    if state.pid and not wait_pids_exit([state.pid], KILL_WAIT_S):
        raise RuntimeFailure(f"container {container_id} survived SIGKILL after its "
                             "conmon died")
    try:
        rt.delete(container_id, force=True)
    except BerthError as exc:
        if service.process_alive(container_id):
            raise
        log.debug("runc delete of %s after conmon loss: %s", container_id, exc)


def remove_orphans(service: ContainerService) -> int:
    """Delete this node's runtime containers that have no stream in the log.

    ``create`` spawns conmon and the container first and appends ``created`` after;
    a worker killed -9 in between leaves a container no event names, which nobody
    could ever start, stop or remove through berth.
    """
    removed = 0
    for name in service.runtime.container_ids():
        try:
            cid = validate_container_id(name)
            service.store.get_container(cid, include_removed=True)
            continue
        except NotFound:
            pass
        except BerthError:
            continue  # not a container id, or the store cannot say: leave it alone
        service.discard(cid)
        log.warning("removed container %s: created by a worker that died before "
                    "recording it", cid)
        removed += 1
    return removed
