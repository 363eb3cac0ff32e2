"""A layer is hostile input: whatever its entries do, no host path changes, through
each way a layer enters the store (import, pull, load of either archive kind, the
early unpack during a copy) and through the worker (real files, as root)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from engine.images import build, skopeo
from engine.images.early import EarlyUnpack
from engine.images.layout import Layout
from engine.images.store import ImageStore
from engine.images.unpack import LayerError, unpack_layer
from tests.e2e.conftest import Engine
from tests.helpers import wait_until
from tests.images.registry import Registry, push


@dataclass
class Host:
    """Host paths a layer must not touch: a file, a directory, a file in it."""

    file: str
    dir: str
    inner: str

    def state(self) -> list[tuple[int, int, int, int]]:
        out = []
        for path in (self.file, self.dir, self.inner):
            st = os.lstat(path)
            out.append((st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns))
        return out


@pytest.fixture
def host(tmp_path: object) -> Iterator[Host]:
    base = os.path.join(str(tmp_path), "host")
    os.makedirs(os.path.join(base, "dir"))
    paths = Host(os.path.join(base, "secret"), os.path.join(base, "dir"),
                 os.path.join(base, "dir", "inner"))
    for path in (paths.file, paths.inner):
        with open(path, "w") as f:
            f.write("host\n")
        os.chmod(path, 0o600)
    os.chmod(paths.dir, 0o700)
    yield paths


def _entry(tar: tarfile.TarFile, name: str, kind: bytes, *, mode: int = 0o755,
           linkname: str = "", data: bytes = b"", uid: int = 0) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname, info.mtime, info.uid = kind, mode, linkname, 1, uid
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if data else None)


def _tar(build_entries: Callable[[tarfile.TarFile], None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        build_entries(tar)
    return buf.getvalue()


def swap_layer(host: Host, marker: bytes = b"") -> bytes:
    """The issue's layer: ``x`` a setuid directory of mode 04777, then ``x`` again
    as a symbolic link to a host file (``w`` the same with a host directory): the
    directories' attributes, set at the end, must not follow the links."""
    def entries(tar: tarfile.TarFile) -> None:
        _entry(tar, "x", tarfile.DIRTYPE, mode=0o4777, uid=1234)
        _entry(tar, "w", tarfile.DIRTYPE, mode=0o6777, uid=1234)
        _entry(tar, "x", tarfile.SYMTYPE, linkname=host.file)
        _entry(tar, "w", tarfile.SYMTYPE, linkname=host.dir)
        _entry(tar, "marker", tarfile.REGTYPE, mode=0o644, data=marker or b"m")
    return _tar(entries)


