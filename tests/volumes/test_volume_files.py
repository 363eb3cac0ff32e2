"""A volume's directory: filling it from a rootfs (inside the rootfs only, by
descriptor, never through a link swapped in), its modes, setting it aside."""

from __future__ import annotations

import contextlib
import ctypes
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.errors import InvalidArgument, RuntimeFailure
from engine.volumes import files

_libc = ctypes.CDLL(None, use_errno=True)
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: str, b: str) -> None:
    """renameat2(RENAME_EXCHANGE): ``a`` and ``b`` swap names in one step."""
    if _libc.renameat2(_AT_FDCWD, a.encode(), _AT_FDCWD, b.encode(), _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _tree(root: Path) -> dict[str, tuple[str, int, int, int, str]]:
    """Each entry under ``root``: (kind, mode, uid, gid, content or link target)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                what = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                what = Path(path).read_bytes().decode()
            else:
                what = ""
            out[os.path.relpath(path, root)] = (stat.filemode(st.st_mode)[0],
                                                stat.S_IMODE(st.st_mode), st.st_uid,
                                                st.st_gid, what)
    return out


def test_fill_copies_once_and_only_into_an_empty_volume(tmp_path: Path) -> None:
    volumes, rootfs = str(tmp_path / "volumes"), tmp_path / "rootfs"
    (rootfs / "data").mkdir(parents=True)
    (rootfs / "data" / "a").write_text("1")
    assert files.fill(volumes, "v1", str(rootfs), "/data") is True
    assert (tmp_path / "volumes" / "v1" / "_data" / "a").read_text() == "1"
    assert not (tmp_path / "volumes" / "v1" / files.FILL_DIR).exists()
    (rootfs / "data" / "b").write_text("2")
    assert files.fill(volumes, "v1", str(rootfs), "/data") is False  # holds data already
    assert files.fill(volumes, "v2", str(rootfs), "/missing") is False
    assert os.listdir(tmp_path / "volumes" / "v2" / "_data") == []
    assert oct(os.stat(volumes).st_mode & 0o777) == "0o700"


def test_targets_resolve_inside_the_rootfs_only(tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret").write_text("host secret")
    root = tmp_path / "rootfs"
    (root / "real" / "dir").mkdir(parents=True)
    (root / "real" / "dir" / "f").write_text("inside")
    os.symlink("/real", root / "abs")
    os.symlink(str(host), root / "out")  # the host's path, resolved inside: nothing
    os.symlink("../../../../../../../../" + str(host), root / "real" / "up")
    os.symlink("loop", root / "loop")
    volumes, r = str(tmp_path / "volumes"), str(root)
    assert files.fill(volumes, "v1", r, "/abs/dir") is True
    assert (tmp_path / "volumes" / "v1" / "_data" / "f").read_text() == "inside"
    for n, target in enumerate(("/out", "/real/up", "/../../" + str(host))):
        assert files.fill(volumes, f"w{n}", r, target) is False, target
        assert os.listdir(tmp_path / "volumes" / f"w{n}" / "_data") == []
    with pytest.raises(InvalidArgument, match="too many symbolic links"):
        files.fill(volumes, "v2", r, "/loop/x")
    with pytest.raises(InvalidArgument, match="must be absolute"):
        files.fill(volumes, "v3", r, "relative")


def test_fill_keeps_what_cp_a_kept(tmp_path: Path) -> None:
    src = tmp_path / "rootfs" / "srv"
    (src / "sub" / "empty").mkdir(parents=True)
    (src / "f").write_text("content")
    os.chown(src / "f", 1234, 2345)
    os.chmod(src / "f", 0o4750)  # set-uid survives the chown that comes first
    os.utime(src / "f", ns=(1_000_000_000_123, 2_000_000_000_456))
    os.setxattr(src / "f", "user.note", b"kept")
    os.link(src / "f", src / "sub" / "hard")
    os.symlink("/etc/passwd", src / "abs-link")  # copied as a link, never followed
    os.symlink("../f", src / "sub" / "rel-link")
    os.lchown(src / "sub" / "rel-link", 7, 8)
    os.mkfifo(src / "fifo", 0o640)  # made anew: opening it would block the fill
    os.mknod(src / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    with open(src / "sparse", "wb") as f:
        f.truncate(64 << 20)
        f.seek(32 << 20)
        f.write(b"middle")
    os.chmod(src / "sub", 0o1777)
    os.chown(src / "sub", 99, 98)
    os.utime(src / "sub", ns=(3_000_000_000_000, 4_000_000_000_000))
    os.chmod(src, 0o750)
    os.chown(src, 5, 6)
    volumes = str(tmp_path / "volumes")
    assert files.fill(volumes, "v", str(tmp_path / "rootfs"), "/srv") is True
    data = tmp_path / "volumes" / "v" / "_data"
    copied = os.stat(data / "f")  # before anything reads it
    assert (copied.st_atime_ns, copied.st_mtime_ns) == (1_000_000_000_123, 2_000_000_000_456)
    assert _tree(data) == _tree(src)
    st = os.stat(src / "f")
    assert os.getxattr(data / "f", "user.note") == b"kept"
    assert os.stat(data / "sub" / "hard").st_ino == copied.st_ino != st.st_ino
    assert os.stat(data / "sub").st_mtime_ns == 4_000_000_000_000
    assert os.lstat(data / "sub" / "rel-link").st_uid == 7
    assert os.stat(data / "null").st_rdev == os.makedev(1, 3)
    sparse = os.stat(data / "sparse")
    assert sparse.st_size == 64 << 20 and sparse.st_blocks * 512 < 1 << 20
    with open(data / "sparse", "rb") as f:
        f.seek(32 << 20)
        assert f.read(6) == b"middle"
    # the volume's root is the directory's own (podman's copy-up)
    top = os.stat(data)
    assert (stat.S_IMODE(top.st_mode), top.st_uid, top.st_gid) == (0o750, 5, 6)
    assert not stat.S_ISLNK(os.lstat(data).st_mode)


def test_a_new_volumes_data_is_0755_whatever_the_umask(tmp_path: Path) -> None:
    volumes = str(tmp_path / "volumes")
    with _umask(0o077):  # the worker's
        data = files.ensure(volumes, "v")
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(os.path.dirname(data)).st_mode) == 0o700
    os.chmod(data, 0o700)  # a volume's own mode (a container's chmod) is kept
    files.ensure(volumes, "v")
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
    # a _data made a link by an older fill is never handed to runc to bind-mount
    os.rmdir(data)
    os.symlink(str(tmp_path), data)
    with pytest.raises(RuntimeFailure, match="not a directory"):
        files.ensure(volumes, "v")
    with pytest.raises(RuntimeFailure, match="not a directory"):
        files.fill(volumes, "v", str(tmp_path), "/")


def test_a_fill_that_runs_out_of_time_or_depth_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "rootfs"
    (root / "d" / "a" / "b" / "c").mkdir(parents=True)
    (root / "d" / "a" / "b" / "c" / "f").write_text("x")
    volumes = str(tmp_path / "volumes")
    monkeypatch.setattr(files, "MAX_DEPTH", 2)
    with pytest.raises(RuntimeFailure, match="more than 2 directories deep"):
        files.fill(volumes, "v", str(root), "/d")
    monkeypatch.setattr(files, "MAX_DEPTH", 256)
    monkeypatch.setattr(files, "FILL_TIMEOUT", -1.0)
    with pytest.raises(RuntimeFailure, match="took longer than"):
        files.fill(volumes, "v", str(root), "/d")
    assert os.listdir(tmp_path / "volumes" / "v") == ["_data"]
    assert os.listdir(tmp_path / "volumes" / "v" / "_data") == []


def test_a_fifo_at_the_target_is_not_a_directory_to_fill_from(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    os.mkfifo(root / "data")
    done: list[bool] = []
    t = threading.Thread(target=lambda: done.append(
        files.fill(str(tmp_path / "volumes"), "v", str(root), "/data")), daemon=True)
    t.start()
    t.join(10)
    assert done == [False]


def test_a_target_swapped_for_a_link_to_the_host_never_fills_host_content(
        tmp_path: Path) -> None:
    """The rootfs's directory and a link to a host directory trade names in a loop
    (renameat2 RENAME_EXCHANGE, as a container sharing the rootfs could) while
    volumes are filled from it: no volume ever holds the host's file, and no
    volume's ``_data`` is ever a link."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret").write_text("host secret")
    root = tmp_path / "rootfs"
    (root / "srv" / "data" / "deep").mkdir(parents=True)
    (root / "srv" / "data" / "file").write_text("image")
    (root / "srv" / "data" / "deep" / "file").write_text("image")
    os.symlink(str(host), root / "srv" / "link")  # absolute: the host's path
    os.symlink(str(host), root / "srv" / "data" / "swap-link")
    (root / "srv" / "data" / "swap-dir").mkdir()
    (root / "srv" / "data" / "swap-dir" / "file").write_text("image")
    stop = threading.Event()
    swaps = [0]

    def swapper() -> None:
        while not stop.is_set():
            _exchange(str(root / "srv" / "data"), str(root / "srv" / "link"))
            # one level down too: a directory met during the walk
            inner = root / "srv" / "data"
            with contextlib.suppress(OSError):
                _exchange(str(inner / "swap-dir"), str(inner / "swap-link"))
            swaps[0] += 1

    t = threading.Thread(target=swapper, daemon=True)
    t.start()
    volumes = tmp_path / "volumes"
    fills = 0
    deadline = time.monotonic() + 5
    try:
        n = 0
        while time.monotonic() < deadline:
            n += 1
            if files.fill(str(volumes), f"v{n}", str(root), "/srv/data"):
                fills += 1
            data = volumes / f"v{n}" / "_data"
            assert not os.path.islink(data)
            for dirpath, _dirs, names in os.walk(data):  # links are not followed
                for name in names:
                    path = os.path.join(dirpath, name)
                    if not os.path.islink(path):
                        assert Path(path).read_text() == "image", path
    finally:
        stop.set()
        t.join(10)
    assert swaps[0] > 100 and fills > 5, (swaps[0], fills)


def test_a_removal_sets_the_volume_aside_then_sweeps_it(tmp_path: Path) -> None:
    volumes = str(tmp_path / "volumes")
    data = files.ensure(volumes, "v1")
    Path(data, "f").write_text("x")
    aside = files.set_aside(volumes, "v1")
    assert aside is not None and not os.path.exists(os.path.join(volumes, "v1"))
    files.put_back(volumes, "v1", aside)  # the removal could not be recorded
    assert Path(data, "f").read_text() == "x"
    files.set_aside(volumes, "v1")
    assert files.set_aside(volumes, "v1") is None
    assert files.sweep(volumes) == 1 and os.listdir(volumes) == []


def _deep_tree(top: str, depth: int) -> None:
    """``depth`` directories nested in ``top`` (as a container can make them in its
    volume or its own filesystem), made by descriptor: the path outgrows PATH_MAX."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("dd", dir_fd=fd)
            sub = os.open("dd", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = sub
    finally:
        os.close(fd)


def test_a_volume_a_container_filled_with_a_deep_tree_is_still_removed(tmp_path: Path) -> None:
    # shutil.rmtree recurses once per level: 3000 levels ended in a RecursionError,
    # which ignore_errors does not cover (volume rm failed, the tree stayed for ever)
    volumes = str(tmp_path / "volumes")
    _deep_tree(files.ensure(volumes, "v1"), 3000)
    files.set_aside(volumes, "v1")
    assert files.sweep(volumes) == 1 and os.listdir(volumes) == []
