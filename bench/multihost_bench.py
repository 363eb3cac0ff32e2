"""Several hosts on one machine: throughput, tail latency, CURVE's cost, recovery.

Each configuration is a real cluster from tests/multihost/cluster.py: ``berth
broker``, PostgreSQL (fsync on) and one ``berth worker --node NAME`` per host,
with 1, 2 and 4 workers, over

* ``ipc``         all in the root namespace, ipc sockets (the single-host baseline);
* ``tcp+curve``   one network namespace per host, tcp over veth links to the
                  broker on a bridge, CURVE keys (what ``berth broker`` requires);
* ``tcp plain``   the same without CURVE. ``berth broker`` refuses plain tcp, so
                  here it runs with CURVE switched off in its process (``broker
                  plain`` below: bench-only, never part of berth).

Every configuration's broker is started by the same launcher (``python -m
bench.multihost_bench broker curve|plain``, which runs ``berth broker``'s own
code) with the same options, the rate limit included, so tcp+curve and tcp plain
differ only in CURVE: the keys, and the handshake and encryption they bring. The
rate limiter is on in both but set above any rate this load reaches (``--rate-limit``,
``--burst``): without CURVE the broker cannot tell tcp peers apart, so at berth's
default limit the plain load would share one bucket and the comparison would measure
the limiter, not CURVE.

The load: ``--clients`` processes (each its own pid and, over tcp+curve, its own
CURVE key: separate publishers, as the broker sees them), each
sending a mixed but cheap stream for ``--seconds``: ``query.ps``, ``query.inspect``
and ``query.resolve`` of the load's containers, ``container.exec true`` in its own
long-running container, and now and then a stop (timeout 0) and start of it.
Reported: commands/second, p50/p99 latency, and the ratio of tcp+curve to plain
tcp (CURVE's cost) and to ipc; and the median of 1000 sequential ``query.ping``
round trips (answered by the broker itself), which shows the transport's and
CURVE's own cost where the load's numbers are dominated by PostgreSQL and runc.
Each configuration is measured ``--repeats`` times, interleaved (every repeat runs
each configuration once, the order flipped every repeat, a fresh cluster each
time); the table gives the medians and the spread of the throughput.

Then recovery, ``--recoveries`` samples per transport, interleaved the same way:
a worker holding 4 running containers is killed -9, the containers are killed
while it is down, the worker is restarted at once; the time from the kill until
every exit is recorded (min/median/max).

Ratios within one run are what to read; absolute numbers depend on the machine
(2 cores run the clients, the broker, the workers and PostgreSQL together).

    .venv/bin/python -m bench.multihost_bench            # several minutes
    .venv/bin/python -m bench.multihost_bench --quick    # a few minutes
    .venv/bin/python -m bench.multihost_bench --seconds 1 --workers 1 --clients 2 \\
        --repeats 2 --recoveries 2                       # a smoke run
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

# Imported after the sys.path set-up above, so the script also runs as a plain file.
from bus.client import Client  # noqa: E402
from engine.errors import BerthError  # noqa: E402

MIX: dict[str, int] = {"ps": 32, "inspect": 32, "resolve": 32, "exec": 3, "restart": 1}
"""Weights of the operations; ``restart`` is a stop (timeout 0) and a start: two commands."""


# ----------------------------------------------------------------------------- the load


@dataclass(frozen=True)
class LoadSpec:
    """What one load process needs (picklable: it crosses a spawn)."""

    endpoint: str
    events: str
    key_file: str | None
    server_key_file: str | None
    own: tuple[str, str]  # (id, node) of its long-running container
    refs: tuple[tuple[str, str], ...]  # (id, name) of every load container
    seconds: float
    seed: int


@dataclass
class LoadResult:
    started: float
    ended: float
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def commands(self) -> int:
        return sum(len(v) * (2 if op == "restart" else 1) for op, v in self.latencies.items())


def _client(spec: LoadSpec) -> Client:
    curve = None
    if spec.key_file and spec.server_key_file:
        from bus.keys import client_keys

        curve = client_keys(spec.key_file, spec.server_key_file)
    return Client(spec.endpoint, events_endpoint=spec.events, timeout=30, retries=1, curve=curve)


def _operations(c: Client, spec: LoadSpec, rng: random.Random) -> dict[str, Callable[[], Any]]:
    cid, node = spec.own

    def restart() -> None:
        c.stop(cid, timeout=0, node=node)
        c.start(cid, node=node)

    return {
        "ps": lambda: c.ps(),
        "inspect": lambda: c.inspect(rng.choice(spec.refs)[0]),
        "resolve": lambda: c.resolve(rng.choice(spec.refs)[1]),
        "exec": lambda: c.exec(cid, ["true"], node=node, reply_timeout=30),
        "restart": restart,
    }


def run_load(spec: LoadSpec, barrier: Any, results: Any) -> None:
    """Child process: wait for the others, send the mix for ``spec.seconds``."""
    rng = random.Random(spec.seed)
    names, weights = list(MIX), list(MIX.values())
    with _client(spec) as c:
        ops = _operations(c, spec, rng)
        c.ps()  # connect (and finish the CURVE handshake) before the clock starts
        barrier.wait()
        result = LoadResult(started=time.monotonic(), ended=0.0)
        deadline = result.started + spec.seconds
        while time.monotonic() < deadline:
            op = rng.choices(names, weights)[0]
            t0 = time.perf_counter()
            try:
                ops[op]()
            except BerthError as exc:
                result.errors[exc.code] = result.errors.get(exc.code, 0) + 1
                continue
            result.latencies.setdefault(op, []).append(time.perf_counter() - t0)
        result.ended = time.monotonic()
    results.put(result)


# ----------------------------------------------------------------------------- clusters


@dataclass
class Row:
    transport: str
    workers: int
    per_second: float
    query_p50_ms: float
    p50_ms: float
    p99_ms: float
    errors: dict[str, int]
    rate_limited: int
    ping_p50_us: float = 0.0
    """Sequential ``query.ping`` (answered by the broker): the bus alone, no worker."""


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


TRANSPORTS = ("ipc", "tcp+curve", "tcp plain")


@dataclass(frozen=True)
class BrokerOptions:
    """``berth broker`` options every configuration's broker gets alike."""

    rate_limit: float
    burst: int

    def argv(self) -> tuple[str, ...]:
        return ("--rate-limit", f"{self.rate_limit:g}", "--burst", str(self.burst))


