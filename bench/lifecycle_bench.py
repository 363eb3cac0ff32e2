"""Container lifecycle cost: berth (client library and CLI) against the floor and peers.

Every round runs each contender once, interleaved, so machine noise hits them
alike; the table gives medians and ratios measured in this one run.

* floor: conmon + runc driven with no engine (berth's runtime layer alone: create
  through conmon, read the pid, ``runc start``, wait for the exit file with
  inotify, ``runc delete``);
* berth client: ``create``, ``start``, ``wait``, ``remove`` through the Python client
  against ``berth up`` (broker, worker, SQLite on ipc sockets);
* berth CLI: ``berth run --rm ROOTFS /bin/true`` as a fresh process;
* ``ctr run --rm --rootfs`` (a private containerd) and
  ``podman run --rm --network none --rootfs`` as peers (installed with
  ``scripts/install.sh --bench`` when missing; skipped, with the reason, if they
  cannot run).

Then 200 containers of ``sleep 0.2`` at concurrency 8, for berth, the floor and podman.

    .venv/bin/python -m bench.lifecycle_bench [--rounds 30] [--many 200] [--concurrency 8]
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
from engine.errors import BerthError  # noqa: E402
from engine.ids import new_container_id  # noqa: E402
from engine.rootfs import build_busybox_rootfs  # noqa: E402
from engine.runtime import OCIRuntime, RuntimeConfig  # noqa: E402
from engine.spec import RunSpec  # noqa: E402
from workers.inotify import Inotify  # noqa: E402

PODMAN = ["podman", "--runtime", "runc", "run", "--rm", "--network", "none",
          "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096"]


class Floor:
    """conmon + runc with no engine: the cost berth adds nothing to."""

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

    def __init__(self, base: str) -> None:
        self.env = dict(os.environ, BERTH_ROOT=f"{base}/root", BERTH_RUN=f"{base}/run")
        for key in ("BERTH_BUS", "BERTH_BUS_WORKERS", "BERTH_BUS_EVENTS", "BERTH_DB"):
            self.env.pop(key, None)
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


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _check(argv: list[str], env: dict[str, str] | None = None) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--many", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--no-peers", action="store_true")
    args = p.parse_args()

    # Measure berth as installed: scripts/install.sh byte-compiles it, and where
    # PYTHONDONTWRITEBYTECODE is set a source edit since then would make every CLI
    # start compile the client path again.
    for package in ("engine", "bus", "workers", "berth"):
        compileall.compile_dir(os.path.join(REPO, package), quiet=1)
    base = tempfile.mkdtemp(prefix="berth-bench-", dir="/tmp")
    rootfs = build_busybox_rootfs(f"{base}/rootfs")
    floor = Floor(base, rootfs)
    berth = Berth(base)
    client = berth.client()
    cli = [sys.executable, "-m", "berth", "run", "--rm", rootfs, "/bin/true"]
    contenders: dict[str, Callable[[], object]] = {
        "floor (conmon+runc, no engine)": floor.run,
        "berth client library": lambda: client_lifecycle(client, rootfs, ["/bin/true"]),
        "berth CLI (run --rm)": lambda: _check(cli, berth.env),
    }
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
        floor_med = statistics.median(times["floor (conmon+runc, no engine)"])
        print(f"\nLifecycle of one /bin/true container, {args.rounds} interleaved rounds")
        print(f"{'contender':<34} {'median ms':>10} {'p90 ms':>8} {'x floor':>8}")
        for name, ts in times.items():
            ts.sort()
            med = statistics.median(ts)
            p90 = ts[int(0.9 * (len(ts) - 1))]
            print(f"{name:<34} {med * 1000:>10.1f} {p90 * 1000:>8.1f} {med / floor_med:>8.2f}")
        for name, why in skipped.items():
            print(f"{name:<34} skipped: {why}")

        print(f"\n{args.many} containers of 'sleep 0.2' at concurrency {args.concurrency} "
              "(full lifecycle to removal)")
        print(f"{'contender':<34} {'seconds':>8} {'ctr/s':>8} {'x floor':>8}")
        clients = threading.local()

        def berth_one() -> None:
            if not hasattr(clients, "c"):
                clients.c = berth.client()
            client_lifecycle(clients.c, rootfs, ["sleep", "0.2"])

        many: dict[str, Callable[[], object]] = {
            "floor (conmon+runc, no engine)": lambda: floor.run(("sleep", "0.2")),
            "berth client library": berth_one,
        }
        if "podman run --rm --network none" in contenders:
            many["podman run --rm --network none"] = lambda: _check(
                PODMAN + ["--rootfs", rootfs, "sleep", "0.2"]
            )
        rates: dict[str, float] = {}
        for name, fn in many.items():
            with ThreadPoolExecutor(args.concurrency) as pool:
                start = time.perf_counter()
                # fn bound as a default: the lambda must not late-bind the loop variable.
                list(pool.map(lambda _i, fn=fn: fn(), range(args.many)))
                elapsed = time.perf_counter() - start
            rates[name] = args.many / elapsed
            vs_floor = rates[name] / rates["floor (conmon+runc, no engine)"]
            print(f"{name:<34} {elapsed:>8.2f} {rates[name]:>8.1f} {vs_floor:>8.2f}")
        if "podman run --rm --network none" in rates:
            ratio = rates["berth client library"] / rates["podman run --rm --network none"]
            print(f"berth / podman throughput: {ratio:.2f}x")
    finally:
        client.close()
        berth.close()
        if ctr is not None:
            ctr.close()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
