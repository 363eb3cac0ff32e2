"""Load: 8 publishers, 2,000 mixed commands, 2 worker processes, 1 broker, 1 store.

Two nodes on one machine (each worker its own BERTH_ROOT/BERTH_RUN) share one
SQLite store; each publisher drives short busybox ``sleep`` lifecycles on one node
(create, start, exec, pause/unpause, stop or kill+wait, remove -f) with queries in
between. Afterwards every stream's versions are contiguous, the read model equals
a rebuild, the hash chain holds, and every acknowledged command id has exactly
one outcome (``workload.check_log``).
"""

from __future__ import annotations

import time

from tests.faults.cluster import Cluster
from tests.faults.workload import Ledger, Publisher, check_log, run_publishers

PUBLISHERS = 8
COMMANDS = 2000
NODES = ("n1", "n2")


def test_two_workers_eight_publishers_two_thousand_commands(cluster: Cluster) -> None:
    cluster.start_broker_thread()
    for node in NODES:
        cluster.start_worker(node, wait=False)
    for node in NODES:
        cluster.wait_serving(node)
    ledger = Ledger()
    publishers = [
        Publisher(cluster.client(timeout=10, retries=2), ledger, cluster.rootfs,
                  NODES[i % len(NODES)], budget=COMMANDS // PUBLISHERS, seed=100 + i,
                  queries=2)
        for i in range(PUBLISHERS)
    ]
    started = time.monotonic()
    run_publishers(publishers, timeout=300)
    elapsed = time.monotonic() - started
    assert len(ledger) == COMMANDS, f"{len(ledger)} answered of {COMMANDS}"
    with cluster.store() as store:
        counts = check_log(store, ledger)
        nodes = {s.node for s in store.list_containers(all=True)}
    assert counts["acknowledged"] > COMMANDS // 4
    assert nodes <= set(NODES)
    print(f"\n{COMMANDS} commands in {elapsed:.1f}s: {counts}")
