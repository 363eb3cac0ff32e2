"""A writer killed -9 in the middle of appending leaves a consistent SQLite store:
whole commands or nothing, a valid chain, a read model equal to the log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import select

from engine.store.mapper import unpack
from engine.store.schema import commands, events
from engine.store.store import EventStore
from migrations.runner import upgrade

WRITER = """
import sys, uuid
from engine import events as ev
from engine.store.store import EventStore
store = EventStore(sys.argv[1])
spec = ev.RunSpec(rootfs="/r", args=("true",))
n = 0
while True:
    cid = uuid.uuid4().hex
    store.append(cid, 0, [ev.ContainerCreated(f"c{n}", "n", "/b", spec),
                          ev.PidReceived(1, 2), ev.Started()],
                 command_id=uuid.uuid4().hex, command_type="container.run")
    n += 1
"""


def test_kill_minus_nine_mid_append(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, url],
                            cwd=Path(__file__).resolve().parents[2])
    store = EventStore(url)
    try:
        deadline = time.monotonic() + 60
        while store.max_position() < 300:
            assert proc.poll() is None, "writer died on its own"
            assert time.monotonic() < deadline, "writer made no progress"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

        assert store.verify_chain() is None
        assert store.verify_read_model() == []
        last = store.max_position()
        assert last % 3 == 0  # each command wrote 3 events, all or none
        with store._engine.connect() as conn:
            recorded = [p for row in conn.execute(select(commands.c.positions))
                        for p in unpack(row.positions)]
            count = conn.execute(select(events.c.position)).all()
        assert sorted(recorded) == list(range(1, last + 1)) == [r[0] for r in count]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        store.close()
