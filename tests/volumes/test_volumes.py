"""Volumes and mounts with real containers: runc, conmon, a real engine and its log."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from typing import Any

import pytest

from bus.client import Client
from engine.errors import InvalidArgument, Unavailable
from tests.e2e.conftest import Engine
from tests.helpers import wait_until


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def _name(prefix: str = "vol") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _events(up: Engine, *types: str) -> list[tuple[str, str, dict[str, Any]]]:
    with up.store() as store:
        return [(r.stream, r.type, r.event.to_data())
                for r in store.query(types=list(types) or None)]


def _answers(client: Client) -> bool:
    try:
        client.volumes()
    except Unavailable:
        return False
    return True


def _data_dir(up: Engine, name: str) -> str:
    return os.path.join(up.root, "volumes", name, "_data")


def test_named_volume_keeps_data_for_the_next_container(up: Engine) -> None:
    name = _name()
    first = up.cli("run", "--name", "writer", "-v", f"{name}:/var", up.rootfs,
                   "sh", "-c", "echo kept > /var/note; cat /proc/mounts | grep ' /var '")
    assert " /var " in _ok(first)
    _ok(up.cli("rm", "writer"))
    # The volume outlived its first container; a second one reads what it wrote.
    assert _ok(up.cli("run", "--rm", "-v", f"{name}:/root:ro", up.rootfs,
                      "cat", "/root/note")) == "kept\n"
    listed = [json.loads(line) for line in
              _ok(up.cli("volume", "ls", "--format", "json")).splitlines()]
    assert [(v["name"], v["implicit"]) for v in listed] == [(name, True)]
    assert listed[0]["mountpoint"] == _data_dir(up, name)
    # The log says so: the volume in its own stream, the mount in the created event.
    assert _events(up, "volume.created") == [
        (f"volume:{name}", "volume.created",
         {"name": name, "node": "local", "labels": {}, "implicit": True})]
    mounts = [data["spec"]["mounts"] for _s, _t, data in _events(up, "container.created")]
    assert mounts[0] == [{"type": "volume", "source": name, "target": "/var",
                          "readonly": False, "size": None, "mode": None}]
    assert mounts[1][0]["readonly"] is True


def test_read_only_mounts_refuse_writes(up: Engine, short_tmp: str) -> None:
    host = os.path.join(short_tmp, "host-ro")
    os.makedirs(host)
    name = _name()
    for source in (host, name):
        result = up.cli("run", "--rm", "-v", f"{source}:/var:ro", up.rootfs,
                        "sh", "-c", "echo no > /var/f")
        assert result.returncode != 0
        assert "Read-only file system" in result.stderr
    assert os.listdir(host) == [] and os.listdir(_data_dir(up, name)) == []
    # The same mount read-write takes the write: the refusal was the mount's doing.
    _ok(up.cli("run", "--rm", "--mount", f"type=bind,src={host},dst=/var", up.rootfs,
               "sh", "-c", "echo yes > /var/f"))
    with open(os.path.join(host, "f")) as f:
        assert f.read() == "yes\n"


def test_bind_mount_shows_host_files(up: Engine, short_tmp: str) -> None:
    host = os.path.join(short_tmp, "host-files")
    os.makedirs(os.path.join(host, "sub"))
    with open(os.path.join(host, "sub", "hello.txt"), "w") as f:
        f.write("from the host\n")
    out = _ok(up.cli("run", "--rm", "-v", f"{host}:/root", up.rootfs,
                     "cat", "/root/sub/hello.txt"))
    assert out == "from the host\n"


def test_tmpfs_has_the_size_asked_for(up: Engine) -> None:
    out = _ok(up.cli("run", "--rm", "--tmpfs", "/run:size=1m,mode=700",
                     "--mount", "type=tmpfs,dst=/var,tmpfs-size=64k", up.rootfs,
                     "sh", "-c", "grep -E ' /(run|var) ' /proc/mounts; "
                     "dd if=/dev/zero of=/var/big bs=1k count=100 2>&1; true"))
    mounts = {line.split()[1]: line.split() for line in out.splitlines()
              if line.startswith("tmpfs ")}
    assert mounts["/run"][2] == "tmpfs" and "size=1024k" in mounts["/run"][3]
    assert "mode=700" in mounts["/run"][3]
    assert "size=64k" in mounts["/var"][3]
    assert "No space left on device" in out  # 100 KiB do not fit in 64 KiB


def test_a_read_only_tmpfs_refuses_writes_in_a_real_container(up: Engine) -> None:
    """``:ro`` on a tmpfs reaches the kernel: the mount is read-only in
    /proc/mounts and a write fails with EROFS, while a ``rw`` one beside it takes it."""
    done = up.cli("run", "--rm", "--tmpfs", "/run:ro,size=1m", "--mount",
                  "type=tmpfs,dst=/var,readonly", "--tmpfs", "/tmp:rw", up.rootfs, "sh", "-c",
                  "grep -E ' /(run|var|tmp) ' /proc/mounts; touch /run/x; touch /var/x; "
                  "touch /tmp/x && echo tmp-written")
    assert done.returncode == 0, done.stderr
    mounts = {line.split()[1]: line.split()[3].split(",") for line in done.stdout.splitlines()
              if line.startswith("tmpfs ")}
    assert "ro" in mounts["/run"] and "ro" in mounts["/var"] and "rw" in mounts["/tmp"]
    for path in ("/run/x", "/var/x"):
        assert f"touch: {path}: Read-only file system" in done.stderr, done.stderr
    assert "tmp-written" in done.stdout


def test_volume_rm_is_refused_while_a_container_uses_it(up: Engine) -> None:
    name = _name()
    _ok(up.cli("volume", "create", "--label", "team=db", name))
    assert json.loads(_ok(up.cli("volume", "inspect", name)))[0]["labels"] == {"team": "db"}
    cid = _ok(up.cli("create", "--name", "holder", "-v", f"{name}:/var", up.rootfs,
                     "true")).strip()
    refused = up.cli("volume", "rm", name)
    assert refused.returncode != 0
    assert refused.stderr.strip() == (f"berth: volume {name} is in use by container(s) "
                                      "holder: remove them first")
    assert os.path.isdir(_data_dir(up, name))
    assert json.loads(_ok(up.cli("volume", "inspect", name)))[0]["containers"] == ["holder"]
    # An exited container holds it as much as a created one.
    _ok(up.cli("start", "-a", cid))
    assert up.cli("volume", "rm", name).returncode != 0
    _ok(up.cli("rm", cid))
    assert _ok(up.cli("volume", "rm", name)) == f"{name}\n"
    assert not os.path.exists(os.path.join(up.root, "volumes", name))
    assert [t for _s, t, _d in _events(up, "volume.created", "volume.removed")] == [
        "volume.created", "volume.removed"]
    shown = _ok(up.cli("events"))
    assert "volume.removed" in shown and f"volume:{name}"[:12] in shown
    missing = up.cli("volume", "rm", name)
    assert missing.returncode != 0 and f"no such volume: {name}" in missing.stderr
    _ok(up.cli("volume", "rm", "-f", name))


def _refused_and_kept(up: Engine, name: str, holders: set[str]) -> None:
    refused = up.cli("volume", "rm", "-f", name)
    assert refused.returncode != 0
    said = refused.stderr.strip()
    prefix, suffix = f"berth: volume {name} is in use by container(s) ", ": remove them first"
    assert said.startswith(prefix) and said.endswith(suffix), said
    assert set(said[len(prefix):-len(suffix)].split(", ")) == holders
    with open(os.path.join(_data_dir(up, name), "file")) as f:
        assert f.read() == "kept\n"
    assert json.loads(_ok(up.cli("volume", "inspect", name)))[0]["name"] == name


def test_volume_rm_force_never_removes_a_volume_a_container_mounts(up: Engine) -> None:
    """podman's ``volume rm -f`` removes the containers first; berth refuses instead
    (``-f`` only makes a missing volume no error): a volume's data is lost only when
    its users were removed on purpose (docs/operations.md, Volumes)."""
    name = _name()
    running = _ok(up.cli("run", "-d", "--name", f"w-{name}", "-v", f"{name}:/var",
                         up.rootfs, "sh", "-c", "echo kept > /var/file; sleep 60")).strip()
    wait_until(lambda: os.path.exists(os.path.join(_data_dir(up, name), "file")), 15,
               what="the container's write into its volume")
    created = _ok(up.cli("create", "--name", f"c-{name}", "-v", f"{name}:/var", up.rootfs,
                         "true")).strip()
    _refused_and_kept(up, name, {f"w-{name}", f"c-{name}"})
    assert json.loads(_ok(up.cli("inspect", running)))[0]["state"] == "running"
    _ok(up.cli("rm", "-f", running))
    _refused_and_kept(up, name, {f"c-{name}"})
    assert [t for _s, t, _d in _events(up, "volume.removed")] == []
    _ok(up.cli("rm", created))
    assert _ok(up.cli("volume", "rm", "-f", name)) == f"{name}\n"
    assert not os.path.exists(os.path.join(up.root, "volumes", name))


def test_prune_removes_only_unused_volumes(up: Engine) -> None:
    unused, used = _name("unused"), _name("used")
    client = up.client()
    # The worker says "connected" once its READY is sent, which the broker may not have
    # read yet: wait until a worker answers before the first in-process command.
    wait_until(lambda: _answers(client), 10, what="a worker answering")
    client.volume_create(unused)
    client.create(rootfs=up.rootfs, args=["true"], volumes=[f"{used}:/var"], name="user")
    assert sorted(v["name"] for v in client.volumes()) == sorted([unused, used])
    assert _ok(up.cli("volume", "prune")) == f"{unused}\n"
    assert [v["name"] for v in client.volumes()] == [used]
    assert not os.path.exists(os.path.join(up.root, "volumes", unused))
    assert os.path.isdir(_data_dir(up, used))
    assert [n for n in os.listdir(os.path.join(up.root, "volumes"))] == [used]
    # Volume streams sit beside the containers' in one log: the read model replays the
    # same, and the audit chain holds.
    with up.store() as store:
        assert store.verify_read_model() == []
    assert client.verify_audit()["ok"] is True


def test_a_new_volume_is_filled_from_the_rootfs(up: Engine, short_tmp: str) -> None:
    rootfs = os.path.join(short_tmp, "seeded")
    shutil.copytree(up.rootfs, rootfs, symlinks=True)
    seed = os.path.join(rootfs, "srv", "app")
    os.makedirs(os.path.join(seed, "conf"))
    with open(os.path.join(seed, "conf", "app.ini"), "w") as f:
        f.write("port=80\n")
    os.chown(os.path.join(seed, "conf", "app.ini"), 1234, 2345)
    os.chmod(os.path.join(seed, "conf", "app.ini"), 0o640)
    os.chmod(os.path.join(seed, "conf"), 0o710)
    os.symlink("conf/app.ini", os.path.join(seed, "current"))
    # /srv is a link in this rootfs: the fill follows it inside the rootfs, never out.
    os.rename(os.path.join(rootfs, "srv"), os.path.join(rootfs, "opt"))
    os.symlink("/opt", os.path.join(rootfs, "srv"))
    name = _name()
    out = _ok(up.cli("run", "--rm", "-v", f"{name}:/srv/app", rootfs, "sh", "-c",
                     "stat -c '%u:%g %a' /srv/app/conf/app.ini /srv/app/conf; "
                     "cat /srv/app/current; echo more > /srv/app/added"))
    assert out == "1234:2345 640\n0:0 710\nport=80\n"
    data = _data_dir(up, name)
    st = os.stat(os.path.join(data, "conf", "app.ini"))
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1234, 2345, 0o640)
    assert os.readlink(os.path.join(data, "current")) == "conf/app.ini"
    # Filled once: a volume that holds data is mounted as it is, and the rootfs is untouched.
    os.unlink(os.path.join(data, "conf", "app.ini"))
    out = _ok(up.cli("run", "--rm", "-v", f"{name}:/srv/app", rootfs, "ls", "/srv/app/conf"))
    assert out == ""
    assert sorted(os.listdir(os.path.join(rootfs, "opt", "app"))) == ["conf", "current"]
    # An empty directory in the rootfs leaves an empty volume.
    empty = _name()
    _ok(up.cli("run", "--rm", "-v", f"{empty}:/tmp", rootfs, "true"))
    assert os.listdir(_data_dir(up, empty)) == []


def _nothing_written(up: Engine, before: int) -> None:
    with up.store() as store:
        assert store.max_position() == before
    volumes = os.path.join(up.root, "volumes")
    assert not os.path.exists(volumes) or os.listdir(volumes) == []
    containers = os.path.join(up.root, "containers")
    assert not os.path.exists(containers) or os.listdir(containers) == []


def test_bad_mounts_are_refused_with_nothing_created(up: Engine, short_tmp: str) -> None:
    with up.store() as store:
        before = store.max_position()
    missing = os.path.join(short_tmp, "no-such-dir")
    name = _name()
    for args, expect in (
        (("-v", "relative/dir:/var"), "is not an absolute path"),
        (("-v", f"{missing}:/var"), "does not exist on this host"),
        (("-v", f"{name}:var"), "is not an absolute path"),
        (("-v", f"{name}:/proc"), "cannot mount over /proc"),
        (("--tmpfs", "/sys"), "cannot mount over /sys"),
        (("--mount", f"type=volume,src={name},dst=/var,nocopy"), "unknown mount option"),
        (("-v", f"{name}:/var:z"), "unknown volume option"),
        (("-v", f"{name}:/var", "--tmpfs", "/var"), "given twice"),
    ):
        result = up.cli("run", "--rm", *args, up.rootfs, "true")
        lines = result.stderr.strip().splitlines()
        assert result.returncode != 0
        assert len(lines) == 1 and lines[0].startswith("berth: ") and expect in lines[0], (
            args, result.stderr)
    for bad in ("a/b", "", ".hidden", "x" * 200):
        result = up.cli("volume", "create", bad)
        assert result.returncode != 0 and "invalid volume name" in result.stderr, result.stderr
    _nothing_written(up, before)
    # The client's edge: refused before anything is sent.
    client = up.client()
    with pytest.raises(InvalidArgument, match="cannot mount over /dev"):
        client.create(rootfs=up.rootfs, args=["true"], tmpfs=["/dev"])
    with pytest.raises(InvalidArgument, match="invalid volume name"):
        client.volume_create("bad/name")
    # A NUL byte gets past no edge (the worker checks too, for publishers of other kinds).
    command = client.command("container.create", args={
        "rootfs": up.rootfs, "args": ["true"],
        "mounts": [{"type": "bind", "source": "/tmp\0x", "target": "/var"}]})
    reply = client.request(command, check=False)
    assert not reply.ok and "NUL byte" in (reply.message or "")
    _nothing_written(up, before)
