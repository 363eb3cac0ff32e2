"""Containers run on the host their node names, and commands find that host.

Two hosts (network namespaces ``a`` and ``b``), one ``berth worker --node NAME``
in each, a broker and PostgreSQL on the bridge; the client talks tcp+CURVE from
the root namespace, the CLI from inside a host's namespace.
"""

from __future__ import annotations

import json
import os

from engine.runtime.waits import pid_alive, wait_pids_exit
from tests.helpers import wait_until
from tests.multihost.cluster import Cluster


def _long_running(mh: Cluster, node: str | None, name: str | None = None) -> dict[str, str]:
    c = mh.client()
    created = c.create(rootfs=mh.rootfs, args=["sleep", "600"], node=node, name=name).result
    c.start(created["id"], node=created["node"])
    return created


def _history_nodes(mh: Cluster, cid: str) -> dict[str, set[str]]:
    """Event type -> nodes that recorded it, for one container."""
    nodes: dict[str, set[str]] = {}
    with mh.store() as store:
        for recorded in store.read_stream(cid):
            nodes.setdefault(recorded.type, set()).add(recorded.metadata.node)
    return nodes


def test_the_broker_serves_tcp_with_curve(mh: Cluster) -> None:
    health = mh.client().ping()
    assert health["curve"] is True
    assert sorted(w["node"] for w in health["workers"]) == ["a", "b"]


def test_container_for_node_b_runs_on_host_b(mh: Cluster) -> None:
    created = _long_running(mh, "b", name="on-b")
    info = mh.client().inspect(created["id"])
    assert (info["node"], info["state"]) == ("b", "running")
    assert pid_alive(info["pid"])
    host_a, host_b = mh.hosts["a"], mh.hosts["b"]
    # conmon was started by the worker of host b, so it lives in b's network namespace.
    assert host_b.host.holds(info["conmon_pid"])
    assert not host_a.host.holds(info["conmon_pid"])
    # Its bundle, and runc's state, are under host b's directories only.
    assert info["bundle"].startswith(host_b.root + os.sep) and os.path.isdir(info["bundle"])
    assert os.path.isdir(os.path.join(host_b.run, "runtime", "runc", created["id"]))
    assert not os.path.exists(os.path.join(host_a.root, "containers", created["id"]))
    # The CLI on host a sees it on node b.
    listed = mh.cli("ps", "--format", "json", host="a")
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["on-b"]["node"] == "b" and rows["on-b"]["state"] == "running"
    # The log says who asked (the name of the client's CURVE key) and which node did it.
    with mh.store() as store:
        created_event = store.read_stream(created["id"])[0].metadata
    assert (created_event.actor, created_event.node) == ("client", "b")
    assert mh.log_problems() == []


def test_ps_shows_each_containers_node(mh: Cluster) -> None:
    for node in ("a", "b", "b"):
        _long_running(mh, node, name=f"ps-{node}-{os.urandom(3).hex()}")
    by_client = sorted((r["node"], r["state"]) for r in mh.client().ps())
    assert by_client == [("a", "running"), ("b", "running"), ("b", "running")]
    table = mh.cli("ps", host="b")
    assert table.returncode == 0, table.stderr
    header, *lines = table.stdout.splitlines()
    node_at = header.index("NODE")  # columns are aligned under their headings
    assert sorted(line[node_at:].split()[0] for line in lines) == ["a", "b", "b"]


def test_commands_reach_the_containers_node(mh: Cluster) -> None:
    c = mh.client()
    on_a = _long_running(mh, "a", name="cmd-a")["id"]
    on_b = _long_running(mh, "b", name="cmd-b")["id"]
    pid_b = c.inspect(on_b)["pid"]

    # exec through the client (root namespace) and through the CLI on the other host.
    reply = c.exec(on_b, ["sh", "-c", "echo from-b; exit 7"])
    assert reply.result["exit_code"] == 7 and "from-b" in reply.result["output"]
    done = mh.cli("exec", "cmd-b", "echo", "via-cli", host="a")
    assert done.returncode == 0 and done.stdout.strip() == "via-cli", done.stderr

    c.kill(on_a, "SIGKILL")
    assert c.wait(on_a, timeout=20).result["exit_code"] == 137
    c.stop(on_b, timeout=5)
    assert wait_pids_exit([pid_b], 10)
    assert c.inspect(on_b)["state"] == "exited"

    bundle_b = c.inspect(on_b)["bundle"]
    removed = mh.cli("rm", "cmd-b", host="a")
    assert removed.returncode == 0, removed.stderr
    c.remove(on_a)
    assert [r for r in c.ps(all=True) if r["id"] in (on_a, on_b)] == []
    assert not os.path.exists(bundle_b)

    # Every event of a container was recorded by the worker of its own node.
    assert {n for ns in _history_nodes(mh, on_a).values() for n in ns} == {"a"}
    history_b = _history_nodes(mh, on_b)
    assert {n for ns in history_b.values() for n in ns} == {"b"}
    assert {"container.exec_started", "container.exec_exited", "container.stop_requested",
            "container.exited", "container.removed"} <= set(history_b)
    assert mh.log_problems() == []


def test_create_without_node_goes_to_a_live_worker(mh: Cluster) -> None:
    c = mh.client()
    placed = [c.create(rootfs=mh.rootfs, args=["true"]).result for _ in range(4)]
    # Least loaded, then least recently used: sequential creates spread over both.
    assert sorted({p["node"] for p in placed}) == ["a", "b"]
    for p in placed:
        bundle = c.inspect(p["id"])["bundle"]
        assert bundle.startswith(mh.hosts[p["node"]].root + os.sep)
        c.start(p["id"], node=p["node"])
    wait_until(lambda: all(r["state"] == "exited" for r in c.ps(all=True)), 20,
               what="the containers to exit")
    assert mh.log_problems() == []
