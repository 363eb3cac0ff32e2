"""What the restart tests read from the log, and how they start a worker that dies."""

from __future__ import annotations

import subprocess

from engine import events as ev
from tests.e2e.conftest import Engine


def stream(engine: Engine, cid: str) -> list[ev.RecordedEvent]:
    store = engine.store()
    try:
        return store.read_stream(cid)
    finally:
        store.close()


def of_type(records: list[ev.RecordedEvent], cls: type[ev.Event]) -> list[ev.RecordedEvent]:
    return [r for r in records if isinstance(r.event, cls)]


def count(engine: Engine, cid: str, cls: type[ev.Event]) -> int:
    return len(of_type(stream(engine, cid), cls))


def armed_worker(engine: Engine, point: str) -> subprocess.Popen[bytes]:
    """A worker process that kills itself -9 at ``point`` (engine.faults)."""
    return engine.start_armed_worker(point)
