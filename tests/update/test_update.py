"""berth update with real containers: runc update changes the cgroup, the log says
what changed from what."""

from __future__ import annotations

import os

from engine import events as ev
from engine.runtime import OCIRuntime
from tests.e2e.conftest import Engine
from tests.helpers import wait_until
from tests.restarts.helpers import of_type, stream

MIB = 1024 * 1024


V2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
# cgroup v2 file -> (v1 controller, v1 file): this machine kind may have either
V1 = {"memory.max": ("memory", "memory.limit_in_bytes"), "pids.max": ("pids", "pids.max"),
      "cpu.max": ("cpu", "cpu.cfs_quota_us")}


def _cgroup_file(engine: Engine, cid: str, name: str) -> str:
    """A limit as the kernel applies it to the container's cgroup (v2, or v1's files)."""
    path = OCIRuntime(engine.config().runtime_config()).cgroups_path(cid).lstrip("/")
    if V2:
        full = os.path.join("/sys/fs/cgroup", path, name)
    else:
        controller, name = V1[name]
        full = os.path.join("/sys/fs/cgroup", controller, path, name)
    with open(full) as f:
        return f.read().strip()


def test_update_memory_pids_and_cpus_change_the_cgroup(up: Engine) -> None:
    c = up.client()
    cid = c.create(rootfs=up.rootfs, args=["sleep", "600"], memory="64m").result["id"]
    c.start(cid)
    assert _cgroup_file(up, cid, "memory.max") == str(64 * MIB)
    reply = c.update(cid, memory="96m", pids_limit=40, cpus=0.5)
    assert reply.result["changed"] == ["cpus", "memory", "pids_limit"]
    assert _cgroup_file(up, cid, "memory.max") == str(96 * MIB)
    assert _cgroup_file(up, cid, "pids.max") == "40"
    assert _cgroup_file(up, cid, "cpu.max") == ("50000 100000" if V2 else "50000")
    updated = of_type(stream(up, cid), ev.Updated)
    assert [(u.event.old, u.event.new) for u in updated if isinstance(u.event, ev.Updated)] \
        == [({"memory": 64 * MIB, "pids_limit": None, "cpus": None},
             {"memory": 96 * MIB, "pids_limit": 40, "cpus": 0.5})]
    spec = c.inspect(cid)["spec"]
    assert (spec["memory"], spec["pids_limit"], spec["cpus"]) == (96 * MIB, 40, 0.5)


def test_update_restart_policy_of_an_exited_container_and_cli(up: Engine) -> None:
    done = up.cli("run", "-d", up.rootfs, "sh", "-c", "exit 4")
    assert done.returncode == 0, done.stderr
    cid = done.stdout.strip()
    c = up.client()
    wait_until(lambda: c.inspect(cid)["state"] == "exited", 20, what="the exit")
    changed = up.cli("update", "--restart", "on-failure:1", "--memory", "32m", cid)
    assert changed.returncode == 0, changed.stderr
    spec = c.inspect(cid)["spec"]
    assert (spec["restart"], spec["memory"]) == ("on-failure:1", 32 * MIB)
    again = up.cli("update", "--restart", "on-failure:1", cid)
    assert (again.returncode, again.stderr.strip()) == (0, "nothing changed")
    bad = up.cli("update", "--pids-limit", "0", cid)
    assert bad.returncode != 0 and "invalid pids_limit 0" in bad.stderr
    none = up.cli("update", cid)
    assert none.returncode != 0 and "nothing to update" in none.stderr
    # the new limits apply at the next start, from the updated spec
    c.start(cid)
    wait_until(lambda: len(of_type(stream(up, cid), ev.Started)) == 3, 20,
               what="the start and the one restart on-failure:1 allows")
