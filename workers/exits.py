"""Turning conmon's exit files into ``container.exited`` events.

Three paths reach ``record_exit``: the inotify monitor (the usual one), a
handler that caused the exit (stop, checkpoint, remove -f) and start-up
reconciliation. Under the container's lock, only a container the log still
thinks is alive gets an exit, so whichever path comes second writes nothing.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from engine import events as ev
from engine.errors import BerthError, NotFound
from engine.ids import validate_container_id
from engine.projection import CREATED, PAUSED, RUNNING, ContainerState
from engine.runtime.exitfile import ExitStatus, wait_exit_file
from workers.context import WorkerContext, system_command_id
from workers.inotify import Inotify

log = logging.getLogger("berth.exits")
ALIVE = (CREATED, RUNNING, PAUSED)


def exit_reason(ctx: WorkerContext, state: ContainerState, code: int) -> tuple[str, bool]:
    """Why the container ended, judged from its stream since it last (re)started."""
    if code < 0:
        return "unknown", False
    asked: str | None = None
    for r in ctx.store.read_stream(state.id):
        e = r.event
        if isinstance(e, (ev.Started, ev.Restored, ev.PidReceived)):
            asked = None
        elif isinstance(e, (ev.StopRequested, ev.Signalled)):
            asked = "stop"
        elif isinstance(e, ev.Checkpointed) and not e.leave_running:
            asked = "checkpoint"
    if asked is not None:
        return asked, True
    return ("exit" if code == 0 else "crash"), False


def record_exit(
    ctx: WorkerContext,
    container_id: str,
    *,
    status: ExitStatus | None = None,
    wait: bool = False,
    reason: str | None = None,
) -> list[ev.RecordedEvent]:
    """Append the container's exit if the log still has it alive; return what was written.

    ``reason`` overrides the reason judged from the stream (for exits the caller
    knows more about, such as a lost conmon)."""
    with ctx.locks.hold(container_id):
        try:
            state = ctx.container(container_id)
        except NotFound:
            return []
        if state.state not in ALIVE:
            return []
        if status is None:
            status = ctx.runtime.exit_status(container_id)
            if status is None and wait:
                status = wait_exit_file(ctx.runtime.paths(container_id).exit_file, first_wait=0.05, steps=8)
            if status is None:
                return []
        judged, expected = exit_reason(ctx, state, status.exit_code)
        reason = reason or judged
        recorded = ctx.append(
            container_id,
            state.version,
            [ev.Exited(status.exit_code, status.finished_at, expected, reason)],
            command_id=system_command_id(container_id, "exit", state.version),
            command_type="container.exit",
        )
    if state.spec.auto_remove:
        recorded += auto_remove(ctx, container_id)
    return recorded


def auto_remove(ctx: WorkerContext, container_id: str) -> list[ev.RecordedEvent]:
    """``--rm``: delete the runtime container and its files, then record the removal."""
    with ctx.locks.hold(container_id):
        try:
            state = ctx.container(container_id)
        except NotFound:
            return []
        if state.state in ALIVE or state.removed:
            return []
        try:
            ctx.runtime.delete(container_id, force=True)
        except NotFound:
            pass
        ctx.runtime.cleanup(container_id)
        return ctx.append(
            container_id,
            state.version,
            [ev.Removed()],
            command_id=system_command_id(container_id, "auto-remove", state.version),
            command_type="container.remove",
        )


def record_lost(ctx: WorkerContext, container_id: str, reason: str = "unknown") -> list[ev.RecordedEvent]:
    """The runtime no longer knows a container the log has alive and no exit file exists."""
    status = ExitStatus(-1, datetime.now(UTC))
    return record_exit(ctx, container_id, status=status, reason=reason)


class ExitMonitor:
    """Watches the exits directory with inotify and records each exit as it lands."""

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self._inotify = Inotify(ctx.runtime.config.exits_dir)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="berth-exit-monitor", daemon=True)
        self.recorded = 0

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for name in self._inotify.read(0.5):
                    self._handle(name)
            except Exception:
                log.exception("exit monitor iteration failed")

    def _handle(self, name: str) -> None:
        try:
            validate_container_id(name)
        except BerthError:
            return
        try:
            self.recorded += len(record_exit(self.ctx, name))
        except BerthError as exc:
            log.error("could not record the exit of %s: %s", name, exc)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._inotify.close()
