"""Layers become overlayfs directories: whiteouts translated, nothing escapes (real
files, as root)."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Callable

import pytest

from engine.images.overlay import overlay_options
from engine.images.unpack import (
    OPAQUE_XATTR,
    LayerError,
    member_path,
    unpack_layer,
    whiteout,
)


def test_member_paths_stay_inside() -> None:
    assert member_path("./a/b/") == "a/b"
    assert member_path(".") == ""
    for bad in ("/etc/passwd", "a/../../b", "..", ""):
        with pytest.raises(LayerError):
            member_path(bad)


def test_whiteout_names_map_to_their_meaning() -> None:
    assert whiteout("a/.wh..wh..opq") == ("opaque", "a")
    assert whiteout("a/.wh.b") == ("delete", "a/b")
    assert whiteout(".wh.top") == ("delete", "top")
    assert whiteout("a/b") is None
    for bad in ("a/.wh.", "a/.wh.."):
        with pytest.raises(LayerError):
            whiteout(bad)


def test_overlay_options_are_top_first_and_refuse_separators() -> None:
    assert overlay_options(["/l2", "/l1"], "/u", "/w") == (
        "lowerdir=/l2:/l1,upperdir=/u,workdir=/w,volatile")
    with pytest.raises(Exception, match="without , or :"):
        overlay_options(["/a:b"], "/u", "/w")
    with pytest.raises(Exception, match="too deep"):
        overlay_options(["/" + "x" * 200] * 30, "/u", "/w")


def _tar(build: Callable[[tarfile.TarFile], None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        build(tar)
    return buf.getvalue()


def _file(tar: tarfile.TarFile, name: str, data: bytes = b"x", *, mode: int = 0o644,
          uid: int = 0, gid: int = 0) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.uid, info.gid, info.mtime = len(data), mode, uid, gid, 1000
    tar.addfile(info, io.BytesIO(data))


def _special(tar: tarfile.TarFile, name: str, kind: bytes, linkname: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    tar.addfile(info)


def _unpack(tmp_path: object, data: bytes) -> str:
    blob = os.path.join(str(tmp_path), "blob")
    with open(blob, "wb") as f:
        f.write(data)
    return unpack_layer(blob, os.path.join(str(tmp_path), "layer"))


def test_whiteouts_become_overlayfs_markers_and_owners_modes_links_are_kept(
        tmp_path: object) -> None:
    def build(tar: tarfile.TarFile) -> None:
        _special(tar, "d", tarfile.DIRTYPE)
        _special(tar, "d/.wh..wh..opq", tarfile.REGTYPE)
        _special(tar, "d/.wh.gone", tarfile.REGTYPE)
        _file(tar, "d/tool", b"#!", mode=0o4755, uid=1000, gid=50)
        _special(tar, "d/hard", tarfile.LNKTYPE, "d/tool")
        _special(tar, "d/soft", tarfile.SYMTYPE, "/etc/anything")

    layer = _unpack(tmp_path, _tar(build))
    gone = os.lstat(os.path.join(layer, "d", "gone"))
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == os.makedev(0, 0)
    assert os.getxattr(os.path.join(layer, "d"), OPAQUE_XATTR) == b"y"
    tool = os.lstat(os.path.join(layer, "d", "tool"))
    assert (tool.st_uid, tool.st_gid, stat.S_IMODE(tool.st_mode)) == (1000, 50, 0o4755)
    assert os.lstat(os.path.join(layer, "d", "hard")).st_ino == tool.st_ino
    assert os.readlink(os.path.join(layer, "d", "soft")) == "/etc/anything"
    assert not os.path.exists(os.path.join(layer, "d", ".wh.gone"))


@pytest.mark.parametrize("build", [
    lambda tar: _file(tar, "../escape"),
    lambda tar: _file(tar, "/abs"),
    lambda tar: (_special(tar, "link", tarfile.SYMTYPE, "/tmp"), _file(tar, "link/owned")),
    lambda tar: _special(tar, "hard", tarfile.LNKTYPE, "../../etc/passwd"),
    lambda tar: _special(tar, "hard", tarfile.LNKTYPE, "not-in-this-layer"),
], ids=["dotdot", "absolute", "symlinked-parent", "hardlink-out", "hardlink-missing"])
def test_entries_that_would_escape_are_refused_and_nothing_is_kept(
        tmp_path: object, build: Callable[[tarfile.TarFile], None]) -> None:
    with pytest.raises(LayerError):
        _unpack(tmp_path, _tar(build))
    assert sorted(os.listdir(str(tmp_path))) == ["blob"]


def test_a_layer_that_differs_from_its_diff_id_is_refused(tmp_path: object) -> None:
    blob = os.path.join(str(tmp_path), "blob")
    with open(blob, "wb") as f:
        f.write(_tar(lambda tar: _file(tar, "a")))
    with pytest.raises(LayerError, match="diff_id"):
        unpack_layer(blob, os.path.join(str(tmp_path), "layer"), "sha256:" + "0" * 64)
    assert sorted(os.listdir(str(tmp_path))) == ["blob"]
