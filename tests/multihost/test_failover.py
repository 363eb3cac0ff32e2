"""A host whose worker dies: clear refusals within the publisher's timeout, no lost
exit on its return.

The worker of host b is killed -9 (a crashed host as the broker sees it). Its
containers keep running under conmon; commands for node b wait for its worker to
come back (a restart is the common case) and are answered ``unavailable`` just
before the publisher's timeout runs out; host a keeps serving everything else;
when b's worker comes back, an exit that happened meanwhile is recorded and b's
containers obey again.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest

from engine.errors import Unavailable
from engine.runtime.waits import pid_alive, wait_pids_exit
from tests.helpers import wait_until
from tests.multihost.cluster import Cluster

REFUSAL_DEADLINE_S = 3.0


def test_lost_node_is_refused_quickly_and_recovers(mh: Cluster) -> None:
    c = mh.client(timeout=REFUSAL_DEADLINE_S, retries=0)
    ids = {}
    for name in ("keeper", "victim"):
        ids[name] = c.create(
            rootfs=mh.rootfs, args=["sleep", "600"], node="b", name=name
        ).result["id"]
        c.start(ids[name], node="b")
    pids = {name: c.inspect(cid)["pid"] for name, cid in ids.items()}

    mh.kill_worker("b")
    mh.wait_node_gone("b")  # the broker's heartbeat liveness, seconds
    assert all(pid_alive(pid) for pid in pids.values()), "containers outlive their worker"

    keeper = ids["keeper"]
    commands: list[Callable[[], object]] = [
        lambda: c.stop(keeper, timeout=1, node="b"),
        lambda: c.exec(keeper, ["true"], node="b", reply_timeout=REFUSAL_DEADLINE_S),
        lambda: c.kill(keeper, "SIGTERM", node="b"),
        lambda: c.remove(keeper, force=True, node="b"),
        lambda: c.create(rootfs=mh.rootfs, args=["true"], node="b"),
    ]
    for command in commands:
        started = time.monotonic()
        with pytest.raises(Unavailable, match="no live worker for node 'b'"):
            command()
        assert time.monotonic() - started < REFUSAL_DEADLINE_S

    # The CLI on host a: name resolution is served by a's worker, the stop is refused.
    started = time.monotonic()
    refused = mh.cli("--timeout", str(REFUSAL_DEADLINE_S), "stop", "keeper", host="a")
    assert refused.returncode == Unavailable.exit_code
    assert "no live worker for node 'b'" in refused.stderr
    assert time.monotonic() - started < 15  # interpreter start-up included

    # Host a serves the rest: a create without a node lands there.
    elsewhere = c.create(rootfs=mh.rootfs, args=["true"]).result
    assert elsewhere["node"] == "a"

    # An exit while nobody watches host b ...
    os.kill(pids["victim"], signal.SIGKILL)
    assert wait_pids_exit([pids["victim"]], 10)
    mh.start_worker("b")
    # ... is recorded when its worker is back, and b obeys commands again.
    state = wait_until(lambda: (s := c.inspect(ids["victim"]))["state"] == "exited" and s, 20,
                       what="the exit recorded by the restarted worker")
    assert state["exit_code"] == 137
    assert c.inspect(keeper)["state"] == "running" and pid_alive(pids["keeper"])
    c.stop(keeper, timeout=5, node="b")
    assert wait_pids_exit([pids["keeper"]], 10)
    assert mh.log_problems() == []