@contextmanager
def _cluster(transport: str, workers: int, rootfs: str, clients: int,
             broker: BrokerOptions) -> Iterator[Any]:
    """A cluster whose broker is started by this module's launcher in every
    configuration: only ``tcp plain`` switches CURVE off (in the keys and the broker)."""
    from tests.multihost.cluster import cluster

    hosts = [f"h{i}" for i in range(1, workers + 1)]
    publishers = ("client", *(f"load{i}" for i in range(clients)))
    plain = transport == "tcp plain"
    command = (sys.executable, "-m", "bench.multihost_bench", "broker",
               "plain" if plain else "curve", *broker.argv())
    with cluster(hosts, rootfs, transport="ipc" if transport == "ipc" else "tcp",
                 curve=not plain, durable=True, broker_command=command,
                 publishers=publishers) as c:
        yield c


def _load_containers(c: Any, clients: int) -> list[tuple[str, str, str]]:
    """One long-running container per load process, spread over the nodes."""
    nodes = sorted(c.hosts)
    client = c.client(timeout=30)
    made = []
    for i in range(clients):
        node = nodes[i % len(nodes)]
        created = client.create(rootfs=c.rootfs, args=["sleep", "3600"], node=node,
                                name=f"load{i}").result
        client.start(created["id"], node=node)
        made.append((created["id"], f"load{i}", node))
    return made


def measure_load(transport: str, workers: int, rootfs: str, clients: int,
                 seconds: float, broker: BrokerOptions) -> Row:
    with _cluster(transport, workers, rootfs, clients, broker) as c:
        containers = _load_containers(c, clients)
        refs = tuple((cid, name) for cid, name, _ in containers)
        ctx = mp.get_context("spawn")  # zmq contexts must not cross a fork
        barrier, results = ctx.Barrier(clients), ctx.Queue()
        procs = []
        for i, (cid, _name, node) in enumerate(containers):
            key = server = None
            if c.curve is not None:
                key, server = c.curve.secret(f"load{i}"), c.curve.public("broker")
            spec = LoadSpec(c.endpoints.frontend, c.endpoints.events, key, server,
                            (cid, node), refs, seconds, seed=i)
            proc = ctx.Process(target=run_load, args=(spec, barrier, results))
            proc.start()
            procs.append(proc)
        collected: list[LoadResult] = [results.get(timeout=seconds + 120) for _ in procs]
        for proc in procs:
            proc.join(30)
        health = c.client().ping()
        ping_p50 = _ping_p50(c.client(timeout=5), 1000)
    latencies = [v for r in collected for vs in r.latencies.values() for v in vs]
    queries = [v for r in collected for op in ("ps", "inspect", "resolve")
               for v in r.latencies.get(op, [])]
    errors: dict[str, int] = {}
    for r in collected:
        for code, n in r.errors.items():
            errors[code] = errors.get(code, 0) + n
    wall = max(r.ended for r in collected) - min(r.started for r in collected)
    return Row(transport, workers, sum(r.commands for r in collected) / wall,
               1000 * _percentile(queries, 0.50), 1000 * _percentile(latencies, 0.50),
               1000 * _percentile(latencies, 0.99),
               errors, int(health.get("rate_limited", 0)), 1e6 * ping_p50)


