"""Event store benchmarks: append throughput, replay cost, and read flatness.

    .venv/bin/python -m bench.store_bench            # full: a 1,000,000-event log
    .venv/bin/python -m bench.store_bench --quick    # a minute or so, for development
    .venv/bin/python -m bench.store_bench --events 200000 --no-pg

The machine is shared and small (2 cores), so the numbers that mean something are the
ratios measured within one run, not the absolute rates. PostgreSQL is a private,
durable (fsync on) server started by tests/pgserver.py unless BERTH_PG_HOST is set.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import msgpack  # type: ignore[import-untyped]

from engine import events as ev
from engine.projection import fold
from engine.store import AppendRequest, EventStore
from engine.store.mapper import Mapper
from migrations.runner import upgrade

SPEC = ev.RunSpec(rootfs="/var/lib/berth/rootfs/alpine", args=("sleep", "infinity"),
                  env=("PATH=/usr/bin:/bin", "TERM=xterm"))
LIVE = 50            # long-lived containers: what ps shows, whatever the log size
LIVE_HISTORY = 10    # events in each live container's stream
CHURN_EVENTS = 5     # create, pid, start, exit, remove: a --rm run


def _cid() -> str:
    return uuid.uuid4().hex * 2


def _migrated(url: str) -> EventStore:
    upgrade(url)
    return EventStore(url)


# -- append -------------------------------------------------------------------------

def _append_rate(url: str, writers: int, commands: int, per_command: int,
                 total: int) -> float:
    """Events/s with ``writers`` threads, each with its own store (own connections).

    A transaction carries ``commands`` commands (append_batch when more than one),
    each appending ``per_command`` events to one of its writer's container streams.
    """
    upgrade(url)
    stores = [EventStore(url) for _ in range(writers)]
    per_tx = commands * per_command
    rounds = max(1, total // writers // per_tx)
    barrier = threading.Barrier(writers + 1)
    errors: list[Exception] = []

    def work(n: int) -> None:
        store = stores[n]
        streams: list[tuple[str, int]] = []
        for _ in range(commands):
            cid = _cid()
            store.append(cid, 0, [ev.ContainerCreated(f"w{n}-{cid[:12]}", "n", "/b", SPEC)],
                         command_id=uuid.uuid4().hex, command_type="container.create")
            streams.append((cid, 1))
        payload = (ev.Signalled(1),) * per_command
        barrier.wait()
        try:
            for _ in range(rounds):
                if commands == 1:
                    cid, version = streams[0]
                    store.append(cid, version, payload, command_id=uuid.uuid4().hex,
                                 command_type="container.kill", actor="bench", node="n")
                else:
                    store.append_batch([
                        AppendRequest(cid, v, payload, uuid.uuid4().hex, "container.kill",
                                      "", "bench", "n") for cid, v in streams])
                streams = [(cid, v + per_command) for cid, v in streams]
        except Exception as exc:  # noqa: BLE001 - re-raised by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    for s in stores:
        s.close()
    if errors:
        raise errors[0]
    return rounds * per_tx * writers / elapsed


# -- populating a big log -------------------------------------------------------------

def populate(store: EventStore, events: int) -> str:
    """LIVE long-lived containers, then --rm churn up to ``events``. Returns the id of
    a live container whose history the flatness test reads."""
    live_ids = [_cid() for _ in range(LIVE)]
    requests = []
    for n, cid in enumerate(live_ids):
        history: list[ev.Event] = [ev.ContainerCreated(f"live{n}", "n1", "/b", SPEC),
                                   ev.PidReceived(100 + n, 99 + n), ev.Started()]
        history += [ev.Signalled(10)] * (LIVE_HISTORY - len(history))
        requests.append(AppendRequest(cid, 0, tuple(history), uuid.uuid4().hex, "setup"))
    store.append_batch(requests)
    written = LIVE * LIVE_HISTORY
    churn = 0
    while written < events:
        requests = []
        while written < events and len(requests) < 200:
            cid = _cid()
            churn += 1
            requests.append(AppendRequest(cid, 0, (
                ev.ContainerCreated(f"job{churn}", "n1", "/b", SPEC),
                ev.PidReceived(1000, 999), ev.Started(),
                ev.Exited(0, None, False, "exit"), ev.Removed(),
            ), uuid.uuid4().hex, "run --rm"))
            written += CHURN_EVENTS
        store.append_batch(requests)
    return live_ids[0]


# -- replay -------------------------------------------------------------------------

def _timed(fn: Callable[[], int]) -> tuple[int, float]:
    t = time.perf_counter()
    n = fn()
    return n, time.perf_counter() - t


def replay(store: EventStore, repeats: int) -> tuple[int, float, float, float]:
    """(events, raw decode s, typed decode s, decode + fold s), all reading the same
    pages from the database, so the ratios isolate what typing and folding add. The
    passes are interleaved and each keeps its best time: on a shared machine that is
    the least noisy estimate of its own cost."""
    unpack = msgpack.unpackb
    decode = Mapper().from_values

    def raw() -> int:
        n = 0
        for rows in store.reader.iter_rows(page=10_000):
            for row in rows:
                unpack(row[5], raw=False)
            n += len(rows)
        return n

    def typed() -> int:
        n = 0
        for rows in store.reader.iter_rows(page=10_000):
            for row in rows:
                decode(row)
            n += len(rows)
        return n

    def folded() -> int:
        states = fold(decode(row) for rows in store.reader.iter_rows(page=10_000)
                      for row in rows)
        assert sum(1 for s in states.values() if not s.removed) == LIVE
        return len(states)

    best = {"raw": float("inf"), "typed": float("inf"), "fold": float("inf")}
    n = 0
    for _ in range(repeats):
        for name, fn in (("raw", raw), ("typed", typed), ("fold", folded)):
            count, took = _timed(fn)
            if name == "raw":
                n = count
            best[name] = min(best[name], took)
    return n, best["raw"], best["typed"], best["fold"]


# -- flatness -----------------------------------------------------------------------

def _median_ms(fn: Callable[[], object], reps: int) -> float:
    fn()
    samples = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1000


def flatness(small: EventStore, small_id: str, big: EventStore, big_id: str,
             reps: int) -> list[tuple[str, float, float]]:
    out = []
    for label, make in (
        ("ps -a (live containers)", lambda s, c: lambda: s.list_containers(all=True)),
        ("ps (running only)", lambda s, c: lambda: s.list_containers()),
        ("one container's history", lambda s, c: lambda: s.read_stream(c)),
        ("resolve by name", lambda s, c: lambda: s.resolve("live7")),
    ):
        a = _median_ms(make(small, small_id), reps)
        b = _median_ms(make(big, big_id), reps)
        out.append((label, a, b))
    assert len(small.list_containers(all=True)) == len(big.list_containers(all=True)) == LIVE
    return out


# -- driver -------------------------------------------------------------------------

@contextmanager
def _postgres(enabled: bool) -> Iterator[Callable[[], str] | None]:
    if not enabled:
        yield None
        return
    from tests import pgserver

    with pgserver.pg_server(durable=True) as server:
        created: list[str] = []

        def fresh() -> str:
            name = server.create_database("berth_bench")
            created.append(name)
            return server.url(name)

        try:
            yield fresh
        finally:
            for name in created:
                server.drop_database(name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000,
                        help="size of the big log for replay and flatness")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes (50,000-event log, short append runs)")
    parser.add_argument("--no-pg", action="store_true", help="skip PostgreSQL")
    args = parser.parse_args(argv)
    big_events = 50_000 if args.quick else args.events
    single_total = 400 if args.quick else 2_000
    batch_total = 4_000 if args.quick else 40_000
    reps = 30 if args.quick else 200

    with tempfile.TemporaryDirectory(prefix="berth-bench-") as tmp, \
            _postgres(not args.no_pg) as pg_fresh:
        def sqlite_fresh() -> str:
            return f"sqlite:///{Path(tmp) / uuid.uuid4().hex}.db"

        backends: list[tuple[str, Callable[[], str]]] = [("sqlite", sqlite_fresh)]
        if pg_fresh is not None:
            backends.append(("postgresql", pg_fresh))

        print("\n## append (events/s)")
        print("  1/tx: one command of one event per transaction")
        print("  100/tx 1 cmd: one command appending 100 events to its stream")
        print("  100/tx 100 cmds: append_batch of 100 one-event commands, 100 streams")
        print(f"{'backend':<11} {'writers':>7} {'1/tx':>9} {'100/tx 1 cmd':>13} "
              f"{'100/tx 100 cmds':>16}")
        for name, fresh in backends:
            for writers in (1, 4):
                single = _append_rate(fresh(), writers, 1, 1, single_total)
                one_cmd = _append_rate(fresh(), writers, 1, 100, batch_total)
                many = _append_rate(fresh(), writers, 100, 1, batch_total)
                print(f"{name:<11} {writers:>7} {single:>9,.0f} {one_cmd:>13,.0f} "
                      f"{many:>16,.0f}")

        print(f"\n## building logs: {LIVE * LIVE_HISTORY + 500:,} and {big_events:,} events")
        small = _migrated(sqlite_fresh())
        small_id = populate(small, LIVE * LIVE_HISTORY + 500)
        big = _migrated(sqlite_fresh())
        t = time.perf_counter()
        big_id = populate(big, big_events)
        took = time.perf_counter() - t
        print(f"sqlite: {big.max_position():,} events in {took:.1f}s "
              f"({big.max_position() / took:,.0f} events/s through append_batch)")

        print(f"\n## replay of {big.max_position():,} events (sqlite, same pages read each "
              "time; best of interleaved runs)")
        n, raw, typed, folded = replay(big, 3 if args.quick else 2)
        print(f"{'pass':<32} {'events/s':>12} {'vs raw':>8}")
        print(f"{'read + msgpack decode (raw)':<32} {n / raw:>12,.0f} {1.0:>8.2f}")
        print(f"{'read + typed events':<32} {n / typed:>12,.0f} {typed / raw:>8.2f}")
        print(f"{'read + typed + fold (replay)':<32} {n / folded:>12,.0f} {folded / raw:>8.2f}"
              f"   target <= 3")

        print(f"\n## flatness (median ms; {small.max_position():,} vs "
              f"{big.max_position():,} events)")
        print(f"{'query':<26} {'small':>9} {'big':>9} {'ratio':>7}")
        for label, a, b in flatness(small, small_id, big, big_id, reps):
            print(f"{label:<26} {a:>9.3f} {b:>9.3f} {b / a:>7.2f}")
        print("target ratio <= 1.5")
        small.close()
        big.close()


if __name__ == "__main__":
    main()
