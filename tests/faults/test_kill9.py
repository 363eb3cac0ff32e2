"""kill -9 of a worker, of the broker and of a container's conmon while commands flow.

Each test runs real engine processes and real busybox containers, kills one part
with SIGKILL mid-load, brings it back where that makes sense, and then proves on
the store that every acknowledged command ended in events or in a recorded failure
exactly once, with no gap and no doubled event (``workload.check_log``).
"""

from __future__ import annotations

import os
import signal

from bus.client import Client
from engine.runtime.waits import pid_alive, wait_pids_exit
from tests.faults.cluster import Cluster
from tests.faults.workload import Ledger, Publisher, check_log, run_publishers
from tests.helpers import wait_until

PUBLISHERS = 4


def _publishers(cluster: Cluster, ledger: Ledger, node: str = "local", n: int = PUBLISHERS,
                **kw: object) -> list[Publisher]:
    return [Publisher(cluster.client(timeout=2, retries=0), ledger, cluster.rootfs, node,
                      seed=i, **kw)  # type: ignore[arg-type]
            for i in range(n)]


def _grows(ledger: Ledger, by: int, timeout: float = 60) -> None:
    target = len(ledger) + by
    wait_until(lambda: len(ledger) >= target or ledger.errors, timeout, interval=0.02,
               what=f"{by} more answered commands")
    assert not ledger.errors, ledger.errors


def test_worker_kill9_mid_load_loses_and_doubles_nothing(cluster: Cluster) -> None:
    cluster.start_broker_thread()
    cluster.start_worker("local")
    ledger = Ledger()

    def fault() -> None:
        for _ in range(3):
            _grows(ledger, 20)
            wait_until(lambda: _state_change_in_flight(cluster), 30, interval=0.001,
                       what="a container command in flight")
            cluster.kill9(cluster.nodes["local"].proc)
            # The broker notices the missing heartbeats; commands routed to the dead
            # worker wait for the next one, fresh ones are refused and resent.
            cluster.start_worker("local")
        _grows(ledger, 20)

    run_publishers(_publishers(cluster, ledger), fault)
    with cluster.store() as store:
        counts = check_log(store, ledger)
    assert counts["acknowledged"] > 0


def _state_change_in_flight(cluster: Cluster) -> bool:
    """A command that changes a container is at the worker right now."""
    assert cluster.broker is not None
    try:
        pending = list(cluster.broker.router.outstanding.values())
    except RuntimeError:  # the broker thread changed the dict meanwhile
        return False
    return any(p.command.type.startswith("container.") and p.command.type != "container.wait"
               for p in pending)


def test_broker_kill9_mid_load_loses_and_doubles_nothing(cluster: Cluster) -> None:
    cluster.start_broker_process()
    cluster.start_worker("local")
    ledger = Ledger()

    def fault() -> None:
        _grows(ledger, 40)
        cluster.kill9(cluster.broker_proc)
        # Same endpoints: the stale ipc files of the killed broker are taken over.
        cluster.start_broker_process()
        cluster.wait_serving("local")  # the worker reconnects on its own
        _grows(ledger, 40)

    run_publishers(_publishers(cluster, ledger), fault)
    with cluster.store() as store:
        check_log(store, ledger)
    assert ledger.resends > 0, "no command was in flight when the broker died"


def _running(client: Client, rootfs: str, *, paused: bool = False) -> dict[str, object]:
    cid = client.create(rootfs=rootfs, args=["sleep", "600"], node="local").result["id"]
    client.start(cid, node="local")
    if paused:
        client.pause(cid, node="local")
    return client.inspect(cid)


def _exited(client: Client, cid: str) -> dict[str, object]:
    state: dict[str, object] = wait_until(
        lambda: (s := client.inspect(cid))["state"] == "exited" and s, 20, what=f"{cid} exited")
    return state


def _assert_lost_and_killed(client: Client, info: dict[str, object]) -> None:
    cid, pid = str(info["id"]), int(info["pid"])  # type: ignore[call-overload]
    state = _exited(client, cid)
    assert state["exit_code"] == -1 and state["exit_reason"] == "conmon_lost"
    assert wait_pids_exit([pid], 10), "the unsupervised container process still runs"
    assert not pid_alive(pid) or _zombie(pid)
    history = client.history(cid)["events"]
    kills = [e for e in history if e["type"] == "container.signalled"]
    assert kills and kills[-1]["actor"].startswith("berth-worker@"), history


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def test_conmon_kill9_while_worker_runs_records_unknown_exit_and_kills(cluster: Cluster) -> None:
    cluster.start_broker_thread()
    cluster.start_worker("local")
    c = cluster.client(timeout=5, retries=2)
    running = _running(c, cluster.rootfs)
    paused = _running(c, cluster.rootfs, paused=True)
    ledger = Ledger()

    def fault() -> None:
        _grows(ledger, 20)
        for info in (running, paused):
            os.kill(int(info["conmon_pid"]), signal.SIGKILL)  # type: ignore[call-overload]
        for info in (running, paused):
            _assert_lost_and_killed(c, info)
        _grows(ledger, 20)

    run_publishers(_publishers(cluster, ledger, n=2), fault)
    # The engine still runs and the killed containers can be removed.
    for info in (running, paused):
        c.remove(str(info["id"]), node="local")
    with cluster.store() as store:
        check_log(store, ledger)


def test_conmon_gone_while_worker_down_is_settled_at_start(cluster: Cluster) -> None:
    cluster.start_broker_thread()
    cluster.start_worker("local")
    c = cluster.client(timeout=5, retries=2)
    info = _running(c, cluster.rootfs)
    keeps = _running(c, cluster.rootfs)
    cluster.kill9(cluster.nodes["local"].proc)
    os.kill(int(info["conmon_pid"]), signal.SIGKILL)  # type: ignore[call-overload]
    assert wait_pids_exit([int(info["conmon_pid"])], 10)  # type: ignore[call-overload]
    assert pid_alive(int(info["pid"]))  # type: ignore[call-overload]  # the container outlives conmon
    cluster.start_worker("local")
    _assert_lost_and_killed(c, info)
    assert c.inspect(str(keeps["id"]))["state"] == "running"
    with cluster.store() as store:
        assert store.verify_read_model() == []
        assert store.verify_chain() is None