def _ping_p50(client: Client, count: int) -> float:
    """Median seconds of a broker round trip: what the transport and CURVE cost."""
    client.ping()
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        client.ping()
        times.append(time.perf_counter() - t0)
    return _percentile(times, 0.50)


@dataclass
class Recovery:
    transport: str
    detected_s: float
    recorded_s: float
    after_restart_s: float


def measure_recovery(transport: str, rootfs: str, broker: BrokerOptions,
                     containers: int = 4) -> Recovery:
    """kill -9 the worker of h1 with ``containers`` running there, let them all
    exit while it is down, restart it; seconds from the kill until every exit is
    in the log (and, apart, until the broker noticed the loss)."""
    from engine.runtime.waits import wait_pids_exit
    from tests.helpers import wait_until

    with _cluster(transport, 2, rootfs, 1, broker) as c:
        client = c.client(timeout=10)
        ids = []
        for i in range(containers):
            cid = client.create(rootfs=rootfs, args=["sleep", "3600"], node="h1",
                                name=f"rec{i}").result["id"]
            client.start(cid, node="h1")
            ids.append(cid)
        pids = [client.inspect(cid)["pid"] for cid in ids]
        killed = time.monotonic()
        c.kill_worker("h1")
        c.wait_node_gone("h1", timeout=30)
        detected = time.monotonic()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        if not wait_pids_exit(pids, 10):
            raise RuntimeError("the containers did not die")
        restarted = time.monotonic()
        c.start_worker("h1", wait=False)
        wait_until(lambda: all(r["state"] == "exited" for r in client.ps(all=True)), 60,
                   interval=0.02, what="every exit recorded")
        done = time.monotonic()
        # Killing the containers is ours, not the engine's: leave it out.
        return Recovery(transport, detected - killed, done - killed - (restarted - detected),
                        done - restarted)


# ----------------------------------------------------------------------------- output


def _median_row(samples: list[Row]) -> Row:
    """One configuration's samples as one row: the median of each measure, errors and
    rate-limit refusals summed over the samples."""
    errors: dict[str, int] = {}
    for r in samples:
        for code, n in r.errors.items():
            errors[code] = errors.get(code, 0) + n
    return Row(samples[0].transport, samples[0].workers,
               statistics.median(r.per_second for r in samples),
               statistics.median(r.query_p50_ms for r in samples),
               statistics.median(r.p50_ms for r in samples),
               statistics.median(r.p99_ms for r in samples),
               errors, sum(r.rate_limited for r in samples),
               statistics.median(r.ping_p50_us for r in samples))


def _spread(values: Sequence[float]) -> float:
    """(max - min) / median, as a percentage."""
    return 100 * (max(values) - min(values)) / statistics.median(values)


def print_table(samples: dict[tuple[str, int], list[Row]]) -> None:
    rows = [_median_row(v) for v in samples.values()]
    by = {(r.transport, r.workers): r for r in rows}
    print(f"{'transport':<11} {'workers':>7} {'cmds/s':>8} {'spread':>6} {'query p50':>9} "
          f"{'p50 ms':>8} {'p99 ms':>8} {'vs ipc':>7} {'ping us':>8} {'errors':>7} "
          f"{'limited':>7}")
    for r in rows:
        base = by.get(("ipc", r.workers))
        ratio = f"{r.per_second / base.per_second:.2f}" if base else "-"
        spread = _spread([s.per_second for s in samples[(r.transport, r.workers)]])
        print(f"{r.transport:<11} {r.workers:>7} {r.per_second:>8.0f} {spread:>5.0f}% "
              f"{r.query_p50_ms:>9.2f} {r.p50_ms:>8.2f} {r.p99_ms:>8.1f} {ratio:>7} "
              f"{r.ping_p50_us:>8.0f} {sum(r.errors.values()):>7} {r.rate_limited:>7}")
    print()
    print("CURVE's cost (tcp+curve / tcp plain, same workers, broker options and launcher):")
    for workers in sorted({r.workers for r in rows}):
        curve, plain = by.get(("tcp+curve", workers)), by.get(("tcp plain", workers))
        if curve and plain:
            print(f"  {workers} worker(s): throughput x{curve.per_second / plain.per_second:.2f}, "
                  f"p50 x{curve.p50_ms / plain.p50_ms:.2f}, "
                  f"p99 x{curve.p99_ms / plain.p99_ms:.2f}, "
                  f"broker round trip x{curve.ping_p50_us / plain.ping_p50_us:.2f}")
    for r in rows:
        if r.errors:
            print(f"  errors in {r.transport}/{r.workers}: {r.errors}")


