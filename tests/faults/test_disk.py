"""A full or read-only state directory: a clear error, a consistent log.

``BERTH_ROOT`` (bundles, container logs, the SQLite store) is a small tmpfs the test
mounts, fills up, and remounts read-only. Commands then fail with a one-sentence
error reply carrying a stable code; nothing half-written reaches the log, so once
the directory is writable again the read model equals a rebuild, the hash chain
holds, and commands work again. Every mount is undone, also on failure.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator

import pytest

from bus.client import Client
from engine.errors import BerthError, StateUnwritable, StoreError
from tests.faults.cluster import Cluster, remove_all_containers

TMPFS_SIZE = "8m"
CLEAR_CODES = {StateUnwritable.code, StoreError.code}


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def small_root(short_tmp: str) -> Iterator[str]:
    path = os.path.join(short_tmp, "root")
    os.makedirs(path)
    _mount("-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs", path)
    try:
        yield path
    finally:
        # The cluster fixture below is torn down first (no process holds files here).
        done = subprocess.run(["umount", path], capture_output=True, timeout=30, check=False)
        if done.returncode != 0:
            subprocess.run(["umount", "-l", path], capture_output=True, timeout=30, check=False)


@pytest.fixture
def disk_cluster(short_tmp: str, busybox_rootfs: str, small_root: str) -> Iterator[Cluster]:
    db = os.path.join(small_root, "berth.db")
    c = Cluster(short_tmp, busybox_rootfs, f"sqlite:///{db}")
    node = c.node("local")
    node.root = small_root
    try:
        c.start_broker_thread()
        c.start_worker("local")
        yield c
    finally:
        c.close()
        remove_all_containers(node)


def _fill(directory: str) -> str:
    """Write zeros until the file system says ENOSPC; return the filler's path."""
    path = os.path.join(directory, "filler")
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    # Also take the last partial page.
    with open(path, "ab", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass
    return path


def _clear_failure(call: object) -> BerthError:
    assert callable(call)
    try:
        call()
    except BerthError as exc:
        return exc
    raise AssertionError("the command succeeded on a state directory that cannot be written")


def _one_sentence(exc: BerthError) -> None:
    assert exc.code in CLEAR_CODES, f"{exc.code}: {exc.message}"
    text = exc.message
    assert "\n" not in text and "Traceback" not in text, text
    assert any(word in text for word in ("full", "read-only", "no space")), text


def _works(c: Client, rootfs: str) -> None:
    cid = c.create(rootfs=rootfs, args=["sleep", "60"], node="local").result["id"]
    c.start(cid, node="local")
    c.stop(cid, timeout=0, node="local")
    c.remove(cid, node="local")


def _consistent(cluster: Cluster) -> None:
    with cluster.store() as store:
        assert store.verify_read_model() == []
        assert store.verify_chain() is None
        events = store.read_all()
        assert [r.position for r in events] == list(range(1, len(events) + 1))


def test_full_state_directory_refuses_clearly_and_keeps_the_log(disk_cluster: Cluster) -> None:
    c = disk_cluster.client(timeout=10, retries=1)
    root = disk_cluster.nodes["local"].root
    rootfs = disk_cluster.rootfs
    running = c.create(rootfs=rootfs, args=["sleep", "600"], node="local").result["id"]
    c.start(running, node="local")
    filler = _fill(root)
    try:
        for _ in range(3):  # several, so SQLite's reusable WAL pages run out too
            exc = _clear_failure(lambda: c.create(rootfs=rootfs, args=["sleep", "1"], node="local"))
            _one_sentence(exc)
            assert exc.code == StateUnwritable.code  # the bundle write, before any append
        c.ps()  # reads still work
        # Commands whose only write is an append: SQLite refuses once its WAL can
        # no longer grow (it reuses pages it already has, so not at once).
        refused = None
        for _ in range(100):
            try:
                c.pause(running, node="local")
                c.unpause(running, node="local")
            except BerthError as exc:
                refused = exc
                break
        assert refused is not None, "SQLite never ran out of space"
        _one_sentence(refused)
        assert refused.code == StoreError.code and "nothing was written" in refused.message
    finally:
        os.unlink(filler)
    _consistent(disk_cluster)
    # The refused command may have acted (runc pause) before its append was refused:
    # a resend brings the log level with the container.
    state = c.inspect(running)["state"]
    if state == "running":
        c.pause(running, node="local")
    c.unpause(running, node="local")
    assert c.inspect(running)["state"] == "running"
    _works(c, rootfs)
    c.remove(running, force=True, node="local")
    _consistent(disk_cluster)


def test_read_only_state_directory_refuses_clearly_and_keeps_the_log(
        short_tmp: str, busybox_rootfs: str, small_root: str) -> None:
    # A file system with files open for writing cannot be remounted read-only
    # (EBUSY), and the worker holds the SQLite file open: so here the store lives
    # outside the state directory, and no container holds a log open in it.
    cluster = Cluster(short_tmp, busybox_rootfs, f"sqlite:///{os.path.join(short_tmp, 'berth.db')}")
    node = cluster.node("local")
    node.root = small_root
    try:
        cluster.start_broker_thread()
        cluster.start_worker("local")
        c = cluster.client(timeout=10, retries=1)
        _works(c, busybox_rootfs)
        before = c.events()[1]
        _mount("-o", "remount,ro", small_root)
        try:
            exc = _clear_failure(lambda: c.create(rootfs=busybox_rootfs, args=["sleep", "1"],
                                                  node="local"))
            _one_sentence(exc)
            assert exc.code == StateUnwritable.code
            assert c.events()[1] == before, "a refused create wrote to the log"
        finally:
            _mount("-o", "remount,rw", small_root)
        _consistent(cluster)
        _works(c, busybox_rootfs)
        _consistent(cluster)
    finally:
        cluster.close()
        remove_all_containers(node)
