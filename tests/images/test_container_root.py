"""A container's root from an image: its mode is the image's (0755 by default, not the
worker's umask), and its /etc/passwd and /etc/group are read inside it, never opened
when they are not regular files, with no overlay left mounted by a failed create."""

from __future__ import annotations

import gzip
import io
import os
import stat
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.images import overlay
from engine.images.store import ImageStore
from tests.e2e.conftest import Engine
from tests.images.conftest import unmount_overlays
from tests.images.registry import Registry, build_layout, layer, push


def _publish(tmp: str, registry: Registry, repo: str, layers: list[bytes],
             config: dict[str, object] | None = None) -> str:
    ref = f"{registry.host}/{repo}:v1"
    push(build_layout(os.path.join(tmp, "src"), "img", layers, config), "img", ref)
    return ref


def _entries_layer(*members: tarfile.TarInfo) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            tar.addfile(member)
    return gzip.compress(buf.getvalue(), mtime=0)


def _member(name: str, kind: bytes, *, mode: int = 0o644, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, linkname
    return info


def _cli(up: Engine, *args: str) -> subprocess.CompletedProcess[str]:
    return up.cli(*args, timeout=120)


def _mounts_under(root: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split(" ")[4] for line in f if line.split(" ")[4].startswith(root)]


@pytest.fixture
def worker_process(engine: Engine) -> Iterator[Engine]:
    """A worker as the daemon runs it: its own process, umask 077."""
    engine.start_worker_process()
    try:
        yield engine
    finally:
        unmount_overlays(engine.root)


def test_the_containers_root_has_the_images_mode_not_the_workers_umask(
        worker_process: Engine, registry: Registry, repo: str, base_layer: bytes) -> None:
    up = worker_process
    ref = _publish(up.root, registry, repo, [base_layer])
    done = _cli(up, "run", "--rm", "--tls-verify=false", "-u", "65534", ref, "sh", "-c",
                "stat -c %a /; ls /etc >/dev/null && echo etc-readable")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "755\netc-readable\n"
    # an image whose top layer gives its root a mode: that mode
    tight = _entries_layer(_member(".", tarfile.DIRTYPE, mode=0o750))
    ref2 = _publish(up.root, registry, repo + "-tight", [base_layer, tight])
    done = _cli(up, "run", "--rm", "--tls-verify=false", ref2, "stat", "-c", "%a", "/")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "750\n"
    # a named volume's _data: 0755 for its non-root users too
    done = _cli(up, "run", "--rm", "--tls-verify=false", "-v", f"vol-{repo[-8:]}:/data",
                "-u", "65534", ref, "sh", "-c", "stat -c %a /data; ls /data && echo ok")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "755\nok\n"
    data = os.path.join(up.root, "volumes", f"vol-{repo[-8:]}", "_data")
    assert oct(os.stat(data).st_mode & 0o7777) == "0o755"


def test_a_fifo_as_etc_passwd_wedges_nothing_and_leaks_no_mount(
        iup: Engine, registry: Registry, repo: str, base_layer: bytes) -> None:
    fifos = _entries_layer(_member("etc/passwd", tarfile.FIFOTYPE),
                           _member("etc/group", tarfile.FIFOTYPE))
    ref = _publish(iup.root, registry, repo, [base_layer, fifos], {"User": "nobody"})
    plain = _publish(iup.root, registry, repo + "-plain", [base_layer, fifos])
    for r in (ref, plain):
        assert _cli(iup, "pull", "--tls-verify=false", r).returncode == 0
    started = time.monotonic()
    for _ in range(4):  # each would once have held a worker thread and its mount for ever
        for args, said in (((ref,), "is not in its /etc/passwd"),
                           (("-u", "alice", ref), "/etc/passwd is not a regular file"),
                           # runc's init would open it (and block): refused first
                           (("-u", "0", plain), "/etc/passwd is not a regular file"),
                           ((plain,), "/etc/passwd is not a regular file")):
            refused = _cli(iup, "create", "--pull", "never", *args, "true")
            assert refused.returncode != 0
            assert said in refused.stderr, (args, refused.stderr)
    assert time.monotonic() - started < 60
    assert ImageStore(iup.root).containers() == []
    assert _mounts_under(iup.root) == []
    assert iup.client().volumes() == []  # the worker still answers


def test_a_link_to_a_host_file_as_etc_passwd_is_resolved_inside_the_image(
        iup: Engine, registry: Registry, repo: str, base_layer: bytes, short_tmp: str) -> None:
    host = os.path.join(short_tmp, "host-passwd")
    with open(host, "w") as f:
        f.write("hostonly:x:4242:4242::/:/bin/sh\n")
    links = _entries_layer(_member("etc/passwd", tarfile.SYMTYPE, linkname=host),
                           _member("etc/group", tarfile.SYMTYPE,
                                   linkname="../../../../../../../.." + host))
    ref = _publish(iup.root, registry, repo, [base_layer, links], {"User": "hostonly"})
    refused = _cli(iup, "run", "--rm", "--tls-verify=false", ref, "true")
    assert refused.returncode != 0
    assert "is not in its /etc/passwd" in refused.stderr, refused.stderr
    refused = _cli(iup, "run", "--rm", "--pull", "never", "-u", "hostonly", ref, "true")
    assert refused.returncode != 0
    assert "is not in the container's /etc/passwd" in refused.stderr, refused.stderr
    assert ImageStore(iup.root).containers() == [] and _mounts_under(iup.root) == []
    # the same path inside the image is what is read
    inside = layer({host.lstrip("/"): b"hostonly:x:77:88::/:/bin/sh\n"})
    ref2 = _publish(iup.root, registry, repo + "-inside", [base_layer, links, inside],
                    {"User": "hostonly"})
    done = _cli(iup, "run", "--rm", "--tls-verify=false", ref2, "id", "-u")
    assert done.returncode == 0 and done.stdout == "77\n", done.stderr


def test_a_create_that_fails_after_the_mount_unmounts_the_overlay(
        iup: Engine, registry: Registry, repo: str, base_layer: bytes) -> None:
    loop = _entries_layer(_member("loop", tarfile.SYMTYPE, linkname="loop"))
    ref = _publish(iup.root, registry, repo, [base_layer, loop])
    refused = _cli(iup, "run", "--rm", "--tls-verify=false", "-v", f"v-{repo[-6:]}:/loop/x",
                   ref, "true")
    assert refused.returncode != 0
    assert "too many symbolic links" in refused.stderr, refused.stderr  # the volume's fill
    assert ImageStore(iup.root).containers() == [] and _mounts_under(iup.root) == []


def test_an_upper_is_made_with_the_image_roots_mode_and_kept_after(tmp_path: Path) -> None:
    top, below = tmp_path / "top", tmp_path / "below"
    top.mkdir()
    below.mkdir()
    old = os.umask(0o077)  # the worker's
    try:
        os.chmod(top, 0o700)  # what the umask leaves of a layer that gave no mode
        overlay.make_upper(str(tmp_path / "c1" / "upper"), [str(top), str(below)])
        os.chmod(top, 0o750)
        os.chown(top, 5, 6)
        overlay.make_upper(str(tmp_path / "c2" / "upper"), [str(top), str(below)])
    finally:
        os.umask(old)
    first, second = os.stat(tmp_path / "c1" / "upper"), os.stat(tmp_path / "c2" / "upper")
    assert stat.S_IMODE(first.st_mode) == 0o755
    assert (stat.S_IMODE(second.st_mode), second.st_uid, second.st_gid) == (0o750, 5, 6)
    os.chmod(tmp_path / "c1" / "upper", 0o711)  # the container's own chmod of /
    overlay.make_upper(str(tmp_path / "c1" / "upper"), [str(top)])  # a remount
    assert stat.S_IMODE(os.stat(tmp_path / "c1" / "upper").st_mode) == 0o711
