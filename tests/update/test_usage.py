"""berth top and berth stats on real containers: reads of /proc and the cgroup."""

from __future__ import annotations

import json

import pytest

from engine.errors import InvalidState
from tests.e2e.conftest import Engine
from tests.helpers import wait_until

MIB = 1024 * 1024


def test_top_lists_the_container_processes(up: Engine) -> None:
    c = up.client()
    cid = c.create(rootfs=up.rootfs, args=["sh", "-c", "sleep 601 & exec sleep 602"]
                   ).result["id"]
    c.start(cid)
    wait_until(lambda: sorted(p["command"] for p in c.top(cid)["processes"])
               == ["sleep 601", "sleep 602"], 10, what="both sleeps, sh gone")
    shown = up.cli("top", cid[:12])
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0].split() == ["PID", "USER", "TIME", "COMMAND"]
    assert "sleep 602" in shown.stdout
    c.stop(cid, timeout=1)
    with pytest.raises(InvalidState, match="not running"):
        c.top(cid)


def test_stats_reads_the_cgroup_counters(up: Engine) -> None:
    c = up.client()
    busy = c.create(rootfs=up.rootfs, args=["sh", "-c", "while :; do :; done"],
                    memory="48m", pids_limit=30, name="busy").result["id"]
    c.start(busy)
    # The cgroup counts tasks: until runc's init (a Go program, several threads) has
    # exec'd the shell, a loaded machine shows its threads (5) instead of one process.
    wait_until(lambda: c.stats(busy)["usage"]["pids"] == 1, what="the shell alone")
    usage = c.stats(busy)["usage"]
    assert usage["memory_limit"] == 48 * MIB
    assert usage["pids"] == 1 and usage["memory"] > 0 and usage["cpu_ns"] > 0
    done = up.cli("stats", "--no-stream", "--format", "json", "busy")
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)
    assert (row["id"], row["name"], row["memory_limit"], row["pids"]) == (
        busy, "busy", 48 * MIB, 1)
    assert row["cpu_percent"] > 10  # a busy loop: most of one CPU, even on a shared host
    table = up.cli("stats", "--no-stream")
    assert table.returncode == 0 and "busy" in table.stdout and "48MiB" in table.stdout
