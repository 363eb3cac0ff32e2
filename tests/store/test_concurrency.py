"""Concurrent writers: one winner per stream version, and a log readers never see
with holes (guarantees 3 and 4 of the design)."""

from __future__ import annotations

import threading
import uuid

from engine import events as ev
from engine.errors import ConcurrencyError
from engine.store.store import EventStore
from migrations.runner import upgrade
from tests.store.helpers import create

WRITERS = 4
PER_WRITER = 60


def test_one_winner_per_stream_version(store: EventStore) -> None:
    cid = create(store)
    barrier = threading.Barrier(WRITERS)
    outcomes: list[str] = []
    lock = threading.Lock()

    def contender(n: int) -> None:
        barrier.wait(timeout=10)
        try:
            store.append(cid, 1, [ev.Signalled(n + 1)], command_id=uuid.uuid4().hex,
                         command_type="container.kill")
            result = "ok"
        except ConcurrencyError:
            result = "conflict"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=contender, args=(n,)) for n in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(outcomes) == ["conflict"] * (WRITERS - 1) + ["ok"]
    assert [r.metadata.stream_version for r in store.read_stream(cid)] == [1, 2]


def test_reader_by_position_never_skips(db_url: str) -> None:
    """Writers on separate connections; a reader polls read_all(last + 1) throughout
    and must see every position exactly once and in order."""
    upgrade(db_url)
    store = EventStore(db_url)
    writer_stores = [EventStore(db_url) for _ in range(WRITERS)]
    total = WRITERS * PER_WRITER
    done = threading.Event()
    errors: list[Exception] = []
    seen: list[int] = []

    def writer(n: int) -> None:
        s = writer_stores[n]
        try:
            cid = f"w{n}-{uuid.uuid4().hex}"
            s.append(cid, 0, [ev.ContainerCreated(f"w{n}", "n", "/b", _spec())],
                     command_id=uuid.uuid4().hex, command_type="container.create")
            for i in range(1, PER_WRITER):
                s.append(cid, i, [ev.Signalled(1)], command_id=uuid.uuid4().hex,
                         command_type="container.kill")
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    def reader() -> None:
        last = 0
        try:
            while len(seen) < total:
                batch = store.read_all(last + 1, limit=50)
                for r in batch:
                    assert r.position == last + 1, f"skipped from {last} to {r.position}"
                    last = r.position
                    seen.append(last)
                if not batch and done.is_set() and store.max_position() == last:
                    break
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    read_thread = threading.Thread(target=reader)
    read_thread.start()
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    done.set()
    read_thread.join(timeout=60)
    for s in [store, *writer_stores]:
        s.close()
    assert not errors, errors
    assert seen == list(range(1, total + 1))


def _spec() -> ev.RunSpec:
    return ev.RunSpec(rootfs="/r", args=("true",))
