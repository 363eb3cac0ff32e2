"""``engine.containers.copying`` and ``engine.containers.tarstream`` without containers:
archives read and
written entry by entry, extraction and packing through descriptors inside a root,
modes kept, and every way an archive or a tree tries to reach outside refused."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.containers import copying
from engine.containers import tarstream as ts
from engine.errors import InvalidArgument, NotFound
from engine.inroot import Root


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Root]:
    """A container's tree (``tree/``) beside a host directory it must never reach."""
    (tmp_path / "tree" / "data").mkdir(parents=True)
    (tmp_path / "host").mkdir()
    (tmp_path / "host" / "secret").write_text("host secret\n")
    with Root.open(str(tmp_path / "tree")) as opened:
        yield opened


def _tar(*members: tuple[str, bytes | str | None, int], fmt: int = tarfile.PAX_FORMAT,
         kind: bytes | None = None) -> bytes:
    """(name, content, mode): bytes a file, None a directory, str a symbolic link."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for name, content, mode in members:
            info = tarfile.TarInfo(name)
            info.mode, info.mtime = mode, 1_000_000_000
            if content is None:
                info.type = tarfile.DIRTYPE
            elif isinstance(content, str):
                info.type, info.linkname = (kind or tarfile.SYMTYPE), content
            else:
                info.size = len(content)
            tar.addfile(info, io.BytesIO(content) if isinstance(content, bytes) else None)
    return buffer.getvalue()


def _host_untouched(tmp_path: Path) -> None:
    assert sorted(os.listdir(tmp_path / "host")) == ["secret"]
    assert (tmp_path / "host" / "secret").read_text() == "host secret\n"


# ------------------------------------------------------------------------ tarstream

@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_archives_tarfile_writes_are_read_entry_by_entry(fmt: int) -> None:
    deep = "top/" + "d" * 120 + "/" + "f" * 90  # a ustar prefix, a GNU or pax long name
    data = _tar(("top", None, 0o2755), (deep, b"hello", 0o4755), ("top/l", "/etc", 0o777),
                ("top/fifo", b"", 0o600), fmt=fmt)
    found = [(e.name.rstrip("/"), e.type, e.mode, e.size, data[e.offset:e.offset + e.size])
             for e in ts.entries(data)]
    assert found == [("top", ts.DIRECTORY, 0o2755, 0, b""),
                     (deep, ts.REGULAR, 0o4755, 5, b"hello"),
                     ("top/l", ts.SYMLINK, 0o777, 0, b""),
                     ("top/fifo", ts.REGULAR, 0o600, 0, b"")]
    assert all(e.mtime == 1_000_000_000 for e in ts.entries(data))


def test_archives_written_here_are_read_by_tarfile() -> None:
    long_name = "top/" + "a" * 200 + "/" + "b" * 50  # no ustar split: a pax path
    split_name = "top/" + "c" * 120 + "/d"  # a ustar prefix
    parts = [ts.header("top", ts.DIRECTORY, mode=0o755, uid=0, gid=0, mtime=1),
             ts.header(long_name, ts.REGULAR, mode=0o4644, uid=9_999_999, gid=0, mtime=-5,
                       size=3) + b"abc" + ts.padding(3),
             ts.header(split_name, ts.REGULAR, mode=0o644, uid=0, gid=0, mtime=2),
             ts.header("top/l", ts.SYMLINK, mode=0o777, uid=0, gid=0, mtime=2,
                       linkname="q" * 300),
             ts.header("top/raw\udcff", ts.HARDLINK, mode=0o644, uid=0, gid=0, mtime=2,
                       linkname=split_name)]
    data = b"".join(parts)
    data += ts.end_of_archive(len(data))
    assert len(data) % ts.RECORD == 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["top", long_name, split_name, "top/l",
                                            "top/raw\udcff"]
        assert (members[1].mode, members[1].uid, members[1].mtime) == (0o4644, 9_999_999, -5)
        assert tar.extractfile(members[1]).read() == b"abc"  # type: ignore[union-attr]
        assert members[3].linkname == "q" * 300 and members[4].linkname == split_name
    assert [e.name for e in ts.entries(data)] == [m.name for m in members]


@pytest.mark.parametrize(("data", "message"), [
    (b"", "empty"),
    (b"x" * 512, "not a tar archive"),
    (bytes(1024), "empty"),
])
def test_what_is_not_an_archive_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        copying.check_archive(data)


def test_damaged_and_truncated_archives_are_refused() -> None:
    data = bytearray(_tar(("top", None, 0o755), ("top/f", b"x" * 2000, 0o644)))
    with pytest.raises(InvalidArgument, match="cut short"):
        copying.check_archive(bytes(data[:1536]))
    data[512 + 10] ^= 0x01  # the second header's name
    with pytest.raises(InvalidArgument, match="bad checksum"):
        copying.check_archive(bytes(data))


@pytest.mark.parametrize(("members", "message"), [
    ([("top/../../escape", b"x", 0o644)], r"outside its directory \(\.\.\)"),
    ([("a", b"x", 0o644), ("b", b"y", 0o644)], "one top-level"),
    ([("top", None, 0o755), ("top/h", "../other", 0o644)], r"\.\."),
    ([("top", None, 0o755), ("top/h", "elsewhere/f", 0o644)], "one top-level"),
])
def test_names_and_hard_links_outside_the_archive_are_refused(
        members: list[tuple[str, bytes | str | None, int]], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        copying.check_archive(_tar(*members, kind=tarfile.LNKTYPE))


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.GNUTYPE_SPARSE,
                                  b"Q"])
def test_device_sparse_and_unknown_entries_are_refused(kind: bytes) -> None:
    info = tarfile.TarInfo("dev")
    info.type = kind
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(info)
    with pytest.raises(InvalidArgument, match="berth cp carries"):
        copying.check_archive(buffer.getvalue())


def test_entries_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(copying, "MAX_ENTRIES", 3)
    data = _tar(("top", None, 0o755), *((f"top/{i}", b"", 0o644) for i in range(3)))
    with pytest.raises(InvalidArgument, match="more than 3 entries"):
        copying.check_archive(data)


# ------------------------------------------------------------------------ unpacking

def test_directories_and_files_keep_the_archive_s_modes_and_times(
        root: Root, tmp_path: Path) -> None:
    data = _tar(("top", None, 0o755), ("top/shared", None, 0o2775),
                ("top/shared/g", b"", 0o664), ("top/ro", None, 0o555),
                ("top/ro/f", b"x", 0o444), ("top/sticky", None, 0o1777),
                ("top/prog", b"#!", 0o4755))
    assert copying.unpack(root, "/data/", data) == 7
    tree = tmp_path / "tree" / "data" / "top"
    modes = {p: stat.S_IMODE(os.lstat(tree / p).st_mode)
             for p in ("", "shared", "ro", "ro/f", "sticky", "prog", "shared/g")}
    assert modes == {"": 0o755, "shared": 0o2775, "ro": 0o555, "ro/f": 0o444,
                     "sticky": 0o1777, "prog": 0o4755, "shared/g": 0o664}
    assert all(os.lstat(tree / p).st_mtime == 1_000_000_000 for p in modes)
    # on the host's side (a container's archive) set-id bits are dropped
    with Root.open(str(tmp_path / "host")) as host:
        copying.unpack(host, "/", data, setid=False)
    assert stat.S_IMODE(os.lstat(tmp_path / "host" / "top" / "prog").st_mode) == 0o755
    assert stat.S_IMODE(os.lstat(tmp_path / "host" / "top" / "shared").st_mode) == 0o775


def test_links_in_the_tree_or_the_archive_never_lead_out(root: Root, tmp_path: Path) -> None:
    data_dir = tmp_path / "tree" / "data"
    host = str(tmp_path / "host")
    os.symlink(host, data_dir / "abs")  # absolute: the container's own /<host path>
    os.symlink("../../host", data_dir / "rel")  # climbs past the container's /
    os.symlink(os.path.join(host, "secret"), data_dir / "file")
    for where in ("/data/abs/", "/data/rel/", "/data/abs/new", "/data/file"):
        try:
            copying.unpack(root, where, _tar(("f", b"x", 0o644)))
        except (NotFound, InvalidArgument):
            pass
    # an archive that makes a link and then writes through it
    evil = _tar(("top", None, 0o755), ("top/out", host, 0o777), ("top/out/f", b"x", 0o644),
                ("top/up", "../../..", 0o777), ("top/up/g", b"x", 0o644))
    try:
        copying.unpack(root, "/data/", evil)
    except InvalidArgument:
        pass
    # a hard link to a file outside
    for target in (os.path.join(host, "secret"), "top/../../../host/secret"):
        with pytest.raises(InvalidArgument):
            copying.unpack(root, "/data/", _tar(("top", None, 0o755),
                                                ("top/h", target, 0o644),
                                                kind=tarfile.LNKTYPE))
    _host_untouched(tmp_path)
    # a copy as /data/file replaced the link there, it did not write through it
    assert not (data_dir / "file").is_symlink() and (data_dir / "file").read_text() == "x"


def test_an_archive_stays_inside_its_top_level_entry(tmp_path: Path) -> None:
    """A container's archive copied out into a home directory: links it makes lead
    at most elsewhere inside the copy, never to the files beside it."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    os.chmod(home / ".ssh", 0o700)
    (home / ".bashrc").write_text("mine\n")
    evil = _tar(("made", None, 0o755), ("made/up", "..", 0o777), ("made/root", "/", 0o777),
                ("made/up/.bashrc", b"theirs\n", 0o644),
                ("made/root/.profile", b"theirs\n", 0o644),
                ("made/up/.ssh", None, 0o777), ("made/root/.ssh/authorized_keys", b"k", 0o644))
    with Root.open("/") as host:
        copying.unpack(host, copying.landing(host, str(home)), evil, setid=False)
    assert (home / ".bashrc").read_text() == "mine\n"
    assert not (home / ".profile").exists()
    assert stat.S_IMODE(os.stat(home / ".ssh").st_mode) == 0o700
    assert os.listdir(home / ".ssh") == []
    made = home / "made"  # where they went: inside the copy
    assert (made / ".bashrc").read_text() == "theirs\n"
    assert (made / ".ssh" / "authorized_keys").read_text() == "k"


