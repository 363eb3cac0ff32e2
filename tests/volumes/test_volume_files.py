"""A volume's directory: resolving a target inside a rootfs, filling, setting aside."""

from __future__ import annotations

import os
from pathlib import Path

from engine import volume_files as files


def test_targets_resolve_inside_the_rootfs_only(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "real" / "dir").mkdir(parents=True)
    os.symlink("/real", root / "abs")
    os.symlink("../../../../etc", root / "real" / "up")
    os.symlink("loop", root / "loop")
    r = str(root)
    assert files.resolve_in_root(r, "/abs/dir") == f"{r}/real/dir"
    assert files.resolve_in_root(r, "/real/up/passwd") == f"{r}/etc/passwd"
    assert files.resolve_in_root(r, "/../../x") == f"{r}/x"
    try:
        files.resolve_in_root(r, "/loop/x")
    except Exception as exc:  # noqa: BLE001 - the type is checked below
        assert "too many symbolic links" in str(exc)
    else:
        raise AssertionError("a symlink loop was followed for ever")


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
