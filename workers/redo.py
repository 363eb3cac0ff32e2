"""Finishing a command whose earlier attempt acted but died before recording.

A worker killed -9 between a runtime call (``runc start``, ``pause``, ``resume``)
and the append that records it leaves the log one step behind reality. The
publisher then resends the command (same id); the new worker finds no outcome,
runs the call again, and runc refuses ("already running", "not running"). If the
container is already where the command wanted it, the command did happen: record
it now instead of failing, so the log catches up with reality.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from engine.errors import BerthError
from engine.runtime import Status
from workers.context import WorkerContext

log = logging.getLogger("berth.redo")


def act_unless_done(ctx: WorkerContext, container_id: str, action: Callable[[str], object],
                    reached: Status) -> None:
    """Run ``action``; if it fails but runc already reports ``reached``, carry on."""
    try:
        action(container_id)
    except BerthError as exc:
        try:
            status = ctx.runtime.status(container_id, known_stopped=True).status
        except BerthError:
            raise exc from None
        if status != reached:
            raise
        log.warning("container %s is already %s (an earlier attempt did it): recording it",
                    container_id, reached)
