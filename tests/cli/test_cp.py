"""``berth cp`` both ways through a real engine, and paths that try to leave the
container's root filesystem."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path

from engine.containers import copying
from engine.inroot import Root
from tests.e2e.conftest import Engine


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def _own_rootfs(up: Engine, where: str) -> str:
    """A private copy: cp writes into the root filesystem (the shared one stays clean)."""
    root = os.path.join(where, "rootfs")
    shutil.copytree(up.rootfs, root, symlinks=True)
    os.mkdir(os.path.join(root, "data"))
    os.symlink("/", os.path.join(root, "hostroot"))  # absolute: the container's /
    os.symlink("../../../../../../..", os.path.join(root, "data", "up"))
    return root


def test_copy_into_and_out_of_a_container(up: Engine, short_tmp: str) -> None:
    root = _own_rootfs(up, short_tmp)
    _ok(up.cli("run", "-d", "--name", "box", root, "sleep", "60"))
    host = os.path.join(short_tmp, "host")
    os.makedirs(os.path.join(host, "tree", "sub"))
    with open(os.path.join(host, "note.txt"), "w") as f:
        f.write("hello\n")
    with open(os.path.join(host, "tree", "sub", "deep.txt"), "w") as f:
        f.write("deep\n")
    # host -> container: a file into a directory, a directory as a new name
    assert _ok(up.cli("cp", os.path.join(host, "note.txt"), "box:/data/")) == ""
    _ok(up.cli("cp", os.path.join(host, "tree"), "box:/data/copied"))
    out = _ok(up.cli("exec", "box", "sh", "-c", "cat /data/note.txt /data/copied/sub/deep.txt"))
    assert out == "hello\ndeep\n"
    # container -> host: a file as a new name, a directory into a directory
    _ok(up.cli("exec", "box", "sh", "-c", "mkdir -p /data/made && echo made > /data/made/f"))
    back = os.path.join(short_tmp, "back")
    os.mkdir(back)
    _ok(up.cli("cp", "box:/etc/passwd", os.path.join(back, "pw")))
    with open(os.path.join(back, "pw")) as f:
        assert f.read().startswith("root:x:0:0")
    _ok(up.cli("cp", "box:/data/made", back))
    with open(os.path.join(back, "made", "f")) as f:
        assert f.read() == "made\n"
    # as a tar on stdout
    raw = subprocess.run([*_berth(up), "cp", "box:/data/note.txt", "-"], env=up.env,
                         capture_output=True, check=True, timeout=60).stdout
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        assert tar.getnames() == ["note.txt"]
    # each copy in is an event of the container's history
    assert _ok(up.cli("history", "box")).count("container.copied_in") == 2
    # a stopped container takes files too
    _ok(up.cli("stop", "-t", "1", "box"))
    _ok(up.cli("cp", os.path.join(host, "note.txt"), "box:/data/again.txt"))
    assert os.path.isfile(os.path.join(root, "data", "again.txt"))


def test_a_large_copy_goes_in_pieces_both_ways(up: Engine, short_tmp: str) -> None:
    root = _own_rootfs(up, short_tmp)
    _ok(up.cli("create", "--name", "big", root, "true"))
    payload = os.urandom(3 * 1024 * 1024 + 12345)  # four pieces of at most 768 KiB
    src = os.path.join(short_tmp, "blob")
    with open(src, "wb") as f:
        f.write(payload)
    _ok(up.cli("cp", src, "big:/data/blob"))
    with open(os.path.join(root, "data", "blob"), "rb") as f:
        assert f.read() == payload
    back = os.path.join(short_tmp, "back")
    _ok(up.cli("cp", "big:/data/blob", back))
    with open(back, "rb") as f:
        assert f.read() == payload
    history = _ok(up.cli("history", "big"))
    assert history.count("container.copied_in") == 1  # pieces are not events, the copy is


def _berth(up: Engine) -> list[str]:
    import sys

    return [sys.executable, "-m", "berth"]


def test_nothing_escapes_the_root_filesystem(up: Engine, short_tmp: str) -> None:
    root = _own_rootfs(up, short_tmp)
    _ok(up.cli("run", "-d", "--name", "jail", root, "sleep", "60"))
    name = f"berth-cp-{uuid.uuid4().hex[:8]}"
    src = os.path.join(short_tmp, name)
    with open(src, "w") as f:
        f.write("x")
    # links in the container are followed inside it: /hostroot is its own /
    _ok(up.cli("cp", src, "jail:/hostroot/data/"))
    assert os.path.isfile(os.path.join(root, "data", name))
    _ok(up.cli("cp", src, "jail:/data/up/tmp/" + name + ".2"))
    # /data/up climbs to the container's /, whose /tmp is its tmpfs: the file is there
    assert _ok(up.cli("exec", "jail", "cat", "/tmp/" + name + ".2")) == "x"
    assert not os.path.exists(os.path.join(root, "tmp", name + ".2"))
    assert not os.path.exists("/tmp/" + name + ".2")
    # .. stops at the container's /: the host's files are never read
    missing = up.cli("cp", "jail:/../../../../etc/shadow", short_tmp)
    assert missing.returncode == 125 and "no such file" in missing.stderr
    # a crafted archive: a name with .. is refused, an absolute one lands inside
    def send(member: str) -> subprocess.CompletedProcess[bytes]:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo(member)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
        return subprocess.run([*_berth(up), "cp", "-", "jail:/data/"], env=up.env,
                              input=buffer.getvalue(), capture_output=True, timeout=60,
                              check=False)

    refused = send("../../" + name + ".3")
    assert refused.returncode == 125 and b"outside" in refused.stderr, refused.stderr
    # refused at the edge: no intent recorded (only the two copies above are)
    assert _ok(up.cli("history", "jail")).count("container.copied_in") == 2
    assert not os.path.exists(os.path.join(os.path.dirname(root), name + ".3"))
    assert send("/tmp/" + name + ".4").returncode == 0
    assert os.path.isfile(os.path.join(root, "data", "tmp", name + ".4"))
    assert not os.path.exists("/tmp/" + name + ".4")
    both = up.cli("cp", src, short_tmp)
    assert both.returncode == 125 and "between the host and a container" in both.stderr


def test_pieces_are_staged_in_order_and_resends_are_harmless() -> None:
    from engine import commands as c
    from engine.errors import InvalidArgument
    from workers.copies import Transfers

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("f")
        info.size = 3000
        tar.addfile(info, io.BytesIO(b"z" * 3000))
    archive = buffer.getvalue()
    copies, tid = Transfers(), str(uuid.uuid4())
    assert copies.stage(c.CopyChunk("ctr", tid, 0, archive[:1024])) == 1024
    assert copies.stage(c.CopyChunk("ctr", tid, 0, archive[:1024])) == 1024  # a resend
    try:
        copies.stage(c.CopyChunk("ctr", tid, 4096, archive[4096:5120]))
        raise AssertionError("a gap was accepted")
    except InvalidArgument:
        pass
    copies.stage(c.CopyChunk("ctr", tid, 1024, archive[1024:2048]))
    joined = copies.join(c.CopyIn("ctr", "/x", archive[2048:], tid))
    assert joined == c.CopyIn("ctr", "/x", archive)
    # a resend of the closing copy_in after it was joined goes on as it came (the
    # service replays the first outcome, or the rules refuse a copy without pieces)
    again = c.CopyIn("ctr", "/x", archive[2048:], tid)
    assert copies.join(again) is again
    made: list[int] = []

    def make() -> bytes:
        made.append(1)
        return b"a" * (768 * 1024 + 10)

    first, size = copies.page("k", 0, make)
    second, _ = copies.page("k", len(first), make)
    assert (len(first), len(second), size, len(made)) == (768 * 1024, 10, 768 * 1024 + 10, 1)


def test_a_copy_whose_worker_died_after_its_intent_is_finished_once(
        engine: Engine, short_tmp: str) -> None:
    """A regression: a worker killed -9 between ``container.copied_in`` (the intent)
    and the write answered the resend "done" from the intent alone, and the file was
    never written. The resend now finishes the copy and records its end once."""
    root = _own_rootfs(engine, short_tmp)
    engine.start_worker_process()
    _ok(engine.cli("run", "-d", "--network", "none", "--name", "cpbox", root, "sleep", "60"))
    host = os.path.join(short_tmp, "note.txt")
    with open(host, "w") as f:
        f.write("written once\n")
    there: list[bool] = []
    done = engine.through_crash(
        "container.copy_in.intended", "cp", host, "cpbox:/data/",
        while_down=lambda: there.append(os.path.exists(os.path.join(root, "data",
                                                                    "note.txt"))))
    assert done.returncode == 0, done.stderr
    assert there == [False]  # the first attempt died before it wrote
    with open(os.path.join(root, "data", "note.txt")) as f:
        assert f.read() == "written once\n"
    with engine.store() as store:
        types = [r.type for r in store.read_all() if r.type.startswith("container.cop")]
    assert types == ["container.copied_in", "container.copy_finished"]
    _ok(engine.cli("rm", "-f", "cpbox"))


def test_a_directory_copied_as_a_new_name_is_written_once_when_the_worker_dies_after_it(
        engine: Engine, short_tmp: str) -> None:
    """A worker killed -9 after the write of ``cp DIR ctr:/data/new`` (``/data/new``
    did not exist: the directory is written as it) and before ``copy_finished``: the
    resend writes the archive again, and by then ``/data/new`` exists, so it must not
    land inside it (``/data/new/tree``) as a second copy."""
    root = _own_rootfs(engine, short_tmp)
    engine.start_worker_process()
    _ok(engine.cli("run", "-d", "--network", "none", "--name", "cpdir", root, "sleep", "60"))
    tree = os.path.join(short_tmp, "tree")
    os.mkdir(tree)
    with open(os.path.join(tree, "f.txt"), "w") as f:
        f.write("once\n")
    written: list[list[str]] = []
    done = engine.through_crash(
        "container.copy_in.acted", "cp", tree, "cpdir:/data/new",
        while_down=lambda: written.append(os.listdir(os.path.join(root, "data", "new"))))
    assert done.returncode == 0, done.stderr
    assert written == [["f.txt"]]  # the first attempt wrote it, then died
    assert sorted(os.listdir(os.path.join(root, "data", "new"))) == ["f.txt"]
    with engine.store() as store:
        types = [r.type for r in store.read_all() if r.type.startswith("container.cop")]
    assert types == ["container.copied_in", "container.copy_finished"]
    _ok(engine.cli("rm", "-f", "cpdir"))


def test_where_a_copy_lands_is_judged_once_and_a_second_write_there_changes_nothing(
        tmp_path: Path) -> None:
    os.mkdir(os.path.join(tmp_path, "data"))
    root = Root.open(str(tmp_path))
    assert copying.landing(root, "/data") == "/data/"  # a directory: into it
    assert copying.landing(root, "/data//") == "/data/"
    assert copying.landing(root, "/data/new/") == "/data/new"  # none: as it
    assert copying.landing(root, "/") == "/"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in (("tree", None), ("tree/f.txt", b"once\n")):
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    where = copying.landing(root, "/data/new")
    for _ in range(2):  # the first attempt, then its resend
        copying.unpack(root, where, buffer.getvalue())
        assert os.listdir(os.path.join(tmp_path, "data", "new")) == ["f.txt"]
    copying.unpack(root, copying.landing(root, "/data/new"), buffer.getvalue())
    assert sorted(os.listdir(os.path.join(tmp_path, "data", "new"))) == ["f.txt", "tree"]
    root.close()


def test_copies_see_the_container_s_volumes_and_tmpfs_as_it_does(
        up: Engine, short_tmp: str) -> None:
    """A running container is copied to and from in its own mount namespace: a file
    copied into a named volume's target is in the volume (not in the root filesystem
    underneath, which the container never sees), and its /tmp is its tmpfs."""
    root = _own_rootfs(up, short_tmp)
    volume = f"cpvol-{uuid.uuid4().hex[:8]}"
    _ok(up.cli("run", "-d", "--name", "mnt", "-v", f"{volume}:/data/vol", "--tmpfs",
               "/scratch", root, "sleep", "60"))
    note = os.path.join(short_tmp, "note.txt")
    with open(note, "w") as f:
        f.write("hello\n")
    _ok(up.cli("cp", note, "mnt:/data/vol/"))
    _ok(up.cli("cp", note, "mnt:/tmp/"))
    _ok(up.cli("cp", note, "mnt:/scratch/as-named"))
    seen = _ok(up.cli("exec", "mnt", "sh", "-c",
                      "cat /data/vol/note.txt /tmp/note.txt /scratch/as-named"))
    assert seen == "hello\n" * 3
    assert not os.path.exists(os.path.join(root, "data", "vol", "note.txt"))
    assert not os.path.exists(os.path.join(root, "tmp", "note.txt"))
    with open(os.path.join(up.root, "volumes", volume, "_data", "note.txt")) as f:
        assert f.read() == "hello\n"
    # out of them: what the container wrote there
    _ok(up.cli("exec", "mnt", "sh", "-c", "echo temp > /tmp/t; mkdir /data/vol/d; "
               "echo in-volume > /data/vol/d/f"))
    back = os.path.join(short_tmp, "back")
    os.mkdir(back)
    _ok(up.cli("cp", "mnt:/tmp/t", back))
    _ok(up.cli("cp", "mnt:/data/vol/d", back))
    with open(os.path.join(back, "t")) as f:
        assert f.read() == "temp\n"
    with open(os.path.join(back, "d", "f")) as f:
        assert f.read() == "in-volume\n"
    # a stopped container: its root filesystem (its tmpfs is gone with its process)
    _ok(up.cli("stop", "-t", "1", "mnt"))
    _ok(up.cli("cp", note, "mnt:/data/stopped.txt"))
    assert os.path.isfile(os.path.join(root, "data", "stopped.txt"))


def test_directories_copied_in_keep_their_modes(up: Engine, short_tmp: str) -> None:
    root = _own_rootfs(up, short_tmp)
    _ok(up.cli("run", "-d", "--name", "modes", root, "sleep", "60"))
    tree = os.path.join(short_tmp, "tree")
    os.makedirs(os.path.join(tree, "open", "shared"))
    with open(os.path.join(tree, "open", "shared", "f"), "w") as f:
        f.write("x")
    os.chmod(os.path.join(tree, "open", "shared", "f"), 0o640)
    os.chmod(os.path.join(tree, "open", "shared"), 0o2775)
    os.chmod(os.path.join(tree, "open"), 0o755)
    _ok(up.cli("cp", os.path.join(tree, "open"), "modes:/data/"))
    modes = _ok(up.cli("exec", "modes", "stat", "-c", "%a %n", "/data/open",
                       "/data/open/shared", "/data/open/shared/f"))
    assert modes.split("\n")[:3] == ["755 /data/open", "2775 /data/open/shared",
                                     "640 /data/open/shared/f"]


def test_an_image_container_is_copied_to_in_its_overlay_mounted_again_if_need_be(
        up: Engine, short_tmp: str, busybox_rootfs: str) -> None:
    """A container of an image: running, a copy goes to its own view of its overlay;
    stopped, to the overlay itself, mounted again first if a reboot unmounted it (a
    copy into the empty directory beneath would never be seen)."""
    from engine.images import overlay
    from engine.images.store import ImageStore
    from tests.images.conftest import unmount_overlays

    tarball = os.path.join(short_tmp, "rootfs.tar")
    subprocess.run(["tar", "-C", busybox_rootfs, "-cf", tarball, "."], check=True)
    name = f"localhost/cp-{uuid.uuid4().hex[:8]}:one"
    try:
        _ok(up.cli("image", "import", tarball, name, timeout=120))
        cid = _ok(up.cli("run", "-d", "--pull", "never", "--name", "img", name,
                         "sleep", "60")).strip()
        note = os.path.join(short_tmp, "note.txt")
        with open(note, "w") as f:
            f.write("hello\n")
        _ok(up.cli("cp", note, "img:/etc/"))
        _ok(up.cli("stop", "-t", "1", "img"))
        merged = os.path.join(ImageStore(up.root).container_dir(cid), "merged")
        overlay.unmount(merged)  # as a reboot would
        _ok(up.cli("cp", note, "img:/stopped.txt"))
        assert overlay.is_mounted(merged)
        _ok(up.cli("start", "img"))
        assert _ok(up.cli("exec", "img", "cat", "/etc/note.txt", "/stopped.txt")) == "hello\n" * 2
        raw = subprocess.run([*_berth(up), "cp", "img:/stopped.txt", "-"], env=up.env,
                             capture_output=True, check=True, timeout=60).stdout
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            assert tar.getnames() == ["stopped.txt"]
        _ok(up.cli("rm", "-f", "img"))
    finally:
        unmount_overlays(up.root)