def test_a_copy_replaces_files_and_links_but_not_directories(root: Root, tmp_path: Path) -> None:
    data_dir = tmp_path / "tree" / "data"
    (data_dir / "top").mkdir()
    (data_dir / "top" / "f").write_text("old")
    os.symlink(str(tmp_path / "host" / "secret"), data_dir / "top" / "l")
    (data_dir / "top" / "d").mkdir()
    data = _tar(("top", None, 0o750), ("top/f", b"new", 0o600), ("top/l", b"file", 0o600))
    copying.unpack(root, "/data/", data)
    assert (data_dir / "top" / "f").read_text() == "new"
    assert not (data_dir / "top" / "l").is_symlink()
    assert (data_dir / "top" / "l").read_text() == "file"
    with pytest.raises(InvalidArgument, match="a directory is there"):
        copying.unpack(root, "/data/", _tar(("top", None, 0o755), ("top/d", b"x", 0o644)))
    _host_untouched(tmp_path)


def test_hard_links_fifos_and_parents_the_archive_does_not_list(
        root: Root, tmp_path: Path) -> None:
    data = _tar(("top/a/b/f", b"body", 0o640), ("top/a/b/h", "top/a/b/f", 0o640),
                kind=tarfile.LNKTYPE)
    copying.unpack(root, "/data/new", data)  # as a new name: the top renamed
    made = tmp_path / "tree" / "data" / "new" / "a" / "b"
    assert os.stat(made / "f").st_ino == os.stat(made / "h").st_ino
    assert stat.S_IMODE(os.stat(made).st_mode) == 0o755
    info = tarfile.TarInfo("p")
    info.type, info.mode = tarfile.FIFOTYPE, 0o620
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.addfile(info)
    copying.unpack(root, "/data/", buffer.getvalue())
    st = os.lstat(tmp_path / "tree" / "data" / "p")
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o620


