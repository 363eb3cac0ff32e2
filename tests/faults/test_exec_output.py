"""Exec output is bounded: a session printing hundreds of megabytes neither grows the
worker's memory nor fills a disk. conmon caps the session's log on disk and the
worker reads only its tail (engine/runtime/execs.py)."""

from __future__ import annotations

import os

from engine.runtime.execs import LOG_SIZE_MAX
from engine.runtime.types import MAX_EXEC_OUTPUT
from tests.faults.cluster import Cluster

FLOOD_BYTES = 100_000_000
RSS_GROWTH_LIMIT_KB = 40_000


def _peak_rss_kb(pid: int) -> int:
    """The process's resident-set high-water mark: a buffer freed after use still counts."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmHWM for {pid}")


def _tree_bytes(root: str) -> int:
    total = 0
    for path, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(path, name)).st_size
            except FileNotFoundError:
                pass
    return total


def test_a_flood_of_exec_output_keeps_the_worker_and_its_disk_bounded(cluster: Cluster) -> None:
    cluster.start_broker_thread()
    proc = cluster.start_worker("local")
    node = cluster.nodes["local"]
    client = cluster.client(timeout=10, retries=0)
    cid = client.create(rootfs=cluster.rootfs, args=["sleep", "600"], node="local").result["id"]
    client.start(cid, node="local")
    client.exec(cid, ["true"], node="local", reply_timeout=30)  # warm every code path
    before = _peak_rss_kb(proc.pid)
    reply = client.exec(cid, ["head", "-c", str(FLOOD_BYTES), "/dev/zero"], node="local",
                        reply_timeout=300)
    after = _peak_rss_kb(proc.pid)
    assert reply.result["exit_code"] == 0
    output = reply.result["output"]
    assert len(output.encode()) <= MAX_EXEC_OUTPUT  # at most the tail
    assert after - before < RSS_GROWTH_LIMIT_KB, (
        f"worker peak RSS grew from {before} kB to {after} kB for {FLOOD_BYTES} bytes of output")
    exec_dir = os.path.join(node.root, "containers", cid, "exec")
    assert _tree_bytes(exec_dir) <= LOG_SIZE_MAX + 64 * 1024
    assert _tree_bytes(node.run) < 16 * 1024 * 1024
    print(f"worker peak RSS {before} kB -> {after} kB; exec dir {_tree_bytes(exec_dir)} bytes")
