"""From a container's death to its replacement running: ``--restart always`` containers
whose process is killed -9 from outside, median and p99 over ``--kills`` kills.

Each kill is ``kill -9`` of the container's pid (as ``inspect`` gives it), timed from
just before the signal; "running again" is the ``container.started`` recorded after the
policy's ``container.restarting``, read with the log's own timestamps (the engine and
this process share the host's clock). The time is broken down into:

* kill -> exit recorded: conmon reaps the process and writes its exit file, the
  worker's exit monitor (inotify) reads it and records ``container.exited``;
* exit -> restarting recorded: the restart policy judges the exit from the log and
  records its intent with the backoff delay (``engine.restarts.rules``);
* restarting -> started recorded: the scheduler waits out the delay, then ``runc
  delete``, conmon and ``runc create``, ``runc start``, and ``container.started``;
* kill -> started seen: when the ``started`` event reached a subscriber here.

The backoff starts at 100 ms, doubles with every restart that followed a short run
and resets once a container has run ``engine.restarts.rules.RESET_AFTER_S`` (10 s). The
kills go round-robin over ``--containers`` containers, spaced so that each runs at
least that long between two of its kills: every restart waits the first backoff, as a
container that crashes now and then would. ``--spacing`` shorter than that shows the
backoff growing. The delay each ``restarting`` records is subtracted for the "minus
backoff" rows (goal: median <= 300 ms plus the configured backoff).

The containers have no network (as bench.lifecycle_bench's engine runs them): what
is timed is the policy and the runtime, not a CNI ADD.

    .venv/bin/python -m bench.restart_bench [--kills 50] [--containers 10] [--spacing S]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench.lifecycle_bench import Berth  # noqa: E402
from bus.client import Client  # noqa: E402
from bus.protocol import EventMessage  # noqa: E402
from bus.subscription import Subscription  # noqa: E402
from engine.images.rootfs import build_busybox_rootfs  # noqa: E402
from engine.restarts.rules import RESET_AFTER_S  # noqa: E402

TYPES = ("container.exited", "container.restarting", "container.started")
WAIT_S = 90.0
"""How long one restart may take before the bench gives up (a backoff grown by a
short ``--spacing`` included)."""


def stamp(event: EventMessage) -> float:
    return datetime.fromisoformat(event.recorded_at).timestamp()


class Kill:
    """One kill and what the log and the subscriber saw after it."""

    def __init__(self, container: str, at: float) -> None:
        self.container, self.at = container, at
        self.exited: float | None = None
        self.restarting: float | None = None
        self.delay_s = 0.0
        self.started: float | None = None
        self.seen: float | None = None


def restart_once(client: Client, events: Subscription, cid: str) -> Kill:
    """Kill ``cid``'s process with SIGKILL and follow its events until it runs again."""
    pid = int(client.inspect(cid)["pid"])
    kill = Kill(cid, time.time())
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + WAIT_S
    while kill.started is None:
        event = events.get(max(0.0, deadline - time.monotonic()))
        if event is None:
            raise SystemExit(f"{cid[:12]} did not run again within {WAIT_S:.0f}s of kill -9")
        if event.stream != cid:
            continue
        if event.type == "container.exited":
            kill.exited = stamp(event)
        elif event.type == "container.restarting" and kill.exited is not None:
            kill.restarting = stamp(event)
            kill.delay_s = float(str(event.data.get("delay_s", 0.0)))
        elif event.type == "container.started" and kill.restarting is not None:
            kill.started, kill.seen = stamp(event), time.time()
    state = client.inspect(cid)
    if state.get("state") != "running" or int(state["pid"]) == pid:
        raise SystemExit(f"{cid[:12]}: started recorded, but inspect says {state.get('state')} "
                         f"with pid {state.get('pid')}")
    return kill


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[round(q * (len(ordered) - 1))]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--containers", type=int, default=10,
                        help="containers the kills go round (default 10)")
    parser.add_argument("--spacing", type=float, default=None, metavar="S",
                        help="seconds from one kill to the next (default: enough for each "
                             f"container to run {RESET_AFTER_S:g} s between its kills, so "
                             "every backoff is the first)")
    args = parser.parse_args()
    if args.kills < 2 or args.containers < 1:
        parser.error("--kills at least 2, --containers at least 1")
    spacing = (args.spacing if args.spacing is not None
               else max(0.8, (RESET_AFTER_S + 1.0) / args.containers))
    base = tempfile.mkdtemp(prefix="berth-rb-", dir="/tmp")
    berth: Berth | None = None
    kills: list[Kill] = []
    try:
        rootfs = build_busybox_rootfs(os.path.join(base, "busybox"))
        berth = Berth(base)
        client = berth.client()
        ids = []
        for n in range(args.containers):
            reply = client.create(name=f"rb-{os.getpid()}-{n}", rootfs=rootfs,
                                  args=["sleep", "600"], restart="always")
            ids.append(str(reply.result["id"]))
            client.start(ids[-1])
        with client.subscribe(None, types=TYPES) as events:
            next_at = time.monotonic()
            for k in range(args.kills):
                time.sleep(max(0.0, next_at - time.monotonic()))  # the schedule, not a sync
                next_at = time.monotonic() + spacing
                kills.append(restart_once(client, events, ids[k % len(ids)]))
                done = kills[-1]
                assert done.started is not None
                print(f"  kill {k + 1}/{args.kills}: running again after "
                      f"{(done.started - done.at) * 1000:.0f} ms (backoff "
                      f"{done.delay_s * 1000:.0f} ms)", file=sys.stderr, flush=True)
        for cid in ids:
            client.remove(cid, force=True)
        client.close()
    finally:
        if berth is not None:
            berth.close()
        shutil.rmtree(base, ignore_errors=True)

    def ms(values: list[float]) -> str:
        return (f"{statistics.median(values) * 1000:>10.1f} {percentile(values, 0.99) * 1000:>8.1f}"
                f" {max(values) * 1000:>8.1f}")

    raw = [k.started - k.at for k in kills if k.started is not None]
    delays = [k.delay_s for k in kills]
    rows = {
        "kill -> exit recorded": [k.exited - k.at for k in kills if k.exited is not None],
        "exit -> restarting recorded": [k.restarting - k.exited for k in kills
                                        if k.restarting is not None and k.exited is not None],
        "restarting -> started recorded": [k.started - k.restarting for k in kills
                                           if k.started is not None and k.restarting is not None],
        "kill -> started recorded (raw)": raw,
        "the same minus the backoff": [r - d for r, d in zip(raw, delays, strict=True)],
        "kill -> started seen (subscriber)": [k.seen - k.at for k in kills if k.seen is not None],
        "backoff recorded": delays,
    }
    print(f"\n{len(kills)} kill -9 of 'sleep 600' under --restart always, round-robin over "
          f"{args.containers} container{'s' if args.containers > 1 else ''}, one kill every "
          f"{spacing:.2f}s")
    print(f"{'step':<36} {'median ms':>10} {'p99 ms':>8} {'max ms':>8}")
    for name, values in rows.items():
        print(f"{name:<36} {ms(values)}")
    minus = statistics.median(rows["the same minus the backoff"]) * 1000
    print(f"median minus backoff: {minus:.0f} ms (goal: <= 300 ms plus the configured backoff; "
          f"backoffs recorded: {', '.join(f'{d * 1000:.0f} ms' for d in sorted(set(delays)))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
