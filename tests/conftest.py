"""Fixtures shared by every test folder: a real busybox rootfs built once per session."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from typing import Any

import pytest

from engine.images.rootfs import build_busybox_rootfs
from tests import budget  # noqa: F401  (loads the hypothesis profile named in the environment)


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One rootfs for the whole session, read-only to tests: every test using it is
    checked afterwards (``_rootfs_untouched``). A test that must write gets its own."""
    if shutil.which("runc") is None or shutil.which("conmon") is None:
        pytest.fail("runc and conmon are required: run scripts/install.sh")
    return build_busybox_rootfs(str(tmp_path_factory.mktemp("rootfs") / "busybox"))


def tree_listing(root: str) -> dict[str, tuple[object, ...]]:
    """What a write would change: each entry's type and mode, owner, size and mtime,
    a symlink's target. Cheap (lstat only): a busybox tree is a few hundred entries."""
    listing: dict[str, tuple[object, ...]] = {}
    pending = [root]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                rel = os.path.relpath(entry.path, root)
                if stat.S_ISLNK(st.st_mode):
                    listing[rel] = ("link", os.readlink(entry.path))
                elif stat.S_ISDIR(st.st_mode):
                    listing[rel] = ("dir", st.st_mode, st.st_uid, st.st_gid)
                    pending.append(entry.path)
                else:
                    listing[rel] = ("file", st.st_mode, st.st_uid, st.st_gid, st.st_size,
                                    st.st_mtime_ns)
    return listing


@pytest.fixture(autouse=True)
def _rootfs_untouched(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test (at teardown) that changed the shared busybox rootfs: the tests
    after it would run on a different tree."""
    if "busybox_rootfs" not in request.fixturenames:
        yield
        return
    root: str = request.getfixturevalue("busybox_rootfs")
    before = tree_listing(root)
    yield
    after = tree_listing(root)
    if after != before:
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        pytest.fail(f"the test changed the shared busybox rootfs {root}: {changed[:10]}")


@pytest.fixture
def short_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A short per-test directory: unix socket paths are limited to 108 bytes."""
    import tempfile

    path = tempfile.mkdtemp(prefix="berth-t-", dir="/tmp")
    yield path
    release_networks(path)
    shutil.rmtree(path, ignore_errors=True)


def release_networks(path: str) -> None:
    """CNI DEL for every container network a test's engines left under ``path``
    (engines of their own, killed workers): the bridges and addresses are the
    host's, so what a test leaves would outlive its temporary directory."""
    from engine.errors import NotFound
    from engine.networks.setup import NetworkSetup

    def no_lookup(name: str) -> Any:
        raise NotFound(name)

    for net in _net_dirs(path):
        setup = NetworkSetup(os.path.dirname(net), no_lookup)
        for cid in setup.attached():
            setup.leave(cid)


def _net_dirs(path: str, depth: int = 5) -> Iterator[str]:
    """``runtime/net`` directories at most ``depth`` levels under ``path``, symbolic
    links not followed (a test's root filesystem copy holds links that loop, and a
    recursive glob follows them)."""
    base = path.rstrip(os.sep).count(os.sep)
    for here, dirs, _files in os.walk(path, followlinks=False):
        if here.endswith(os.path.join("runtime", "net")):
            yield here
            dirs.clear()
        elif here.count(os.sep) - base >= depth:
            dirs.clear()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Stop at once, with one line, when the host cannot give the suite the inotify
    instances or descriptors it needs (tests.resources), instead of erroring mid-run.
    Checked once, by the controlling process, for all the test processes."""
    from tests.resources import shortage

    config = session.config
    if hasattr(config, "workerinput"):
        return  # an xdist worker: the controller checked for everyone
    numprocesses = getattr(config.option, "numprocesses", None)
    if not isinstance(numprocesses, int):  # no xdist, or "-n auto"/"logical"
        numprocesses = os.cpu_count() if numprocesses else 1
    missing = shortage(max(1, numprocesses or 1))
    if missing is not None:
        pytest.exit(f"berth tests cannot run here: {missing}", returncode=4)


def pytest_report_header(config: pytest.Config) -> str:
    return f"berth tests as uid {os.getuid()}"