def test_a_missing_destination_is_not_found(root: Root) -> None:
    with pytest.raises(NotFound, match="no such directory"):
        copying.unpack(root, "/nowhere/", _tar(("f", b"x", 0o644)))
    with pytest.raises(NotFound, match="no such directory"):
        copying.unpack(root, "/nowhere/f", _tar(("f", b"x", 0o644)))


# ------------------------------------------------------------------------ packing

def test_a_tree_is_packed_as_it_is_links_kept_devices_left_out(
        root: Root, tmp_path: Path) -> None:
    data_dir = tmp_path / "tree" / "data"
    (data_dir / "t" / "sub").mkdir(parents=True)
    (data_dir / "t" / "sub" / "f").write_bytes(b"content")
    os.chmod(data_dir / "t" / "sub", 0o2750)
    os.link(data_dir / "t" / "sub" / "f", data_dir / "t" / "hard")
    os.symlink(str(tmp_path / "host" / "secret"), data_dir / "t" / "abs")
    os.symlink("../../../host", data_dir / "t" / "up")
    os.mkfifo(data_dir / "t" / "fifo")
    os.mknod(data_dir / "t" / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    data = copying.pack(root, "/data/t")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {"t", "t/sub", "t/sub/f", "t/hard", "t/abs", "t/up", "t/fifo"}
        assert members["t/sub"].mode == 0o2750
        regular = [n for n in ("t/sub/f", "t/hard") if members[n].isreg()]
        (linked,) = {"t/sub/f", "t/hard"} - set(regular)
        assert members[linked].islnk() and members[linked].linkname == regular[0]
        assert tar.extractfile(regular[0]).read() == b"content"  # type: ignore[union-attr]
        assert members["t/abs"].issym() and members["t/up"].linkname == "../../../host"
        assert members["t/fifo"].isfifo()
    assert b"host secret" not in data


def test_the_path_given_is_resolved_inside_the_root(root: Root, tmp_path: Path) -> None:
    data_dir = tmp_path / "tree" / "data"
    os.symlink(str(tmp_path / "host"), data_dir / "abs")
    os.symlink("../../../../host/secret", data_dir / "up")
    for path in ("/data/abs/secret", "/data/up", "/../host/secret"):
        with pytest.raises(NotFound):
            copying.pack(root, path)
    (data_dir / "f").write_text("in the container\n")
    os.symlink("/data/f", data_dir / "link")  # absolute: the container's /data/f
    with tarfile.open(fileobj=io.BytesIO(copying.pack(root, "/data/link"))) as tar:
        (member,) = tar.getmembers()
        assert member.name == "link"
        assert tar.extractfile(member).read() == b"in the container\n"  # type: ignore[union-attr]


def test_packing_is_bounded(root: Root, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = tmp_path / "tree" / "data"
    (data_dir / "big").write_bytes(b"x" * 5000)
    with pytest.raises(InvalidArgument, match="larger than 4096 bytes"):
        copying.pack(root, "/data/big", 4096)
    deep = data_dir / "deep"
    deep.mkdir()
    for i in range(5):
        (deep / str(i)).write_text("")
    monkeypatch.setattr(copying, "MAX_ENTRIES", 4)
    with pytest.raises(InvalidArgument, match="more than 4 entries"):
        copying.pack(root, "/data/deep")
    monkeypatch.setattr(copying, "MAX_DEPTH", 3)
    monkeypatch.setattr(copying, "MAX_ENTRIES", 100)
    (deep / "a" / "b" / "c" / "d").mkdir(parents=True)
    with pytest.raises(InvalidArgument, match="more than 3 directories deep"):
        copying.pack(root, "/data/deep")


def test_a_packed_tree_unpacks_to_the_same_tree(root: Root, tmp_path: Path) -> None:
    data_dir = tmp_path / "tree" / "data"
    (data_dir / "t" / "a").mkdir(parents=True)
    (data_dir / "t" / "a" / "x").write_bytes(os.urandom(70_000))
    (data_dir / "t" / ("long" * 40)).write_text("name over 100 bytes")
    os.symlink("a/x", data_dir / "t" / "l")
    copying.unpack(root, "/data/copy", copying.pack(root, "/data/t"))
    for name in ("a/x", "long" * 40):
        assert (data_dir / "copy" / name).read_bytes() == (data_dir / "t" / name).read_bytes()
    assert os.readlink(data_dir / "copy" / "l") == "a/x"
