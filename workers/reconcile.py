"""Start-up reconciliation: append what happened while no worker was watching.

conmon outlives the worker, so containers keep running and their exit files
keep landing while the worker is down. For every container of this node that
the log has alive, compare with the exit file and runc, and record what was
missed; then finish ``--rm`` removals that were due.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from engine.errors import BerthError, NotFound
from engine.projection import EXITED
from engine.runtime import Status
from workers.conmon_watch import conmon_alive, settle_conmon_gone
from workers.context import WorkerContext
from workers.exits import ALIVE, auto_remove, record_exit, record_lost
from workers.orphans import remove_orphans

log = logging.getLogger("berth.reconcile")


@dataclass
class Reconciled:
    checked: int = 0
    exits: int = 0
    lost: int = 0
    removed: int = 0
    orphans: int = 0


def reconcile(ctx: WorkerContext) -> Reconciled:
    report = Reconciled()
    for state in ctx.store.list_containers(all=True, node=ctx.node):
        report.checked += 1
        try:
            if state.state in ALIVE:
                if ctx.runtime.exit_status(state.id) is not None:
                    report.exits += bool(record_exit(ctx, state.id))
                    continue
                if state.conmon_pid and not conmon_alive(state.conmon_pid, state.id):
                    # conmon died with no exit file: no one would ever report this
                    # container's exit, so settle it now (killing it if it runs).
                    report.lost += bool(settle_conmon_gone(ctx, state.id, state.conmon_pid))
                    continue
                try:
                    status = ctx.runtime.status(state.id)
                except NotFound:
                    status = None
                if status is None or status.status in (Status.EXITED, Status.STOPPED):
                    if status is not None and status.exit_code is not None and status.exit_code >= 0:
                        report.exits += bool(record_exit(ctx, state.id, wait=True))
                    else:
                        report.lost += bool(record_lost(ctx, state.id))
            elif state.state == EXITED and state.spec.auto_remove:
                report.removed += bool(auto_remove(ctx, state.id))
        except BerthError as exc:
            log.error("reconciling %s failed: %s", state.id, exc)
    report.orphans = remove_orphans(ctx)
    return report
