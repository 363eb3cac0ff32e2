"""A rolling restart under load: every worker stopped (SIGTERM) and started again,
one node at a time, while 8 publishers send mixed commands. Nothing is refused:
a command that reaches a draining worker is handed back and waits in the broker
for the node's next worker, a command sent while the node has no worker waits for
it; none is lost or doubled (``workload.check_log``)."""

from __future__ import annotations

import signal
import time

from tests.faults.cluster import Cluster
from tests.faults.workload import Ledger, Publisher, check_log, run_publishers

PUBLISHERS = 8
NODES = ("n1", "n2")


def test_a_rolling_restart_of_every_worker_fails_no_command(cluster: Cluster) -> None:
    cluster.start_broker_thread()
    for node in NODES:
        cluster.start_worker(node, wait=False)
    for node in NODES:
        cluster.wait_serving(node)
    ledger = Ledger()
    publishers = [
        Publisher(cluster.client(timeout=15, retries=0), ledger, cluster.rootfs,
                  NODES[i % len(NODES)], seed=300 + i, queries=1)
        for i in range(PUBLISHERS)
    ]
    pauses: list[float] = []

    def roll() -> None:
        time.sleep(1.0)  # under load first
        for node in NODES:
            proc = cluster.nodes[node].proc
            assert proc is not None
            before = len(ledger)
            stopped = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, f"worker {node} did not drain and exit cleanly"
            cluster.start_worker(node)
            pauses.append(time.monotonic() - stopped)
            deadline = time.monotonic() + 30  # let commands flow through the new worker
            while len(ledger) < before + 40 and time.monotonic() < deadline:
                time.sleep(0.05)

    started = time.monotonic()
    run_publishers(publishers, during=roll, timeout=120)
    elapsed = time.monotonic() - started
    assert not ledger.errors, ledger.errors
    assert ledger.refusals == 0, f"{ledger.refusals} commands were refused during the restart"
    with cluster.store() as store:
        counts = check_log(store, ledger)
    assert counts["acknowledged"] > 0
    assert cluster.broker is not None and cluster.broker.stats["handed_back"] + \
        cluster.broker.stats["held_for_worker"] > 0, "the restart never met a command"
    print(f"\nrolling restart of {len(NODES)} workers: {len(ledger)} commands in "
          f"{elapsed:.1f}s, 0 refused, node pauses {', '.join(f'{p:.2f}s' for p in pauses)}, "
          f"broker {cluster.broker.stats['handed_back']} handed back, "
          f"{cluster.broker.stats['held_for_worker']} held; {counts}")
