"""Bounds on what an image may take: layers streamed, never held in memory; a limit per
layer and per image on disk, an inflation ratio cap, a copy stopped when its blobs
grow past them, an early unpack that stops when its copy stops, and a start that
does not wait for a large sweep. Small limits keep each test quick and the disk
untouched (real files, a real registry and skopeo)."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import tarfile
import threading
import time
import tracemalloc
import uuid

import pytest

from berth import config
from engine.errors import InvalidArgument
from engine.images import build, skopeo
from engine.images.early import EarlyUnpack, Growing, _Aborted
from engine.images.layout import Layout
from engine.images.limits import Budget, LimitExceeded, Limits, MiB, parse_size
from engine.images.store import ImageStore
from engine.images.unpack import unpack_layer
from tests.e2e.conftest import Engine
from tests.helpers import wait_until
from tests.images.registry import Registry, push

SMALL = Limits(max_layer=4 * MiB, max_image=6 * MiB, max_ratio=20, ratio_floor=MiB)


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def bomb(megabytes: int) -> bytes:
    """A gzipped layer of one file of zeros: about a thousand times smaller than it
    unpacks to."""
    return gzip.compress(_tar({"zeros": bytes(megabytes * MiB)}), compresslevel=9)


def _nothing_left(store: ImageStore) -> None:
    assert os.listdir(store.staging_dir) == []
    assert os.listdir(store.layers_dir) == []
    assert store.layout.entries() == []


# -- configuration ---------------------------------------------------------------------


def test_limits_come_from_the_environment_and_bad_values_are_one_sentence() -> None:
    assert Limits.from_env({}) == Limits()
    got = Limits.from_env({"BERTH_IMAGE_MAX_LAYER": "512M", "BERTH_IMAGE_MAX_SIZE": "2GiB",
                           "BERTH_IMAGE_MAX_RATIO": "0"})
    assert (got.max_layer, got.max_image, got.max_ratio) == (512 * MiB, 2048 * MiB, 0)
    assert parse_size("1048576", "x") == MiB and parse_size("1k", "x") == 1024
    for bad in ("lots", "0", "-5", "1.5G"):
        with pytest.raises(InvalidArgument, match="BERTH_IMAGE_MAX_LAYER must be a positive"):
            Limits.from_env({"BERTH_IMAGE_MAX_LAYER": bad})
    with pytest.raises(InvalidArgument, match="BERTH_IMAGE_MAX_RATIO must be a whole"):
        Limits.from_env({"BERTH_IMAGE_MAX_RATIO": "ten"})
    assert config.settings('[images]\nmax_layer = "8G"\nmax_size = "32G"\nmax_ratio = 50\n',
                           "berth.toml") == {"BERTH_IMAGE_MAX_LAYER": "8G",
                                             "BERTH_IMAGE_MAX_SIZE": "32G",
                                             "BERTH_IMAGE_MAX_RATIO": "50"}


# -- one layer -------------------------------------------------------------------------


def _unpack(tmp_path: object, data: bytes, limits: Limits) -> str:
    blob = os.path.join(str(tmp_path), "blob")
    with open(blob, "wb") as f:
        f.write(data)
    return unpack_layer(blob, os.path.join(str(tmp_path), "layer"), limits=limits)


def test_a_layer_larger_than_the_limit_is_refused_and_nothing_is_kept(
        tmp_path: object) -> None:
    no_ratio = Limits(max_layer=4 * MiB, max_ratio=0)
    with pytest.raises(LimitExceeded, match="limit per layer.*BERTH_IMAGE_MAX_LAYER"):
        _unpack(tmp_path, bomb(8), no_ratio)
    assert os.listdir(str(tmp_path)) == ["blob"]
    # many small files count as du counts them: whole blocks
    many = _tar({f"f{n}": b"x" for n in range(1100)})  # 1100 blocks: 4.3 MiB
    with pytest.raises(LimitExceeded, match="limit per layer"):
        _unpack(tmp_path, many, no_ratio)
    assert os.listdir(str(tmp_path)) == ["blob"]
    assert os.path.isdir(_unpack(tmp_path, _tar({"a": os.urandom(MiB)}), no_ratio))


def test_a_decompression_bomb_is_refused_by_its_ratio(tmp_path: object) -> None:
    roomy = Limits(max_layer=64 * MiB, max_ratio=20, ratio_floor=MiB)
    with pytest.raises(LimitExceeded, match="more than 20 times.*BERTH_IMAGE_MAX_RATIO"):
        _unpack(tmp_path, bomb(32), roomy)
    assert os.listdir(str(tmp_path)) == ["blob"]


def test_an_endless_tar_stream_is_refused(tmp_path: object) -> None:
    # the tar ends, then zeros go on: the diff_id hashes them all, so they count
    padded = gzip.compress(_tar({"a": b"1"}) + bytes(8 * MiB))
    with pytest.raises(LimitExceeded, match="limit per layer"):
        _unpack(tmp_path, padded, Limits(max_layer=4 * MiB, max_ratio=0))


def test_a_member_claiming_more_than_the_limit_is_refused_before_it_is_written(
        tmp_path: object) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("huge")
        info.size = 1 << 40
        tar.addfile(info)  # the header alone: its data is not there
    with pytest.raises(LimitExceeded, match="limit per layer"):
        _unpack(tmp_path, buf.getvalue(), SMALL)


# -- one image ---------------------------------------------------------------------------


def test_the_layers_of_one_image_are_limited_together(tmp_path: object) -> None:
    store = ImageStore(str(tmp_path), SMALL)
    layers = [gzip.compress(_tar({f"l{n}": os.urandom(3 * MiB)}), compresslevel=1)
              for n in range(3)]  # each under the layer limit, together over the image's
    with store.staging() as stage:
        stage.init()
        build.add_image(stage, "localhost/big:1", layers)
        with pytest.raises(LimitExceeded, match="limit per image.*BERTH_IMAGE_MAX_SIZE"):
            store._adopt(stage)
    _nothing_left(store)


def test_declared_sizes_over_the_limits_are_refused_before_any_unpack() -> None:
    budget = Budget(SMALL)
    with pytest.raises(LimitExceeded, match="limit per layer"):
        budget.check_declared([6 * MiB])
    with pytest.raises(LimitExceeded, match="limit per image"):
        budget.check_declared([3 * MiB, 3 * MiB, 3 * MiB])
    budget.check_declared([3 * MiB, 2 * MiB])
    assert budget.used == 0


# -- import ------------------------------------------------------------------------------


def test_import_of_a_bomb_is_refused_and_leaves_nothing(tmp_path: object) -> None:
    store = ImageStore(os.path.join(str(tmp_path), "root"), SMALL)
    tarball = os.path.join(str(tmp_path), "bomb.tar.gz")
    with open(tarball, "wb") as f:
        f.write(bomb(64))  # 64 KiB of gzip
    with pytest.raises(LimitExceeded):
        store.import_tarball(tarball, "localhost/bomb:1")
    _nothing_left(store)
    assert store.layout.all_blobs() == []


def test_import_streams_the_tarball_and_never_holds_it_in_memory(tmp_path: object) -> None:
    store = ImageStore(os.path.join(str(tmp_path), "root"),
                       Limits(max_layer=64 * MiB, max_image=64 * MiB))
    tarball = os.path.join(str(tmp_path), "rootfs.tar.gz")
    payload = os.urandom(24 * MiB)
    with open(tarball, "wb") as f:
        f.write(gzip.compress(_tar({"big": payload}), compresslevel=1))
    del payload
    tracemalloc.start()
    try:
        image = store.import_tarball(tarball, "localhost/streamed:1")
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB, f"import held {peak / MiB:.1f} MiB at once"
    assert os.path.getsize(os.path.join(store.layer_path(image.layers[0][0]), "big")) == 24 * MiB
    store.layout.verify_blob(*image.layers[0][:2])


def test_import_of_a_tarball_larger_than_a_layer_may_be_is_refused_unread(
        tmp_path: object) -> None:
    store = ImageStore(os.path.join(str(tmp_path), "root"), SMALL)
    tarball = os.path.join(str(tmp_path), "sparse.tar")
    with open(tarball, "wb") as f:
        f.truncate(1 << 30)  # a sparse GiB: never read
    with pytest.raises(LimitExceeded, match="limit per layer"):
        store.import_tarball(tarball, "localhost/huge:1")
    _nothing_left(store)


@pytest.mark.parametrize("kind", ["directory", "fifo", "device", "missing"])
def test_import_of_what_is_not_a_file_is_refused_without_blocking(tmp_path: object,
                                                                  kind: str) -> None:
    path = {"directory": str(tmp_path), "device": "/dev/zero",
            "fifo": os.path.join(str(tmp_path), "fifo"),
            "missing": os.path.join(str(tmp_path), "missing")}[kind]
    if kind == "fifo":
        os.mkfifo(path)  # no writer: opening it for reading must not wait for one
    store = ImageStore(os.path.join(str(tmp_path), "root"), SMALL)
    with pytest.raises(InvalidArgument, match="is not a file"):
        store.import_tarball(path, "localhost/nothing:1")
    _nothing_left(store)


# -- pulls and the early unpack ---------------------------------------------------------


@pytest.mark.parametrize("which", ["random", "bomb"])
def test_a_pull_over_the_limits_is_refused_and_leaves_nothing(
        tmp_path: object, registry: Registry, repo: str, which: str) -> None:
    blob = (gzip.compress(_tar({"r": os.urandom(6 * MiB)}), compresslevel=1)
            if which == "random" else bomb(16))
    source = Layout(os.path.join(str(tmp_path), "src")).init()
    build.add_image(source, "img", [blob])
    ref = f"{registry.host}/{repo}:v1"
    push(source, "img", ref)
    store = ImageStore(os.path.join(str(tmp_path), "root"), SMALL)
    with pytest.raises(LimitExceeded, match="BERTH_IMAGE_MAX_(LAYER|RATIO)"):
        store.pull(ref, skopeo.Auth(tls_verify=False))
    _nothing_left(store)


def _endless_writer(path: str, stop: threading.Event) -> threading.Thread:
    def write() -> None:
        with open(path, "wb") as f:
            f.write(b"\x1f\x8b" + os.urandom(1022))
            while not stop.is_set():
                f.write(os.urandom(64 * 1024))
                f.flush()
                time.sleep(0.001)
    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def test_a_blob_that_grows_past_the_limit_stops_the_copy(tmp_path: object) -> None:
    root, layers_dir = os.path.join(str(tmp_path), "stage"), os.path.join(str(tmp_path), "l")
    os.makedirs(layers_dir)
    stop = threading.Event()
    limits = Limits(max_layer=2 * MiB, max_image=4 * MiB)
    try:
        with pytest.raises(LimitExceeded, match="grew past.*the copy was stopped"), \
                EarlyUnpack(root, layers_dir, 2, limits) as early:
            _endless_writer(os.path.join(root, "oci-put-blob1"), stop)

            def stopped() -> bool:
                try:
                    early.check()  # what skopeo.copy calls as its guard
                except LimitExceeded:
                    return True
                return False
            wait_until(stopped, 30, what="the guard to end the copy")
            early.check()
    finally:
        stop.set()
    assert os.listdir(layers_dir) == []
    assert os.path.getsize(os.path.join(root, "oci-put-blob1")) < 64 * MiB


def test_a_read_of_a_growing_blob_gives_up_as_soon_as_the_copy_fails(
        tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "oci-put-blob1")
    with open(path, "wb") as f:
        f.write(os.urandom(4 * MiB))  # written already: still not read once aborted
    copied, abort = threading.Event(), threading.Event()
    blob = Growing(path, copied, abort)
    try:
        assert len(blob.read(1024)) == 1024
        abort.set()
        with pytest.raises(_Aborted):
            blob.read(1024)
    finally:
        blob.close()


def test_a_failed_copy_abandons_a_large_early_unpack_and_removes_it(
        tmp_path: object) -> None:
    root, layers_dir = os.path.join(str(tmp_path), "stage"), os.path.join(str(tmp_path), "l")
    os.makedirs(layers_dir)
    # a file of 512 MiB of zeros in half a MiB of gzip (one tar header, then gzip
    # members of zeros: one stream), written but never completed: reading all of what
    # is there would write it all out, giving up writes no more
    info = tarfile.TarInfo("z")
    info.size = 1 << 40
    zeros = gzip.compress(bytes(64 * MiB), compresslevel=9)
    limits = Limits(max_layer=1 << 41, max_image=1 << 41, max_ratio=0)
    with pytest.raises(RuntimeError, match="copy failed"), \
            EarlyUnpack(root, layers_dir, 2, limits):
        with open(os.path.join(root, "oci-put-blob1"), "wb") as f:
            f.write(gzip.compress(info.tobuf(format=tarfile.PAX_FORMAT)) + zeros * 8)
        wait_until(lambda: [n for n in os.listdir(layers_dir) if "early.tmp-" in n], 20,
                   what="the early unpack to start")
        started = time.monotonic()
        raise RuntimeError("copy failed")
    assert time.monotonic() - started < 10
    assert os.listdir(layers_dir) == []


def test_a_copys_guard_ends_skopeo_and_its_error_is_raised() -> None:
    proc = subprocess.Popen(["sleep", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    calls = []

    def guard() -> None:
        calls.append(1)
        if len(calls) == 3:
            raise LimitExceeded("too big")

    started = time.monotonic()
    with pytest.raises(LimitExceeded, match="too big"):
        skopeo._wait(proc, time.monotonic() + 60, guard)
    assert proc.returncode is not None and time.monotonic() - started < 10


# -- the sweep at start ------------------------------------------------------------------


def test_the_sweep_at_start_moves_leftovers_aside_and_removes_them_in_the_background(
        tmp_path: object) -> None:
    store = ImageStore(str(tmp_path), SMALL)
    half = os.path.join(store.layers_dir, f"early.tmp-{uuid.uuid4().hex[:12]}")
    for n in range(50):
        os.makedirs(os.path.join(half, f"d{n}"))
    os.makedirs(os.path.join(store.staging_dir, "copy", "blobs"))
    store.clear_staging()
    assert os.listdir(store.layers_dir) == [] and os.listdir(store.staging_dir) == []
    wait_until(lambda: os.listdir(store.trash_dir) == [], 20, what="the trash to empty")


def test_collect_leaves_an_unpack_under_way_alone(tmp_path: object) -> None:
    store = ImageStore(str(tmp_path), SMALL)
    going = os.path.join(store.layers_dir, f"early.tmp-{uuid.uuid4().hex[:12]}")
    os.makedirs(going)
    orphan = os.path.join(store.layers_dir, "ab" * 32)
    os.makedirs(orphan)
    assert store.collect() == (0, 1)
    assert os.path.isdir(going) and not os.path.exists(orphan)


def test_the_background_removal_takes_a_tree_deeper_than_python_recurses_and_the_others(
        tmp_path: object) -> None:
    store = ImageStore(str(tmp_path), SMALL)
    deep = os.path.join(store.staging_dir, "deep")  # swept first
    os.makedirs(deep)
    fd = os.open(deep, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(1200):  # deeper than shutil.rmtree can recurse
        os.mkdir("d", dir_fd=fd)
        step = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = step
    os.close(fd)
    other = os.path.join(store.layers_dir, f"early.tmp-{uuid.uuid4().hex[:12]}")
    os.makedirs(other)
    try:
        store.clear_staging()
        wait_until(lambda: os.listdir(store.trash_dir) == [], 20,
                   what="both leftovers to be removed (rm walks the deep one)")
    finally:  # rm does not recurse on the stack: pytest's own clean-up would
        subprocess.run(["rm", "-rf", store.trash_dir, deep], check=True)


def test_a_containers_deep_tree_goes_with_its_overlay(tmp_path: object) -> None:
    # the container makes what it likes in its upper directory: 3000 levels ended the
    # background removal in a RecursionError, and its files stayed after berth rm
    store = ImageStore(str(tmp_path), SMALL)
    upper = os.path.join(store.container_dir("c1"), "upper")
    os.makedirs(upper)
    fd = os.open(upper, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(3000):
        os.mkdir("d", dir_fd=fd)
        step = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = step
    os.close(fd)
    try:
        assert store.release("c1")
        wait_until(lambda: os.listdir(store.overlay_dir) == [], 20,
                   what="the container's overlay to be removed")
    finally:
        subprocess.run(["rm", "-rf", store.overlay_dir], check=True)


def test_the_worker_takes_its_limits_from_the_environment_and_refuses_in_one_sentence(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BERTH_IMAGE_MAX_LAYER", "4M")
    monkeypatch.setenv("BERTH_IMAGE_MAX_RATIO", "0")
    engine.start_worker_process()
    tarball = os.path.join(engine.root, "bomb.tar.gz")
    with open(tarball, "wb") as f:
        f.write(bomb(64))
    done = engine.cli("image", "import", tarball, "localhost/bomb:cli", timeout=120)
    assert done.returncode != 0
    assert "4 MiB unpacked, this node's limit per layer (BERTH_IMAGE_MAX_LAYER)" in done.stderr
    assert "Traceback" not in done.stderr
    listed = engine.cli("images", "--format", "json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == []


def _huge_header_tar(path: str, kind: str, size: int) -> None:
    """A tar whose first entry has an extended header (pax, a GNU long name, or many
    global pax headers) of ``size`` bytes, written as it goes."""
    with open(path, "wb") as f:
        fmt = tarfile.GNU_FORMAT if kind == "longname" else tarfile.PAX_FORMAT
        with tarfile.open(fileobj=f, mode="w", format=fmt) as tar:
            info = tarfile.TarInfo("a" * size if kind == "longname" else "a")
            if kind == "pax":
                info.pax_headers = {"comment": "x" * size}
            if kind == "global":
                for n in range(size // 4096):  # one entry after each global header
                    f.write(tarfile.TarInfo._create_pax_generic_header(
                        {f"k{n}": "x" * 4000}, tarfile.XGLTYPE, "utf-8"))
                    tar.offset = f.tell()
                    tar.addfile(tarfile.TarInfo(f"f{n}"))
            tar.addfile(info)


@pytest.mark.parametrize("kind", ["pax", "longname", "global"])
def test_a_huge_extended_header_is_refused_unread(tmp_path: object, kind: str) -> None:
    # tarfile reads a pax or long-name header whole (and keeps global ones): a layer
    # declaring one of gigabytes was held in the worker's memory, under any limit
    blob = os.path.join(str(tmp_path), "blob")
    _huge_header_tar(blob, kind, 8 * MiB)
    _refused_unread(str(tmp_path), blob, LimitExceeded, "extended headers of")


def test_a_long_chain_of_extended_headers_is_one_sentence(tmp_path: object) -> None:
    blob = os.path.join(str(tmp_path), "blob")
    with open(blob, "wb") as f:
        for _ in range(2000):  # tarfile reads each one by recursing
            f.write(tarfile.TarInfo._create_pax_generic_header({"comment": "x"},
                                                               tarfile.XHDTYPE, "utf-8"))
        f.write(tarfile.TarInfo("a").tobuf(tarfile.USTAR_FORMAT) + b"\0" * 1024)
    with pytest.raises(LimitExceeded, match="more than 8 extended headers in a row"):
        unpack_layer(blob, os.path.join(str(tmp_path), "layer"), limits=Limits())
    assert os.listdir(str(tmp_path)) == ["blob"]


def test_image_load_refuses_a_huge_extended_header_unread(tmp_path: object) -> None:
    archive = os.path.join(str(tmp_path), "archive.tar")
    _huge_header_tar(archive, "pax", 8 * MiB)
    tracemalloc.start()
    try:
        with pytest.raises(LimitExceeded, match="extended headers of"):
            ImageStore(os.path.join(str(tmp_path), "store")).load(archive)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * MiB


@pytest.mark.parametrize("fmt", ["gnu", "pax --sparse-version=0.0", "pax --sparse-version=0.1",
                                 "pax --sparse-version=1.0"])
def test_a_sparse_entry_is_refused_in_one_sentence(tmp_path: object, fmt: str) -> None:
    # GNU tar's sparse files, each format: a streamed layer could not be unpacked with
    # one (tarfile seeks back), and OCI layers should not have them
    sparse = os.path.join(str(tmp_path), "sp")
    with open(sparse, "wb") as f:
        f.truncate(1 << 20)
        f.seek(4096)
        f.write(b"x")
    blob = os.path.join(str(tmp_path), "blob")
    subprocess.run(["tar", "-S", f"--format={fmt.split()[0]}", *fmt.split()[1:], "-cf", blob,
                    "-C", str(tmp_path), "sp"], check=True, timeout=30)
    with pytest.raises(InvalidArgument, match="'sp' is a sparse file, which berth does not"):
        unpack_layer(blob, os.path.join(str(tmp_path), "layer"), limits=Limits())
    assert sorted(os.listdir(str(tmp_path))) == ["blob", "sp"]


def test_a_huge_sparse_map_is_refused_unread(tmp_path: object) -> None:
    # a pax sparse map (format 1.0) is in the entry's data, held as Python numbers: a
    # few megabytes of "0\n1\n" took hundreds of megabytes of the worker's memory
    pairs = 500_000
    data = f"{pairs}\n".encode() + b"0\n1\n" * pairs
    data += b"\0" * (-len(data) % 512)
    blob = os.path.join(str(tmp_path), "blob")
    with open(blob, "wb") as f:
        f.write(tarfile.TarInfo._create_pax_generic_header(
            {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "s",
             "GNU.sparse.realsize": "1"}, tarfile.XHDTYPE, "utf-8"))
        info = tarfile.TarInfo("GNUSparseFile.0/s")
        info.size = len(data)
        f.write(info.tobuf(tarfile.USTAR_FORMAT) + data + b"\0" * 1024)
    _refused_unread(str(tmp_path), blob, InvalidArgument, "is a sparse file")


def _refused_unread(tmp: str, blob: str, error: type[Exception], match: str) -> None:
    """Unpacking ``blob`` is refused with ``error`` while holding under 4 MiB (what it
    refuses is never read into memory) and leaves nothing beside the blob."""
    tracemalloc.start()
    try:
        with pytest.raises(error, match=match):
            unpack_layer(blob, os.path.join(tmp, "layer"), limits=Limits())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * MiB
    assert os.listdir(tmp) == ["blob"]
