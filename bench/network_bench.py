"""Network setup cost: ``run --rm /bin/true`` on the default network against
``--network none``, for berth and (the anchor) podman, interleaved in one run.

berth's figure is the CLI, ``berth run --rm ROOTFS /bin/true`` as a fresh process
against ``berth up``; podman's is ``podman run --rm --rootfs ROOTFS /bin/true`` with
its default network and with ``--network none``. The table gives medians and the
milliseconds the default network adds to each.

    .venv/bin/python -m bench.network_bench [--rounds 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench.lifecycle_bench import Berth  # noqa: E402
from engine.images.rootfs import build_busybox_rootfs  # noqa: E402

PODMAN = ["podman", "--runtime", "runc", "run", "--rm", "--ulimit", "nofile=20000:20000",
          "--ulimit", "nproc=4096:4096"]  # as bench.lifecycle_bench runs it


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.decode(errors='replace')}")
    return elapsed * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--no-peers", action="store_true", help="skip podman")
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="berth-netbench-", dir="/tmp")
    rootfs = build_busybox_rootfs(os.path.join(base, "rootfs"))
    # bench.lifecycle_bench's engine defaults to no network: this one must have berth's.
    berth = Berth(base, extra_env={"BERTH_DEFAULT_NETWORK": "berth"})
    cli = [sys.executable, "-m", "berth", "run", "--rm"]
    contenders = {
        "berth, default network": (cli + [rootfs, "/bin/true"], berth.env),
        "berth, --network none": (cli + ["--network", "none", rootfs, "/bin/true"], berth.env),
    }
    if not args.no_peers and shutil.which("podman"):
        contenders["podman, default network"] = (PODMAN + ["--rootfs", rootfs, "/bin/true"],
                                                 None)
        contenders["podman, --network none"] = (PODMAN + ["--network", "none", "--rootfs",
                                                          rootfs, "/bin/true"], None)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    try:
        for argv, env in contenders.values():  # warm-up, untimed
            timed(argv, env)
        order = list(contenders)
        for i in range(args.rounds):
            for name in order if i % 2 == 0 else reversed(order):
                argv, env = contenders[name]
                times[name].append(timed(argv, env))
    finally:
        berth.close()
        shutil.rmtree(base, ignore_errors=True)
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"{'contender':28} {'median ms':>10}")
    for name, m in medians.items():
        print(f"{name:28} {m:10.1f}")
    print(f"berth: the default network adds "
          f"{medians['berth, default network'] - medians['berth, --network none']:.1f} ms")
    if "podman, default network" in medians:
        print(f"podman: the default network adds "
              f"{medians['podman, default network'] - medians['podman, --network none']:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
