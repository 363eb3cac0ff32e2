"""What the restart tests read from the log, and how they start a worker that dies."""

from __future__ import annotations

import os
import subprocess
import sys

from engine import events as ev
from engine.faults import ARMED_ENV, POINTS_ENV, arming_text
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
    path = os.path.join(os.path.dirname(engine.root), "faults.armed")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(arming_text(point))
    env = dict(engine.env, **{POINTS_ENV: point, ARMED_ENV: os.path.realpath(path)})
    engine.worker_proc = subprocess.Popen(
        [sys.executable, "-m", "berth", "worker", "--node", "local",
         "--connect", engine.endpoints.backend],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return engine.worker_proc
