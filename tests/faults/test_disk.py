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
import signal
import subprocess
from collections.abc import Iterator

import pytest

from bus.client import Client
from engine.errors import BerthError, StateUnwritable, StoreError
from tests.faults.cluster import Cluster, remove_all_containers
from tests.helpers import wait_until

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


# --------------------------------------------------------------------------- recorded or undone


def _exhaust_store(c: Client, cid: str) -> BerthError:
    """With the disk full, pause/unpause until SQLite can no longer grow its WAL; return
    the refusal. Each refused pause or unpause must have been undone in the runtime."""
    for _ in range(100):
        try:
            c.pause(cid, node="local")
            c.unpause(cid, node="local")
        except BerthError as exc:
            return exc
    raise AssertionError("SQLite never ran out of space")


def _runtime_state(cluster: Cluster, cid: str) -> str:
    return str(cluster.nodes["local"].runtime().status(cid).status)


def test_a_refused_record_leaves_no_runtime_action_behind(disk_cluster: Cluster) -> None:
    c = disk_cluster.client(timeout=10, retries=1)
    root = disk_cluster.nodes["local"].root
    cid = c.create(rootfs=disk_cluster.rootfs, args=["sleep", "600"], node="local").result["id"]
    c.start(cid, node="local")
    pid = int(c.inspect(cid)["pid"])
    filler = _fill(root)
    try:
        refused = _exhaust_store(c, cid)
        assert refused.code == StoreError.code
        # The refused pause (or unpause) was taken back: runc agrees with the log.
        assert _runtime_state(disk_cluster, cid) == c.inspect(cid)["state"]
        # A signal is recorded before it is sent: refused, so never sent.
        exc = _clear_failure(lambda: c.kill(cid, "KILL", node="local"))
        assert exc.code == StoreError.code and "nothing was written" in exc.message
        assert os.path.exists(f"/proc/{pid}"), "SIGKILL was delivered but not recorded"
    finally:
        os.unlink(filler)
    if c.inspect(cid)["state"] == "paused":
        c.unpause(cid, node="local")
    c.kill(cid, "KILL", node="local")
    state = wait_until(lambda: (s := c.inspect(cid))["state"] == "exited" and s, 15,
                       what="the killed container's exit")
    assert state["exit_reason"] == "stop"
    _consistent(disk_cluster)


def test_an_exit_during_a_store_outage_is_recorded_when_it_comes_back(
        disk_cluster: Cluster) -> None:
    c = disk_cluster.client(timeout=10, retries=1)
    node = disk_cluster.nodes["local"]
    cid = c.create(rootfs=disk_cluster.rootfs, args=["sleep", "600"], node="local").result["id"]
    c.start(cid, node="local")
    pid = int(c.inspect(cid)["pid"])
    filler = _fill(node.root)
    try:
        _exhaust_store(c, cid)
        os.kill(pid, signal.SIGKILL)  # the container dies on its own while the store is full
        if _runtime_state(disk_cluster, cid) == "paused":
            node.runtime().unpause(cid)  # frozen: the kill lands once thawed
        exit_file = os.path.join(node.run, "runtime", "exits", cid)
        wait_until(lambda: os.path.exists(exit_file), 15, what="conmon's exit file")
        assert c.inspect(cid)["state"] != "exited"  # the store cannot take it yet
    finally:
        os.unlink(filler)
    # No command, no restart: the exit is retried until the store accepts it.
    state = wait_until(lambda: (s := c.inspect(cid))["state"] == "exited" and s, 15,
                       what="the exit recorded after the store came back")
    assert (state["exit_code"], state["exit_reason"]) == (137, "crash")
    _consistent(disk_cluster)


def test_a_checkpoint_that_cannot_write_its_image_leaves_the_container_running(
        short_tmp: str, busybox_rootfs: str, small_root: str) -> None:
    # The store lives outside the full directory: only the image cannot be written.
    cluster = Cluster(short_tmp, busybox_rootfs, f"sqlite:///{os.path.join(short_tmp, 'berth.db')}")
    node = cluster.node("local")
    node.root = small_root
    try:
        cluster.start_broker_thread()
        cluster.start_worker("local")
        c = cluster.client(timeout=60, retries=0)
        cid = c.create(rootfs=busybox_rootfs, args=["sleep", "600"], node="local").result["id"]
        c.start(cid, node="local")
        filler = _fill(small_root)
        try:
            exc = _clear_failure(lambda: c.checkpoint(cid, node="local", reply_timeout=120))
            assert "\n" not in exc.message
        finally:
            os.unlink(filler)
        assert c.inspect(cid)["state"] == "running"
        assert _runtime_state(cluster, cid) == "running", "the container was left frozen"
        types = [e["type"] for e in c.history(cid)["events"]]
        assert types[-2:] == ["container.checkpoint_requested", "command.failed"], types
        image = c.checkpoint(cid, node="local", reply_timeout=120).result["image_path"]
        assert os.path.isfile(os.path.join(image, "inventory.img"))
        _consistent(cluster)
    finally:
        cluster.close()
        remove_all_containers(node)
