"""Event store benchmarks: append throughput, replay cost, and read flatness.

    .venv/bin/python -m bench.store_bench            # full: a 1,000,000-event log
    .venv/bin/python -m bench.store_bench --quick    # a minute or so, for development
    .venv/bin/python -m bench.store_bench --events 200000 --no-pg
    .venv/bin/python -m bench.store_bench --events 5000 --append-events 200 --runs 3 \\
        --replays 2 --reps 10                        # a smoke run: is every table sane?
    .venv/bin/python -m bench.store_bench --signing-only --runs 5   # writer signatures

Every measurement is made on SQLite and on PostgreSQL, interleaved (SQLite, PG, PG,
SQLite, ... configuration by configuration, the order flipped each run), so a burst of
load from others on the machine hits both alike. Each append rate is measured
``--runs`` times on a fresh database: the table gives the median and the spread
((max - min) / median). The machine is shared and small (2 cores), so the numbers
that mean something are the ratios measured within one run, not the absolute rates.
PostgreSQL is a private, durable (fsync on) server started by tests/pgserver.py
unless BERTH_PG_HOST is set.

The writer-signature table compares appends by a store with an auditor key (one
signature per transaction, engine/audit/vouch.py) with appends by one without,
configuration by configuration in the same run, as above.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import msgpack  # type: ignore[import-untyped]

from engine import events as ev
from engine.audit.treehead import Signer
from engine.containers.projection import fold
from engine.store.mapper import Mapper
from engine.store.recorder import AppendRequest
from engine.store.store import EventStore
from migrations.runner import upgrade

SPEC = ev.RunSpec(rootfs="/var/lib/berth/rootfs/alpine", args=("sleep", "infinity"),
                  env=("PATH=/usr/bin:/bin", "TERM=xterm"))
LIVE = 50            # long-lived containers: what ps shows, whatever the log size
LIVE_HISTORY = 10    # events in each live container's stream
CHURN_EVENTS = 5     # create, pid, start, exit, remove: a --rm run

T = TypeVar("T")


def _cid() -> str:
    return uuid.uuid4().hex * 2


def _migrated(url: str) -> EventStore:
    upgrade(url)
    return EventStore(url)


# -- append -------------------------------------------------------------------------

WRITER = Signer(b"\x42" * 32)


def _append_rate(url: str, writers: int, commands: int, per_command: int,
                 total: int, signer: Signer | None = None) -> float:
    """Events/s with ``writers`` threads, each with its own store (own connections).

    A transaction carries ``commands`` commands (append_batch when more than one),
    each appending ``per_command`` events to one of its writer's container streams;
    with ``signer``, each transaction is signed by it (engine/audit/vouch.py).
    """
    upgrade(url)
    stores = [EventStore(url, signer=signer) for _ in range(writers)]
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

PASSES = ("raw", "typed", "fold")


def _timed(fn: Callable[[], int]) -> tuple[int, float]:
    t = time.perf_counter()
    n = fn()
    return n, time.perf_counter() - t


def _replay_passes(store: EventStore) -> dict[str, Callable[[], int]]:
    """The three replay passes over one store, each reading the same pages from the
    database, so the ratios isolate what typing and folding add."""
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
        if sum(1 for s in states.values() if not s.removed) != LIVE:
            raise RuntimeError(f"replay of {store.dialect} lost a live container")
        return len(states)

    return {"raw": raw, "typed": typed, "fold": folded}


def replay(stores: dict[str, EventStore], repeats: int
           ) -> dict[str, tuple[int, dict[str, float]]]:
    """backend -> (events, {pass: best seconds}). Passes and backends are interleaved
    (each repeat runs every pass on every backend, the backend order flipped each
    time) and each keeps its best time: on a shared machine that is the least noisy
    estimate of its own cost."""
    passes = {name: _replay_passes(store) for name, store in stores.items()}
    best = {name: dict.fromkeys(PASSES, float("inf")) for name in stores}
    counts = dict.fromkeys(stores, 0)
    for r in range(repeats):
        for pass_name in PASSES:
            for backend in _order(list(stores), r):
                count, took = _timed(passes[backend][pass_name])
                if pass_name == "raw":
                    counts[backend] = count
                best[backend][pass_name] = min(best[backend][pass_name], took)
    return {name: (counts[name], best[name]) for name in stores}


# -- flatness -----------------------------------------------------------------------

QUERIES: tuple[tuple[str, Callable[[EventStore, str], Callable[[], object]]], ...] = (
    ("ps -a (live containers)", lambda s, c: lambda: s.list_containers(all=True)),
    ("ps (running only)", lambda s, c: lambda: s.list_containers()),
    ("one container's history", lambda s, c: lambda: s.read_stream(c)),
    ("resolve by name", lambda s, c: lambda: s.resolve("live7")),
    # `berth events --filter type=...` pages by position: the last page near the head
    # must cost the same on a big log as on a small one.
    ("filtered events page", lambda s, c: _filtered_page(s)),
)


def _filtered_page(store: EventStore) -> Callable[[], object]:
    after = max(0, store.max_position() - 500)  # the same 500 rows back on either log
    return lambda: store.query(None, [ev.CONTAINER_STARTED], limit=500, after=after)


def _interleaved_medians(fns: dict[tuple[str, str, str], Callable[[], object]],
                         reps: int) -> dict[tuple[str, str, str], float]:
    """Median ms of each function, sampled in turn (one call of each per rep, the order
    flipped every rep) after one warm-up call each."""
    for fn in fns.values():
        fn()
    samples: dict[tuple[str, str, str], list[float]] = {key: [] for key in fns}
    for r in range(reps):
        for key in _order(list(fns), r):
            t = time.perf_counter()
            fns[key]()
            samples[key].append(time.perf_counter() - t)
    return {key: statistics.median(v) * 1000 for key, v in samples.items()}


def flatness(logs: dict[str, tuple[EventStore, str, EventStore, str]], reps: int
             ) -> dict[str, list[tuple[str, float, float]]]:
    """backend -> [(query, small ms, big ms)], every query on every log sampled in turn."""
    fns: dict[tuple[str, str, str], Callable[[], object]] = {}
    for backend, (small, small_id, big, big_id) in logs.items():
        if not len(small.list_containers(all=True)) == len(big.list_containers(all=True)) \
                == LIVE:
            raise RuntimeError(f"{backend}: the logs do not hold {LIVE} live containers")
        for label, make in QUERIES:
            fns[(backend, label, "small")] = make(small, small_id)
            fns[(backend, label, "big")] = make(big, big_id)
    medians = _interleaved_medians(fns, reps)
    return {backend: [(label, medians[(backend, label, "small")],
                       medians[(backend, label, "big")]) for label, _ in QUERIES]
            for backend in logs}


# -- driver -------------------------------------------------------------------------

def _order(items: list[T], run: int) -> list[T]:
    """``items`` forwards on even runs, backwards on odd ones: no configuration always
    runs first (cold) or right after the same neighbour."""
    return items if run % 2 == 0 else items[::-1]


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


APPEND_KINDS = (  # (column, commands per transaction, events per command, total scale)
    ("1/tx", 1, 1, 1),
    ("100/tx 1 cmd", 1, 100, 20),
    ("100/tx 100 cmds", 100, 1, 20),
)


def _spread(values: list[float]) -> float:
    """(max - min) / median, as a percentage."""
    return 100 * (max(values) - min(values)) / statistics.median(values)


def bench_append(backends: dict[str, Callable[[], str]], runs: int, total: int) -> None:
    """Each (writers, kind) configuration ``runs`` times, every backend in turn, each
    on a fresh database; ``total`` events per 1/tx run (20x that for the batches)."""
    print(f"\n## append (events/s; median of {runs} runs, spread = (max - min) / median)")
    print("  1/tx: one command of one event per transaction")
    print("  100/tx 1 cmd: one command appending 100 events to its stream")
    print("  100/tx 100 cmds: append_batch of 100 one-event commands, 100 streams")
    configs = [(writers, kind) for writers in (1, 4) for kind in APPEND_KINDS]
    rates: dict[tuple[str, int, str], list[float]] = {}
    for run in range(runs):
        for writers, (column, commands, per_command, scale) in configs:
            for backend in _order(list(backends), run):
                rate = _append_rate(backends[backend](), writers, commands, per_command,
                                    total * scale)
                rates.setdefault((backend, writers, column), []).append(rate)
        print(f"  run {run + 1}/{runs} done", file=sys.stderr, flush=True)
    header = "".join(f" {column:>15} {'spread':>6}" for column, *_ in APPEND_KINDS)
    print(f"{'backend':<11} {'writers':>7}{header}")
    for backend in backends:
        for writers in (1, 4):
            cells = ""
            for column, *_ in APPEND_KINDS:
                values = rates[(backend, writers, column)]
                cells += f" {statistics.median(values):>15,.0f} {_spread(values):>5.0f}%"
            print(f"{backend:<11} {writers:>7}{cells}")


def bench_signing(backends: dict[str, Callable[[], str]], runs: int, total: int) -> None:
    """Appends with and without writer signatures, interleaved (the order of the two
    flipped each run), each on a fresh database; one writer and four."""
    print(f"\n## writer signatures (events/s; median of {runs} runs, spread = (max - min) "
          "/ median)")
    configs = [(writers, kind) for writers in (1, 4) for kind in APPEND_KINDS]
    rates: dict[tuple[str, int, str, str], list[float]] = {}
    for run in range(runs):
        for writers, (column, commands, per_command, scale) in configs:
            for backend in _order(list(backends), run):
                for signed in _order(["unsigned", "signed"], run):
                    rate = _append_rate(backends[backend](), writers, commands, per_command,
                                        total * scale, WRITER if signed == "signed" else None)
                    rates.setdefault((backend, writers, column, signed), []).append(rate)
        print(f"  run {run + 1}/{runs} done", file=sys.stderr, flush=True)
    print(f"{'backend':<11} {'writers':>7} {'kind':<16} {'unsigned':>10} {'spread':>6} "
          f"{'signed':>10} {'spread':>6} {'ratio':>6}")
    for backend in backends:
        for writers in (1, 4):
            for column, *_ in APPEND_KINDS:
                plain = rates[(backend, writers, column, "unsigned")]
                signed_ = rates[(backend, writers, column, "signed")]
                p, q = statistics.median(plain), statistics.median(signed_)
                print(f"{backend:<11} {writers:>7} {column:<16} {p:>10,.0f} "
                      f"{_spread(plain):>5.0f}% {q:>10,.0f} {_spread(signed_):>5.0f}% "
                      f"{q / p:>6.2f}")
    print("ratio: signed / unsigned events per second")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=None,
                        help="size of the big log for replay and flatness "
                             "(default 1,000,000; 50,000 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes (50,000-event log, short append runs)")
    parser.add_argument("--no-pg", action="store_true", help="skip PostgreSQL")
    parser.add_argument("--runs", type=int, default=3,
                        help="runs of each append configuration (at least 3)")
    parser.add_argument("--append-events", type=int, default=None,
                        help="events per 1/tx append run, 20x that for the batched ones "
                             "(default 2,000; 400 with --quick)")
    parser.add_argument("--replays", type=int, default=None,
                        help="interleaved replay repeats (default 2; 3 with --quick)")
    parser.add_argument("--signing-only", action="store_true",
                        help="only the writer-signature comparison of appends")
    parser.add_argument("--reps", type=int, default=None,
                        help="samples of each flatness query (default 200; 30 with --quick)")
    args = parser.parse_args(argv)
    if args.runs < 3:
        parser.error("--runs must be at least 3: a median of fewer says nothing about spread")
    big_events = args.events or (50_000 if args.quick else 1_000_000)
    small_events = LIVE * LIVE_HISTORY + 500
    if big_events < small_events:
        parser.error(f"--events must be at least {small_events} (the small log's size)")
    append_total = args.append_events or (400 if args.quick else 2_000)
    replays = args.replays or (3 if args.quick else 2)
    reps = args.reps or (30 if args.quick else 200)

    with tempfile.TemporaryDirectory(prefix="berth-bench-") as tmp, \
            _postgres(not args.no_pg) as pg_fresh:
        def sqlite_fresh() -> str:
            return f"sqlite:///{Path(tmp) / uuid.uuid4().hex}.db"

        backends: dict[str, Callable[[], str]] = {"sqlite": sqlite_fresh}
        if pg_fresh is not None:
            backends["postgresql"] = pg_fresh

        if args.signing_only:
            bench_signing(backends, args.runs, append_total)
            return
        bench_append(backends, args.runs, append_total)
        bench_signing(backends, args.runs, append_total)

        print(f"\n## building logs: {small_events:,} and {big_events:,} events")
        logs: dict[str, tuple[EventStore, str, EventStore, str]] = {}
        for backend, fresh in backends.items():
            small = _migrated(fresh())
            small_id = populate(small, small_events)
            big = _migrated(fresh())
            t = time.perf_counter()
            big_id = populate(big, big_events)
            took = time.perf_counter() - t
            print(f"{backend}: {big.max_position():,} events in {took:.1f}s "
                  f"({big.max_position() / took:,.0f} events/s through append_batch)")
            logs[backend] = (small, small_id, big, big_id)

        print(f"\n## replay of {big_events:,} events (same pages read each time; best of "
              f"{replays} interleaved runs)")
        print(f"{'backend':<11} {'pass':<32} {'events/s':>12} {'vs raw':>8}")
        labels = {"raw": "read + msgpack decode (raw)", "typed": "read + typed events",
                  "fold": "read + typed + fold (replay)"}
        for backend, (n, best) in replay({b: log[2] for b, log in logs.items()},
                                         replays).items():
            for pass_name in PASSES:
                took = best[pass_name]
                target = "   target <= 3" if pass_name == "fold" else ""
                print(f"{backend:<11} {labels[pass_name]:<32} {n / took:>12,.0f} "
                      f"{took / best['raw']:>8.2f}{target}")

        print(f"\n## flatness (median ms of {reps} interleaved samples; {small_events:,} vs "
              f"{big_events:,} events)")
        print(f"{'backend':<11} {'query':<26} {'small':>9} {'big':>9} {'ratio':>7}")
        for backend, rows in flatness(logs, reps).items():
            for label, a, b in rows:
                print(f"{backend:<11} {label:<26} {a:>9.3f} {b:>9.3f} {b / a:>7.2f}")
        print("target ratio <= 1.5")
        for small, _, big, _ in logs.values():
            small.close()
            big.close()


if __name__ == "__main__":
    main()
