"""Broker failover under load: the active broker of a Binary Star pair killed -9
while publishers send mixed container commands, round after round.

    .venv/bin/python -m bench.failover_bench              # 5 rounds
    .venv/bin/python -m bench.failover_bench --rounds 3 --publishers 4 --timeout 1

Each round starts a fresh pair (ipc, private directories), one worker connected to
both, and publishers that resend every command with the same id until answered
(tests/faults/workload.py). After a short warm-up the active broker is killed -9.
Failover time = from the kill to the first command answered after it. Afterwards
the store is checked: every acknowledged command has exactly one outcome, no
position gap and no doubled event (``check_log``): the "lost" and "doubled" columns
are what it found (it raises on any). The client timeout bounds how soon a
publisher turns to the backup, so it is part of every figure; it is printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from bus.client import Client
from engine.errors import BerthError
from engine.images.rootfs import build_busybox_rootfs
from engine.store.store import EventStore
from tests.faults.workload import Ledger, Publisher, check_log, run_publishers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _berth(base: str, argv: list[str], log: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
    env.update(PYTHONPATH=REPO, BERTH_ROOT=f"{base}/root", BERTH_RUN=f"{base}/run",
               BERTH_DB=f"sqlite:///{base}/berth.db")
    with open(f"{base}/{log}", "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "berth", *argv], env=env,
                                stdout=subprocess.DEVNULL, stderr=out)


def _pair_state(endpoint: str) -> str | None:
    try:
        with Client(endpoint, timeout=0.5, retries=0) as c:
            return str(c.ping()["pair"])
    except BerthError:
        return None


def one_round(base: str, rootfs: str, publishers: int, timeout: float) -> tuple[float, int]:
    bus = {n: f"ipc://{base}/{n}" for n in "ab"}
    procs = {
        "a": _berth(base, ["broker", "--bind", f"{bus['a']}/bus.sock", "--role", "primary",
                           "--peer", f"{bus['b']}/state.sock"], "a.log"),
        "b": _berth(base, ["broker", "--bind", f"{bus['b']}/bus.sock", "--role", "backup",
                           "--peer", f"{bus['a']}/state.sock"], "b.log"),
    }
    try:
        deadline = time.monotonic() + 30
        while (_pair_state(f"{bus['a']}/bus.sock"), _pair_state(f"{bus['b']}/bus.sock")) \
                != ("active", "passive"):
            if time.monotonic() > deadline:
                raise SystemExit("the pair did not settle")
            time.sleep(0.05)
        procs["worker"] = _berth(base, ["worker", "--node", "local", "--connect",
                                        f"{bus['a']}/worker.sock,{bus['b']}/worker.sock"],
                                 "worker.log")
        ledger = Ledger()
        frontends = f"{bus['a']}/bus.sock,{bus['b']}/bus.sock"
        clients = [Client(frontends, timeout=timeout, retries=0) for _ in range(publishers)]
        pubs = [Publisher(c, ledger, rootfs, "local", seed=i, deadline=120.0)
                for i, c in enumerate(clients)]
        failover: list[float] = []

        def kill_the_active() -> None:
            while len(ledger) < 40 and not ledger.errors:
                time.sleep(0.02)
            answered = len(ledger)
            killed = time.monotonic()
            os.kill(procs["a"].pid, signal.SIGKILL)
            while len(ledger) == answered and not ledger.errors:
                time.sleep(0.005)
            failover.append(time.monotonic() - killed)
            target = len(ledger) + 40
            while len(ledger) < target and not ledger.errors:
                time.sleep(0.02)

        run_publishers(pubs, kill_the_active, timeout=180)
        for c in clients:
            c.close()
        if ledger.errors:
            raise SystemExit(f"publishers failed: {ledger.errors[:3]}")
        with EventStore(f"sqlite:///{base}/berth.db") as store:
            check_log(store, ledger)  # raises on a lost or doubled command
        return failover[0], len(ledger)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        subprocess.run(["sh", "-c", f"for c in $(runc --root {base}/run/runtime/runc list -q "
                        "2>/dev/null); do runc --root " + f"{base}/run/runtime/runc delete -f "
                        "$c; done"], check=False, capture_output=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--publishers", type=int, default=4)
    p.add_argument("--timeout", type=float, default=1.0,
                   help="the publishers' client timeout, seconds per attempt")
    args = p.parse_args()
    top = tempfile.mkdtemp(prefix="berth-failover-", dir="/tmp")
    try:
        rootfs = build_busybox_rootfs(f"{top}/rootfs")
        times, commands = [], 0
        for r in range(args.rounds):
            base = f"{top}/r{r}"
            os.makedirs(base)
            took, answered = one_round(base, rootfs, args.publishers, args.timeout)
            times.append(took)
            commands += answered
            print(f"round {r + 1}: failover {took:.2f}s, {answered} commands answered")
        times.sort()
        print(f"\nprimary broker killed -9 under {args.publishers} publishers, {args.rounds} "
              f"rounds, client timeout {args.timeout:g}s")
        print(f"failover p50 {statistics.median(times):.2f}s, max {times[-1]:.2f}s; "
              f"{commands} commands answered, lost 0, doubled 0 (checked in the log)")
    finally:
        shutil.rmtree(top, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
