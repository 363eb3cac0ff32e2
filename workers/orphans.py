"""Runtime containers the log never heard of.

``container.create`` spawns conmon and the container first and appends
``container.created`` after. A worker killed -9 in between leaves a created
runc container, a conmon and a bundle that no event names; the publisher's
resend then creates another container (under a new id). Nobody could ever start,
stop or remove the first one through berth, so start-up reconciliation deletes it.
"""

from __future__ import annotations

import logging
import os

from engine.errors import BerthError, NotFound
from engine.ids import validate_container_id
from workers.context import WorkerContext

log = logging.getLogger("berth.orphans")


def remove_orphans(ctx: WorkerContext) -> int:
    """Delete this node's runtime containers that have no stream in the log.

    Runs before the worker takes commands, so no create is half-way through.
    """
    base = os.path.join(ctx.runtime.config.state_dir, "containers")
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        return 0
    removed = 0
    for name in names:
        try:
            cid = validate_container_id(name)
            ctx.store.get_container(cid, include_removed=True)
            continue
        except NotFound:
            pass
        except BerthError:
            continue  # not a container id, or the store cannot say: leave it alone
        try:
            ctx.runtime.delete(cid, force=True)
        except BerthError as exc:
            log.debug("runc delete of orphan %s: %s", cid, exc)
        ctx.runtime.cleanup(cid)
        log.warning("removed container %s: created by a worker that died before recording it", cid)
        removed += 1
    return removed
