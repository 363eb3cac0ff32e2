"""Container lifecycle cost: berth (client library and CLI) against the floor and peers.

Every round runs each contender once, interleaved, so machine noise hits them
alike; the table gives medians and ratios measured in this one run.

* floor: berth's runtime layer in-process (engine.runtime.OCIRuntime called
  directly: no bus, no worker, no event store). One lifecycle is: write the OCI
  bundle, create through conmon (conmon runs ``runc create``) and read the pid it
  reports, ``runc start``, wait for conmon's exit file with inotify, ``runc
  delete``, remove the bundle. What berth adds is everything above this;
* berth client: ``create``, ``start``, ``wait``, ``remove`` through the Python client
  against ``berth up`` (broker, worker, SQLite on ipc sockets);
* berth CLI: ``berth run --rm --network none ROOTFS /bin/true`` as a fresh process,
  once through the plain Python CLI (``python -m berth``) and once through the C
  front end (frontend/berth.c, built here) and the command server ``berth up``
  starts beside the engine;
* ``ctr run --rm --rootfs`` (a private containerd) and
  ``podman run --rm --network none --rootfs`` as peers (installed with
  ``scripts/install.sh --bench`` when missing; skipped, with the reason, if they
  cannot run).

Then the CLI's own latency, interleaved the same way: ``berth exec CTR true`` (Python,
front end) against ``runc exec`` of the same container, and ``berth ps`` with 10
containers running (Python, front end).

Then throughput: 200 containers of ``sleep 0.2`` at concurrency 8, for the floor,
berth's client library and podman. Each contender first runs an untimed warm-up
batch of ``--concurrency`` containers (it starts every thread of the contender's
pool; berth's threads open their clients then), then the batches are
interleaved: ``--many-runs`` runs, each running every contender's batch once,
the order flipped every run; the table gives the median and the spread.

    .venv/bin/python -m bench.lifecycle_bench [--rounds 30] [--many 200] [--concurrency 8]
    .venv/bin/python -m bench.lifecycle_bench --rounds 3 --many 8 --concurrency 2 \\
        --many-runs 2 --no-peers                 # a smoke run
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bus.client import Client  # noqa: E402
from engine.containers.spec import RunSpec  # noqa: E402
from engine.errors import BerthError  # noqa: E402
from engine.ids import new_container_id  # noqa: E402
from engine.images.rootfs import build_busybox_rootfs  # noqa: E402
from engine.runtime import OCIRuntime, RuntimeConfig  # noqa: E402
from workers.inotify import Inotify  # noqa: E402

PODMAN = ["podman", "--runtime", "runc", "run", "--rm", "--network", "none",
          "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096"]


FLOOR = "floor (runtime layer only)"
FLOOR_CONTAINS = ("floor = berth's runtime layer in-process, no bus/worker/store:\n"
                  "  write the bundle, create through conmon (runc create) and read the pid,\n"
                  "  runc start, wait for the exit file (inotify), runc delete, remove the bundle")


class Floor:
    """berth's runtime layer called in-process, no engine around it: the cost berth
    adds nothing to (see FLOOR_CONTAINS for exactly what one lifecycle does)."""

    def __init__(self, base: str, rootfs: str) -> None:
        self.rt = OCIRuntime(
            RuntimeConfig(state_dir=f"{base}/floor-state", tmp_dir=f"{base}/floor-run")
        )
        self.rootfs = rootfs
        self._lock = threading.Lock()

    def run(self, args: tuple[str, ...] = ("/bin/true",)) -> None:
        cid = new_container_id()
        watch = Inotify(self.rt.config.exits_dir)
        try:
            self.rt.create(cid, RunSpec(rootfs=self.rootfs, args=args))
            self.rt.start(cid)
            while self.rt.exit_status(cid) is None:
                for name in watch.read(5):
                    if name == cid:
                        break
            self.rt.delete(cid)
        finally:
            watch.close()
            self.rt.cleanup(cid)


class Berth:
    """``berth up`` in its own process, on private directories."""

    def __init__(self, base: str, extra_env: dict[str, str] | None = None) -> None:
        self.env = dict(os.environ, BERTH_ROOT=f"{base}/root", BERTH_RUN=f"{base}/run")
        for key in ("BERTH_BUS", "BERTH_BUS_WORKERS", "BERTH_BUS_EVENTS", "BERTH_DB",
                    "BERTH_METRICS"):
            self.env.pop(key, None)
        # ctr's default has no network either, nor does the floor: compare like with like
        # (bench.network_bench measures what the default network adds).
        self.env.setdefault("BERTH_DEFAULT_NETWORK", "none")
        self.env.update(extra_env or {})
        self.proc = subprocess.Popen([sys.executable, "-m", "berth", "up"], env=self.env, cwd=REPO,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.endpoint = f"ipc://{base}/run/bus.sock"
        deadline = time.monotonic() + 30
        while True:
            try:
                with Client(self.endpoint, timeout=0.5, retries=0) as c:
                    c.ps()
                break
            except BerthError as exc:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise SystemExit("berth up did not start") from exc
                time.sleep(0.05)

    def client(self) -> Client:
        return Client(self.endpoint, timeout=30)

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(20)


METRICS_ON = "berth client library, metrics on"
FRONT_END = "berth front end (run --rm)"


def build_front_end(base: str) -> str:
    """frontend/berth.c compiled as scripts/install.sh compiles it, for this Python."""
    binary = f"{base}/berth"
    subprocess.run(["cc", "-O2", "-Wall", "-Wextra", "-Werror",
                    f'-DBERTH_PYTHON="{sys.executable}"', "-o", binary,
                    os.path.join(REPO, "frontend", "berth.c")], check=True)
    return binary


def served(berth: Berth, binary: str) -> None:
    """Wait until the front end's commands go through berth up's command server (a
    fallback to Python would measure the plain CLI under the front end's name)."""
    import socket

    deadline = time.monotonic() + 30
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(os.path.join(berth.env["BERTH_RUN"], "cli.sock"))
            return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise SystemExit("berth up's command server did not listen") from exc
            time.sleep(0.05)
        finally:
            s.close()


def cli_latency(berth: Berth, binary: str, rootfs: str, rounds: int) -> None:
    """``exec`` against ``runc exec`` and ``ps`` with 10 containers, interleaved."""
    python = [sys.executable, "-m", "berth"]
    ids = []
    for i in range(10):
        out = subprocess.run([*python, "run", "-d", "--name", f"bench-{i}", rootfs,
                              "sleep", "100000"], env=berth.env, check=True,
                             capture_output=True, text=True).stdout
        ids.append(out.strip())
    runc_root = os.path.join(berth.env["BERTH_RUN"], "runtime", "runc")
    contenders: dict[str, list[str]] = {
        "runc exec CTR true": ["runc", "--root", runc_root, "exec", ids[0], "true"],
        "berth exec CTR true (python)": [*python, "exec", "bench-0", "true"],
        "berth exec CTR true (front end)": [binary, "exec", "bench-0", "true"],
        "berth ps, 10 running (python)": [*python, "ps"],
        "berth ps, 10 running (front end)": [binary, "ps"],
    }
    try:
        for argv in contenders.values():
            _check(argv, berth.env)
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for r in range(rounds):
            for name in _order(list(contenders), r):
                times[name].append(_timed(lambda argv=contenders[name]: _check(argv, berth.env)))
        runc = statistics.median(times["runc exec CTR true"])
        print(f"\nThe CLI's latency, {rounds} interleaved rounds")
        print(f"{'contender':<34} {'median ms':>10} {'p90 ms':>8} {'x runc exec':>12}")
        for name, ts in times.items():
            ts.sort()
            med = statistics.median(ts)
            print(f"{name:<34} {med * 1000:>10.1f} {ts[int(0.9 * (len(ts) - 1))] * 1000:>8.1f} "
                  f"{med / runc:>12.2f}")
    finally:
        subprocess.run([*python, "rm", "-f", *ids], env=berth.env, capture_output=True,
                       check=False)


def client_lifecycle(c: Client, rootfs: str, args: list[str]) -> None:
    reply = c.create(rootfs=rootfs, args=args)
    cid, node = str(reply.result["id"]), str(reply.result["node"])
    c.start(cid, node=node)
    c.wait(cid, node=node)
    c.remove(cid, node=node)


class Ctr:
    """A private containerd for ``ctr run``; None when it cannot start."""

    def __init__(self, base: str) -> None:
        self.sock = f"{base}/containerd.sock"
        self.proc = subprocess.Popen(
            ["containerd", "--root", f"{base}/ctrd-root", "--state", f"{base}/ctrd-state",
             "--address", self.sock],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        version = ["ctr", "--address", self.sock, "version"]
        while subprocess.run(version, capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError("containerd did not answer")
            time.sleep(0.1)
        self.n = 0

    def argv(self, rootfs: str) -> list[str]:
        self.n += 1
        return ["ctr", "--address", self.sock, "run", "--rm", "--rootfs", rootfs,
                f"bench-{os.getpid()}-{self.n}", "/bin/true"]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _ensure_peers() -> None:
    if shutil.which("podman") and shutil.which("ctr") and shutil.which("containerd"):
        return
    subprocess.run(
        [os.path.join(REPO, "scripts", "install.sh"), "--bench", "--no-venv"], check=False
    )


def _metric_cost(samples: int = 100_000) -> float:
    """Seconds the metrics add to one command: the broker's and the worker's
    histogram observation and counter increment (the rest is read at scrape time)."""
    from prometheus_client import CollectorRegistry

    from bus.metrics import CommandMetrics

    broker, worker = (CommandMetrics(CollectorRegistry(), name)
                      for name in ("bench_broker", "bench_worker"))
    started = time.perf_counter()
    for i in range(samples):
        broker.observe("container.start", None, 0.001 * (i % 7))
        worker.observe("container.start", None, 0.001 * (i % 7))
    return (time.perf_counter() - started) / samples


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _check(argv: list[str], env: dict[str, str] | None = None) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def _order(names: list[str], run: int) -> list[str]:
    """``names`` forwards on even runs, backwards on odd ones: no contender always
    runs first or right after the same neighbour."""
    return names if run % 2 == 0 else names[::-1]


def throughput(many: dict[str, Callable[[], object]], count: int, concurrency: int,
               runs: int) -> dict[str, list[float]]:
    """Seconds of each contender's batches of ``count`` lifecycles on ``concurrency``
    threads. Each contender keeps one pool for all its batches (its threads, and what
    they hold, outlive a batch), warmed up by an untimed batch of ``concurrency``
    lifecycles, which starts each of its threads, before any batch is timed; then
    the contenders' batches alternate, run by run."""
    pools = {name: ThreadPoolExecutor(concurrency) for name in many}

    def batch(name: str, n: int) -> float:
        fn = many[name]
        start = time.perf_counter()
        # fn bound as a default: the lambda must not late-bind it.
        list(pools[name].map(lambda _i, fn=fn: fn(), range(n)))
        return time.perf_counter() - start

    try:
        for name in many:
            batch(name, concurrency)
        seconds: dict[str, list[float]] = {name: [] for name in many}
        for run in range(runs):
            for name in _order(list(many), run):
                seconds[name].append(batch(name, count))
                print(f"  {name}, run {run + 1}/{runs}: {seconds[name][-1]:.2f}s",
                      file=sys.stderr, flush=True)
        return seconds
    finally:
        for pool in pools.values():
            pool.shutdown()


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--many", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--many-runs", type=int, default=3,
                   help="interleaved throughput runs per contender (at least 2)")
    p.add_argument("--no-peers", action="store_true")
    p.add_argument("--cli-rounds", type=int, default=30,
                   help="rounds of the exec and ps latency table (0: skip it)")
    p.add_argument("--metrics", action="store_true",
                   help="also run a second engine with Prometheus metrics on (BERTH_METRICS) "
                        "and report the cost side by side")
    args = p.parse_args()
    if args.many_runs < 2:
        p.error("--many-runs must be at least 2: one run says nothing of its spread")

    # Measure berth as installed: scripts/install.sh byte-compiles it, and where
    # PYTHONDONTWRITEBYTECODE is set a source edit since then would make every CLI
    # start compile the client path again.
    for package in ("engine", "bus", "workers", "berth"):
        compileall.compile_dir(os.path.join(REPO, package), quiet=1)
    base = tempfile.mkdtemp(prefix="berth-bench-", dir="/tmp")
    rootfs = build_busybox_rootfs(f"{base}/rootfs")
    floor = Floor(base, rootfs)
    berth = Berth(base)
    front_end = build_front_end(base)
    served(berth, front_end)
    client = berth.client()
    opened: list[Client] = []  # the throughput threads' own clients, closed at the end
    local = threading.local()

    def thread_client() -> Client:
        if not hasattr(local, "c"):
            local.c = berth.client()
            opened.append(local.c)  # list.append is atomic: no lock needed
        c: Client = local.c
        return c

    run_rm = ["run", "--rm", "--network", "none", rootfs, "/bin/true"]
    cli = [sys.executable, "-m", "berth", *run_rm]
    contenders: dict[str, Callable[[], object]] = {
        FLOOR: floor.run,
        "berth client library": lambda: client_lifecycle(client, rootfs, ["/bin/true"]),
        "berth CLI (run --rm)": lambda: _check(cli, berth.env),
        FRONT_END: lambda: _check([front_end, *run_rm], berth.env),
    }
    metered: Berth | None = None
    if args.metrics:
        metered = Berth(f"{base}/metered", {"BERTH_METRICS": "127.0.0.1:0"})
        metered_client = metered.client()
        contenders[METRICS_ON] = lambda: client_lifecycle(metered_client, rootfs, ["/bin/true"])
    skipped: dict[str, str] = {}
    ctr: Ctr | None = None
    if not args.no_peers:
        _ensure_peers()
        try:
            ctr = Ctr(base)
            contenders["ctr run --rm"] = lambda: _check(ctr.argv(rootfs)) if ctr else None
        except (OSError, RuntimeError) as exc:
            skipped["ctr run --rm"] = str(exc)
        try:
            _check(PODMAN + ["--rootfs", rootfs, "/bin/true"])
            contenders["podman run --rm --network none"] = lambda: _check(
                PODMAN + ["--rootfs", rootfs, "/bin/true"]
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            skipped["podman run --rm --network none"] = f"cannot run here: {exc}"
    try:
        for fn in contenders.values():  # warm-up
            fn()
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(args.rounds):
            for name, fn in contenders.items():
                times[name].append(_timed(fn))
        floor_med = statistics.median(times[FLOOR])
        print(f"\nLifecycle of one /bin/true container, {args.rounds} interleaved rounds")
        print(f"{'contender':<34} {'median ms':>10} {'p90 ms':>8} {'x floor':>8}")
        for name, ts in times.items():
            ts.sort()
            med = statistics.median(ts)
            p90 = ts[int(0.9 * (len(ts) - 1))]
            print(f"{name:<34} {med * 1000:>10.1f} {p90 * 1000:>8.1f} {med / floor_med:>8.2f}")
        for name, why in skipped.items():
            print(f"{name:<34} skipped: {why}")
        print(FLOOR_CONTAINS)
        if "ctr run --rm" in times:
            ratio = statistics.median(times[FRONT_END]) / statistics.median(times["ctr run --rm"])
            print(f"berth front end / ctr run --rm: {ratio:.2f}x")
        if args.cli_rounds > 0:
            cli_latency(berth, front_end, rootfs, args.cli_rounds)
        if metered is not None:
            off = statistics.median(times["berth client library"])
            on = statistics.median(times[METRICS_ON])
            print(f"metrics cost on the client library's lifecycle: {100 * (on / off - 1):+.1f}% "
                  "(medians; within the noise when the machine is busy)")
            per = _metric_cost()
            print(f"what metrics add per command (one observation at the broker and one at "
                  f"the worker): {per * 1e6:.1f} us = {100 * per / off:.4f}% of a lifecycle")

        many: dict[str, Callable[[], object]] = {
            FLOOR: lambda: floor.run(("sleep", "0.2")),
            "berth client library": lambda: client_lifecycle(thread_client(), rootfs,
                                                             ["sleep", "0.2"]),
        }
        if "podman run --rm --network none" in contenders:
            many["podman run --rm --network none"] = lambda: _check(
                PODMAN + ["--rootfs", rootfs, "sleep", "0.2"]
            )
        batches = throughput(many, args.many, args.concurrency, args.many_runs)
        print(f"\n{args.many} containers of 'sleep 0.2' at concurrency {args.concurrency} "
              f"(full lifecycle to removal), median of {args.many_runs} interleaved runs "
              "after a warm-up")
        print(f"{'contender':<34} {'seconds':>8} {'spread':>6} {'ctr/s':>8} {'x floor':>8}")
        rates = {name: args.many / statistics.median(ts) for name, ts in batches.items()}
        for name, ts in batches.items():
            spread = 100 * (max(ts) - min(ts)) / statistics.median(ts)
            print(f"{name:<34} {statistics.median(ts):>8.2f} {spread:>5.0f}% "
                  f"{rates[name]:>8.1f} {rates[name] / rates[FLOOR]:>8.2f}")
        print(FLOOR_CONTAINS)
        if "podman run --rm --network none" in rates:
            ratio = rates["berth client library"] / rates["podman run --rm --network none"]
            print(f"berth / podman throughput: {ratio:.2f}x")
    finally:
        for c in opened:
            c.close()
        client.close()
        berth.close()
        if metered is not None:
            metered_client.close()
            metered.close()
        if ctr is not None:
            ctr.close()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
