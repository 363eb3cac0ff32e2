"""``engine.inroot``: a path in an untrusted tree never leads out of it.

Real files on the host: a secret outside the tree, and a tree whose links, FIFOs and
racing renames try to reach it.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from pathlib import Path

import pytest

from engine.errors import InvalidArgument, NotFound
from engine.inroot import OutsideRoot, Root, check_path, fchmod_nofollow, split

SECRET = b"host secret\n"


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """(tree, secret): the tree's links point at the secret's host path every way."""
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "passwd").write_bytes(b"root:x:0:0::/:/bin/sh\n")
    (tree / "abs").symlink_to(secret)
    (tree / "up").symlink_to("../" * 12 + str(secret).lstrip("/"))
    (tree / "hostdir").symlink_to(tmp_path)
    os.mkfifo(tree / "fifo")
    return tree, secret


def test_links_that_point_out_are_resolved_inside_the_tree(layout: tuple[Path, Path]) -> None:
    tree, _ = layout
    with Root.open(str(tree)) as root:
        assert root.read_regular("/abs", 100) is None  # tree/<secret path>: missing
        assert root.read_regular("/up", 100) is None
        assert root.read_regular("/hostdir/secret", 100) is None
        assert root.read_regular("/../../../../" + "etc/passwd", 100) == b"root:x:0:0::/:/bin/sh\n"
        tail = str(layout[1]).lstrip("/")
        (tree / tail).parent.mkdir(parents=True)
        (tree / tail).write_bytes(b"inside\n")
        assert root.read_regular("/abs", 100) == b"inside\n"  # the link's target, in the tree


def test_a_fifo_is_refused_unopened_and_a_big_file_past_its_limit(
        layout: tuple[Path, Path]) -> None:
    tree, _ = layout
    (tree / "big").write_bytes(b"x" * 5000)
    with Root.open(str(tree)) as root:
        started = time.monotonic()
        with pytest.raises(InvalidArgument, match="not a regular file"):
            root.read_regular("/fifo", 100)
        assert time.monotonic() - started < 2  # opening it for reading would block
        with pytest.raises(InvalidArgument, match="larger than 4096"):
            root.read_regular("/big", 4096)
        assert root.read_regular("/big", 5000) == b"x" * 5000


def test_magic_links_are_refused() -> None:
    with Root.open("/") as root, pytest.raises(OutsideRoot):
        root.open_path("/proc/self/root/etc/hostname")


def test_the_last_component_is_acted_on_without_following_it(
        layout: tuple[Path, Path]) -> None:
    tree, secret = layout
    with Root.open(str(tree)) as root:
        st = root.lstat("/abs")
        assert st is not None and (st.st_mode & 0o170000) == 0o120000
        assert root.stat("/abs") is None
        fd, name = root.parent("/abs")
        try:
            fchmod_nofollow(fd, name, 0o4777)
        finally:
            os.close(fd)
    assert secret.stat().st_mode & 0o7777 == 0o600


def test_paths_are_checked_and_split() -> None:
    assert check_path("/a/b") == "/a/b"
    for bad in ("a/b", "/a\0b", "/" + "a" * 5000):
        with pytest.raises(InvalidArgument):
            check_path(bad)
    assert split("/") == ("/", "")
    assert split("/a/b/") == ("/a", "b")
    assert split("/a/..") == ("/a/..", "")


def test_a_missing_tree_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        Root.open(str(tmp_path / "nothing"))


_RENAME_EXCHANGE = 2


def test_a_directory_swapped_with_a_link_in_a_loop_never_leads_out(tmp_path: Path) -> None:
    """The attack on check-then-use: ``d`` is a real directory one instant and a link
    to a host directory the next (``renameat2(RENAME_EXCHANGE)`` in a loop). Every
    read through ``Root`` sees the tree's file or nothing, never the host's."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "f").write_bytes(SECRET)
    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    (tree / "d" / "f").write_bytes(b"tree\n")
    (tree / "l").symlink_to(host)
    libc = ctypes.CDLL(None, use_errno=True)
    stop = threading.Event()
    swaps = 0

    def swap() -> None:
        nonlocal swaps
        a, b = os.fsencode(tree / "d"), os.fsencode(tree / "l")
        while not stop.is_set():
            libc.renameat2(-100, a, -100, b, _RENAME_EXCHANGE)
            swaps += 1

    racer = threading.Thread(target=swap)
    racer.start()
    seen: set[bytes | None] = set()
    try:
        with Root.open(str(tree)) as root:
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                for path in ("/d/f", "/l/f"):
                    seen.add(root.read_regular(path, 100))
    finally:
        stop.set()
        racer.join()
    assert swaps > 100
    assert SECRET not in seen
    assert b"tree\n" in seen