def print_recovery(samples: dict[str, list[Recovery]]) -> None:
    runs = min(len(v) for v in samples.values())
    print()
    print(f"recovery after kill -9 with 4 exits meanwhile: seconds, min/median/max of "
          f"{runs} samples")
    print(f"{'transport':<11} {'loss seen':>17} {'kill->recorded':>17} "
          f"{'restart->recorded':>17}")

    def cell(values: list[float]) -> str:
        return f"{min(values):.2f}/{statistics.median(values):.2f}/{max(values):.2f}"

    for transport, rs in samples.items():
        print(f"{transport:<11} {cell([r.detected_s for r in rs]):>17} "
              f"{cell([r.recorded_s for r in rs]):>17} "
              f"{cell([r.after_restart_s for r in rs]):>17}")


# ----------------------------------------------------------------------------- main


def bench_broker(argv: list[str]) -> int:
    """The launcher of every configuration's broker: ``broker curve|plain OPTIONS``
    runs ``berth broker OPTIONS``, the same code and options either way.

    ``plain`` (bench-only: berth itself never serves plain tcp) switches off the
    check that every network endpoint runs CURVE, in this process only, so the
    broker binds its tcp sockets without keys."""
    mode, options = argv[0], argv[1:]
    if mode not in ("curve", "plain"):
        raise SystemExit(f"broker mode must be curve or plain, not {mode!r}")
    if mode == "plain":
        import bus.admission
        import bus.keys

        def never(endpoint: str) -> bool:
            return False

        bus.keys.needs_curve = never
        bus.admission.needs_curve = never  # type: ignore[attr-defined]  # imported by name
    from berth.cli import main as berth_main

    return berth_main(["broker", *options])


def _order(items: Sequence[str], run: int) -> list[str]:
    """``items`` forwards on even runs, backwards on odd ones: no configuration always
    runs first or right after the same neighbour."""
    return list(items) if run % 2 == 0 else list(items)[::-1]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "broker":
        sys.exit(bench_broker(sys.argv[2:]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs, for development")
    parser.add_argument("--seconds", type=float, default=None, help="load per configuration")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated")
    parser.add_argument("--repeats", type=int, default=None,
                        help="samples of each load configuration (default 3; 2 with --quick)")
    parser.add_argument("--recoveries", type=int, default=3,
                        help="recovery samples per transport (at least 2)")
    parser.add_argument("--rate-limit", type=float, default=1_000_000,
                        help="every broker's per-peer rate limit (commands/s, 0: none)")
    parser.add_argument("--burst", type=int, default=1_000_000,
                        help="every broker's per-peer burst")
    opts = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces, runc)")
    if opts.recoveries < 2:
        parser.error("--recoveries must be at least 2: one sample says nothing of its spread")
    seconds = opts.seconds or (2.0 if opts.quick else 6.0)
    repeats = opts.repeats or (2 if opts.quick else 3)
    broker = BrokerOptions(opts.rate_limit, opts.burst)
    from engine.images.rootfs import build_busybox_rootfs

    with tempfile.TemporaryDirectory(prefix="berth-mhb-") as tmp:
        rootfs = build_busybox_rootfs(os.path.join(tmp, "busybox"))
        worker_counts = [int(w) for w in opts.workers.split(",")]
        samples: dict[tuple[str, int], list[Row]] = {
            (t, w): [] for w in worker_counts for t in TRANSPORTS}
        for run in range(repeats):
            for workers in worker_counts:
                for transport in _order(TRANSPORTS, run):
                    row = measure_load(transport, workers, rootfs, opts.clients, seconds,
                                       broker)
                    print(f"  {transport}, {workers} worker(s), run {run + 1}/{repeats}: "
                          f"{row.per_second:.0f} cmds/s", file=sys.stderr, flush=True)
                    samples[(transport, workers)].append(row)
        recoveries: dict[str, list[Recovery]] = {"ipc": [], "tcp+curve": []}
        for run in range(opts.recoveries):
            for transport in _order(list(recoveries), run):
                recovered = measure_recovery(transport, rootfs, broker)
                print(f"  recovery {transport}, run {run + 1}/{opts.recoveries}: "
                      f"{recovered.recorded_s:.2f}s", file=sys.stderr, flush=True)
                recoveries[transport].append(recovered)
    limit = (f"rate-limited at {broker.rate_limit:,.0f}/s, burst {broker.burst:,}"
             if broker.rate_limit > 0 else "not rate-limited")
    print(f"\nmixed load {MIX}, {opts.clients} client processes, {seconds:g}s each, "
          f"median of {repeats} interleaved runs; every broker {limit} per peer; "
          f"PostgreSQL with fsync on; {os.cpu_count()} cores\n")
    print_table(samples)
    print_recovery(recoveries)


if __name__ == "__main__":
    main()