HOSTILE: dict[str, Callable[[Host], Callable[[tarfile.TarFile], None]]] = {
    # a directory replaced by a link: its deferred mode, owner and times stay inside
    "dir-then-link": lambda h: lambda tar: (
        _entry(tar, "x", tarfile.DIRTYPE, mode=0o4777, uid=1234),
        _entry(tar, "x", tarfile.SYMTYPE, linkname=h.file)),
    # the root entry, then the root's own child swapped: nothing but the layer changes
    "root-then-link": lambda h: lambda tar: (
        _entry(tar, ".", tarfile.DIRTYPE, mode=0o4777),
        _entry(tar, "d", tarfile.DIRTYPE, mode=0o4777),
        _entry(tar, "d", tarfile.SYMTYPE, linkname=h.dir)),
    # a file written through a link to a host directory
    "write-through-link": lambda h: lambda tar: (
        _entry(tar, "d", tarfile.SYMTYPE, linkname=h.dir),
        _entry(tar, "d/inner", tarfile.REGTYPE, mode=0o4777, data=b"owned\n")),
    # a relative link climbing out, then a file through it
    "climb-through-link": lambda h: lambda tar: (
        _entry(tar, "up", tarfile.SYMTYPE, linkname="../../../../../../../../" + h.dir),
        _entry(tar, "up/inner", tarfile.REGTYPE, mode=0o4777, data=b"owned\n")),
    # a hard link to a host file, through a link
    "hardlink-through-link": lambda h: lambda tar: (
        _entry(tar, "d", tarfile.SYMTYPE, linkname=h.dir),
        _entry(tar, "h", tarfile.LNKTYPE, linkname="d/inner")),
    # a directory through a link, with attributes of its own
    "dir-through-link": lambda h: lambda tar: (
        _entry(tar, "d", tarfile.SYMTYPE, linkname=os.path.dirname(h.dir)),
        _entry(tar, "d/dir", tarfile.DIRTYPE, mode=0o4777)),
    # a whiteout through a link deletes a host file
    "whiteout-through-link": lambda h: lambda tar: (
        _entry(tar, "d", tarfile.SYMTYPE, linkname=h.dir),
        _entry(tar, "d/.wh.inner", tarfile.REGTYPE)),
    # an opaque marker through a link sets an xattr on a host directory
    "opaque-through-link": lambda h: lambda tar: (
        _entry(tar, "d", tarfile.SYMTYPE, linkname=h.dir),
        _entry(tar, "d/.wh..wh..opq", tarfile.REGTYPE)),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_no_entry_of_a_layer_changes_a_host_path(tmp_path: object, host: Host,
                                                 case: str) -> None:
    before = host.state()
    blob = os.path.join(str(tmp_path), "blob")
    with open(blob, "wb") as f:
        f.write(_tar(HOSTILE[case](host)))
    dest = os.path.join(str(tmp_path), "layer")
    try:
        unpack_layer(blob, dest)
    except LayerError:
        assert not os.path.exists(dest)
    assert host.state() == before
    assert os.path.exists(host.inner)
    with open(host.inner) as f:
        assert f.read() == "host\n"
    with pytest.raises(OSError):
        os.getxattr(host.dir, "trusted.overlay.opaque")


def test_the_swapped_directory_is_a_link_in_the_layer_and_the_host_keeps_its_mode(
        tmp_path: object, host: Host) -> None:
    before = host.state()
    blob = os.path.join(str(tmp_path), "blob")
    with open(blob, "wb") as f:
        f.write(gzip.compress(swap_layer(host)))
    layer = unpack_layer(blob, os.path.join(str(tmp_path), "layer"))
    assert host.state() == before
    assert stat.S_IMODE(os.stat(host.file).st_mode) == 0o600
    assert os.readlink(os.path.join(layer, "x")) == host.file
    assert os.readlink(os.path.join(layer, "w")) == host.dir


def _check_store(store: ImageStore, host: Host, before: list[tuple[int, int, int, int]],
                 ref: str) -> None:
    assert host.state() == before
    image = store.find(ref)
    layer = store.layer_path(image.layers[-1][0])
    assert os.readlink(os.path.join(layer, "x")) == host.file
    assert os.listdir(store.staging_dir) == []
    assert [n for n in os.listdir(store.layers_dir) if ".tmp-" in n] == []


@pytest.mark.parametrize("gzipped", [True, False])
def test_image_import_leaves_the_host_alone(tmp_path: object, host: Host,
                                            gzipped: bool) -> None:
    before = host.state()
    tarball = os.path.join(str(tmp_path), "rootfs.tar")
    data = swap_layer(host)
    with open(tarball, "wb") as f:
        f.write(gzip.compress(data) if gzipped else data)
    store = ImageStore(os.path.join(str(tmp_path), "root"))
    image = store.import_tarball(tarball, "localhost/hostile:import")
    _check_store(store, host, before, "localhost/hostile:import")
    # the blob stored is the tarball as it was, its diff_id the tar's
    store.layout.verify_blob(*image.layers[0][:2])
    assert image.diff_ids[0] == "sha256:" + hashlib.sha256(data).hexdigest()


def test_pull_leaves_the_host_alone(tmp_path: object, host: Host, registry: Registry,
                                    repo: str) -> None:
    before = host.state()
    source = Layout(os.path.join(str(tmp_path), "src")).init()
    build.add_image(source, "img", [gzip.compress(swap_layer(host, repo.encode()))])
    ref = f"{registry.host}/{repo}:v1"
    push(source, "img", ref)
    store = ImageStore(os.path.join(str(tmp_path), "root"))
    store.pull(ref, skopeo.Auth(tls_verify=False))
    _check_store(store, host, before, ref)


@pytest.mark.parametrize("kind", ["docker-archive", "oci-archive"])
def test_load_leaves_the_host_alone(tmp_path: object, host: Host, kind: str) -> None:
    before = host.state()
    source = Layout(os.path.join(str(tmp_path), "src")).init()
    ref = "localhost/hostile:load"
    build.add_image(source, ref, [gzip.compress(swap_layer(host))])
    archive = os.path.join(str(tmp_path), "archive.tar")
    subprocess.run(["skopeo", "copy", "--quiet", f"oci:{source.root}:{ref}",
                    f"{kind}:{archive}:{ref}"], check=True, capture_output=True, timeout=120)
    store = ImageStore(os.path.join(str(tmp_path), "root"))
    store.load(archive)
    _check_store(store, host, before, ref)


def test_the_early_unpack_leaves_the_host_alone(tmp_path: object, host: Host) -> None:
    before = host.state()
    root, layers_dir = os.path.join(str(tmp_path), "stage"), os.path.join(str(tmp_path), "l")
    os.makedirs(layers_dir)
    blob = gzip.compress(swap_layer(host, os.urandom(200_000)))  # more than one read
    with EarlyUnpack(root, layers_dir, 2) as early:
        temp = os.path.join(root, "oci-put-blob1")
        with open(temp, "wb") as f:
            f.write(blob[: len(blob) // 2])
            f.flush()
            wait_until(lambda: [n for n in os.listdir(layers_dir) if "early.tmp-" in n],
                       20, what="the early unpack to start")
            f.write(blob[len(blob) // 2:])
        os.makedirs(os.path.join(root, "blobs", "sha256"), exist_ok=True)
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        os.rename(temp, os.path.join(root, "blobs", "sha256", digest[7:]))
        done = early.finish()
        assert host.state() == before
        ahead = done[digest]
        assert os.readlink(os.path.join(ahead.tmp, "x")) == host.file
    assert host.state() == before


def test_berth_image_import_through_the_worker_leaves_the_host_alone(
        iup: Engine, host: Host) -> None:
    before = host.state()
    tarball = os.path.join(iup.root, "hostile.tar.gz")
    with open(tarball, "wb") as f:
        f.write(gzip.compress(swap_layer(host)))
    done = iup.cli("image", "import", tarball, "localhost/hostile:cli", timeout=120)
    assert done.returncode == 0, done.stderr
    assert host.state() == before
    assert stat.S_IMODE(os.stat(host.file).st_mode) == 0o600


def test_a_layer_nested_too_deep_is_one_sentence_and_nothing_is_kept(tmp_path: object) -> None:
    # 300 levels: refused before its tree grows deeper than rmtree can remove (a
    # deeper one ended in a RecursionError and a directory left behind)
    def entries(tar: tarfile.TarFile) -> None:
        for n in range(1, 301):
            _entry(tar, "/".join(["a"] * n), tarfile.DIRTYPE)
    blob = os.path.join(str(tmp_path), "blob")
    with open(blob, "wb") as f:
        f.write(_tar(entries))
    with pytest.raises(LayerError, match="nests deeper than 256 directories"):
        unpack_layer(blob, os.path.join(str(tmp_path), "layer"), "sha256:" + "0" * 64)
    assert os.listdir(str(tmp_path)) == ["blob"]
