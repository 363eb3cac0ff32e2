"""Intent before action (DESIGN guarantee 7), proved by killing a worker -9 inside
each window of a checkpoint and an exec.

The windows are hit exactly, not by timing: the worker is started with a crash point
armed (``engine.faults``) and kills itself with SIGKILL when it reaches it. Then a
fresh worker starts, reconciles, and the log must say what really happened: the
image CRIU wrote is recorded and restorable, a container whose dump never happened
still runs, an exec session runs once and its real exit code is recorded.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest

from bus.client import Client
from engine import command_types as ct
from engine.errors import BerthError
from engine.faults import ARMED_ENV, POINTS_ENV, arming_text
from tests.faults.cluster import Cluster
from tests.helpers import wait_until

COUNTER = "i=0; while true; do echo count=$i; i=$((i+1)); sleep 0.05; done"


def _arm(cluster: Cluster, *points: str) -> None:
    """Start the next worker with ``points`` armed: the environment names them and a
    file only this test wrote confirms them (engine.faults explains why both)."""
    joined = ",".join(points)
    path = os.path.join(cluster.base, "faults.armed")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(arming_text(joined))
    cluster.extra_env.update({POINTS_ENV: joined, ARMED_ENV: path})


def _disarm(cluster: Cluster) -> None:
    cluster.extra_env.pop(POINTS_ENV, None)
    cluster.extra_env.pop(ARMED_ENV, None)


def _restart_armed(cluster: Cluster, *points: str) -> None:
    node = cluster.nodes["local"]
    assert node.proc is not None
    node.proc.terminate()
    node.proc.wait(20)
    _arm(cluster, *points)
    cluster.start_worker("local")
    _disarm(cluster)


def _died_by_its_own_hand(cluster: Cluster) -> None:
    proc = cluster.nodes["local"].proc
    assert proc is not None
    wait_until(lambda: proc.poll() is not None, 120, interval=0.02,
               what="the worker reaching its crash point")
    assert proc.returncode == -9, f"the worker ended with {proc.returncode}, not SIGKILL"


def _send_dying(client: Client, type: str, cid: str, **args: Any) -> Any:
    """Send a command to a worker that will die with it: the reply may never come."""
    command = client.command(type, cid, "local", args)
    try:
        client.request(command, reply_timeout=3)
    except BerthError:
        pass
    return command


def _counts(cluster: Cluster, cid: str) -> list[int]:
    path = os.path.join(cluster.nodes["local"].root, "containers", cid, "ctr.log")
    try:
        with open(path, errors="replace") as f:
            return [int(line.rsplit("count=", 1)[1]) for line in f if "count=" in line]
    except FileNotFoundError:
        return []


def _types(client: Client, cid: str) -> list[str]:
    return [e["type"] for e in client.history(cid)["events"]]


@pytest.fixture
def counter(cluster: Cluster) -> tuple[Client, str]:
    assert os.access(os.environ.get("BERTH_CRIU", "/opt/berth/criu/bin/criu"), os.X_OK)
    cluster.start_broker_thread()
    cluster.start_worker("local")
    client = cluster.client(timeout=10, retries=0)
    cid = client.create(rootfs=cluster.rootfs, args=["sh", "-c", COUNTER],
                        node="local").result["id"]
    client.start(cid, node="local")
    wait_until(lambda: len(_counts(cluster, cid)) >= 3, 15, what="counter output")
    return client, cid


@pytest.mark.parametrize("point", ["checkpoint.dumping", "checkpoint.dumped",
                                   "container.checkpoint.acted"])
def test_a_checkpoint_whose_worker_dies_is_recorded_from_its_image(
        cluster: Cluster, counter: tuple[Client, str], point: str) -> None:
    client, cid = counter
    # An earlier checkpoint and restore: its image must survive the next checkpoint.
    first = client.checkpoint(cid, node="local", reply_timeout=120).result["image_path"]
    client.restore(cid, node="local", reply_timeout=60)
    wait_until(lambda: client.inspect(cid)["state"] == "running", 10, what="restored")

    _restart_armed(cluster, point)
    command = _send_dying(client, ct.CHECKPOINT, cid)
    _died_by_its_own_hand(cluster)
    cluster.start_worker("local")

    state = client.inspect(cid)
    assert state["state"] == "exited", state
    assert state["exit_reason"] == "checkpoint", state
    second = state["checkpoint_path"]
    assert second != first and os.path.isfile(os.path.join(second, "inventory.img"))
    assert os.path.isfile(os.path.join(first, "inventory.img")), "the first image was lost"
    types = _types(client, cid)
    assert types[-3:] == ["container.checkpoint_requested", "container.checkpointed",
                          "container.exited"], types
    assert "command.failed" not in types
    # The resend of the same command id gets the recorded end, and changes nothing.
    reply = client.request(command, reply_timeout=20)
    assert reply.ok and _types(client, cid) == types
    # The image is the real thing: the counter goes on from where it stopped.
    last = _counts(cluster, cid)[-1]
    client.restore(cid, node="local", reply_timeout=60)
    wait_until(lambda: _counts(cluster, cid)[-1] >= last + 2, 15, what="restored counter")
    assert [n for n in _counts(cluster, cid) if n > last][0] == last + 1
    with cluster.store() as store:
        assert store.verify_read_model() == []


def test_a_checkpoint_whose_worker_dies_before_dumping_leaves_the_container_running(
        cluster: Cluster, counter: tuple[Client, str]) -> None:
    client, cid = counter
    _restart_armed(cluster, "container.checkpoint.intended")
    command = _send_dying(client, ct.CHECKPOINT, cid)
    _died_by_its_own_hand(cluster)
    cluster.start_worker("local")

    state = client.inspect(cid)
    assert state["state"] == "running", state
    pid = int(state["pid"])
    status = subprocess.run(["grep", "-q", "State:.*[RS]", f"/proc/{pid}/status"],
                            check=False)
    assert status.returncode == 0, "the container is not running (frozen or gone)"
    before = len(_counts(cluster, cid))
    wait_until(lambda: len(_counts(cluster, cid)) > before + 2, 10, what="counter goes on")
    types = _types(client, cid)
    assert types[-2:] == ["container.checkpoint_requested", "command.failed"], types
    reply = client.request(command, reply_timeout=20, check=False)
    assert not reply.ok and "interrupted" in (reply.message or "")
    assert _types(client, cid) == types


# --------------------------------------------------------------------------- exec

# Each run of the session leaves one line in the container's own log (PID 1's stdout),
# so a second process for the same command would show as a second line.
SESSION = "echo ran-$MARK > /proc/1/fd/1; sleep 2; echo done; exit 7"


def _runs(cluster: Cluster, cid: str, mark: str) -> int:
    path = os.path.join(cluster.nodes["local"].root, "containers", cid, "ctr.log")
    with open(path, errors="replace") as f:
        return sum(1 for line in f if f"ran-{mark}" in line)


def _exec_events(client: Client, cid: str) -> list[tuple[str, Any]]:
    return [(e["type"], e["data"].get("exit_code")) for e in client.history(cid)["events"]
            if e["type"].startswith("container.exec_")]


@pytest.fixture
def sleeper(cluster: Cluster) -> tuple[Client, str]:
    cluster.start_broker_thread()
    cluster.start_worker("local")
    client = cluster.client(timeout=10, retries=0)
    cid = client.create(rootfs=cluster.rootfs, args=["sleep", "600"], node="local").result["id"]
    client.start(cid, node="local")
    return client, cid


def test_an_exec_whose_worker_dies_runs_once_and_its_real_exit_code_is_recorded(
        cluster: Cluster, sleeper: tuple[Client, str]) -> None:
    client, cid = sleeper
    _restart_armed(cluster, "container.exec.started")
    command = _send_dying(client, ct.EXEC, cid, cmd=["sh", "-c", SESSION], env=["MARK=a"])
    _died_by_its_own_hand(cluster)
    wait_until(lambda: _runs(cluster, cid, "a") == 1, 10, what="the session's process")
    cluster.start_worker("local")  # while the session still runs under its conmon
    # The resend follows the running session instead of starting another.
    reply = client.request(command, reply_timeout=30)
    assert reply.result["exit_code"] == 7 and reply.result["output"] == "done\n"
    assert _runs(cluster, cid, "a") == 1
    assert _exec_events(client, cid) == [("container.exec_requested", None),
                                         ("container.exec_started", None),
                                         ("container.exec_exited", 7)]
    assert client.inspect(cid)["exec_sessions"] == []
    with cluster.store() as store:
        assert store.verify_read_model() == []


def test_an_exec_outliving_its_worker_gets_its_exit_recorded_without_a_resend(
        cluster: Cluster, sleeper: tuple[Client, str]) -> None:
    client, cid = sleeper
    _restart_armed(cluster, "container.exec.started")
    _send_dying(client, ct.EXEC, cid, cmd=["sh", "-c", SESSION], env=["MARK=b"])
    _died_by_its_own_hand(cluster)
    cluster.start_worker("local")
    wait_until(lambda: ("container.exec_exited", 7) in _exec_events(client, cid), 30,
               what="the session's real exit code recorded")
    assert _runs(cluster, cid, "b") == 1
    assert client.inspect(cid)["exec_sessions"] == []


def test_an_exec_whose_worker_dies_before_starting_it_never_runs(
        cluster: Cluster, sleeper: tuple[Client, str]) -> None:
    client, cid = sleeper
    _restart_armed(cluster, "container.exec.intended")
    command = _send_dying(client, ct.EXEC, cid, cmd=["sh", "-c", SESSION], env=["MARK=c"])
    _died_by_its_own_hand(cluster)
    cluster.start_worker("local")
    # Reconciliation closes the session that never started; a resend does not start it.
    assert _exec_events(client, cid) == [("container.exec_requested", None),
                                         ("container.exec_exited", -1)]
    reply = client.request(command, reply_timeout=30)
    assert reply.result["exit_code"] == -1
    assert _runs(cluster, cid, "c") == 0
    assert client.inspect(cid)["exec_sessions"] == []
