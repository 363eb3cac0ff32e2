"""Layers unpacked while the copy still writes them are taken only when both their
digests match (real files, a real writer thread, the store's own adopt)."""

from __future__ import annotations

import gzip
import hashlib
import os
import threading
import time
import uuid

import pytest

from engine.images import build, skopeo
from engine.images.early import EarlyUnpack, Unpacked
from engine.images.layout import Layout
from engine.images.store import ImageStore
from tests.images.registry import Registry, layer, push


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _wait_for(condition: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _early_dirs(layers_dir: str) -> list[str]:
    return [n for n in os.listdir(layers_dir) if n.startswith("early.tmp-")]


def test_a_layer_is_unpacked_while_its_blob_is_still_being_written(tmp_path: object) -> None:
    root, layers_dir = os.path.join(str(tmp_path), "stage"), os.path.join(str(tmp_path), "l")
    os.makedirs(os.path.join(root, "blobs", "sha256"))
    os.makedirs(layers_dir)
    payload = os.urandom(256 * 1024)
    blob = layer({"d/": None, "d/data": payload, "gone": b""}, whiteouts=["old"])
    temp = os.path.join(root, "oci-put-blob123")
    with EarlyUnpack(root, layers_dir, 2) as early:
        with open(temp, "wb") as f:
            f.write(blob[: len(blob) // 2])
            f.flush()
            # its unpack starts on the first half: the blob is not complete yet
            _wait_for(lambda: _early_dirs(layers_dir), "the early unpack to start")
            f.write(blob[len(blob) // 2:])
        os.rename(temp, os.path.join(root, "blobs", "sha256", _digest(blob)[7:]))
        done = early.finish()
        ahead = done[_digest(blob)]
        assert ahead.diff_id == _digest(gzip.decompress(blob))
        with open(os.path.join(ahead.tmp, "d", "data"), "rb") as got:
            assert got.read() == payload
        assert os.stat(os.path.join(ahead.tmp, "old")).st_rdev == os.makedev(0, 0)
    assert os.listdir(layers_dir) == []  # not taken by a store: removed


def test_a_broken_blob_is_dropped_and_a_failed_copy_leaves_nothing(tmp_path: object) -> None:
    root, layers_dir = os.path.join(str(tmp_path), "stage"), os.path.join(str(tmp_path), "l")
    os.makedirs(layers_dir)
    broken = b"\x1f\x8b" + os.urandom(4096)
    with EarlyUnpack(root, layers_dir, 2) as early:
        with open(os.path.join(root, "oci-put-blob1"), "wb") as f:
            f.write(broken)
        os.remove(os.path.join(root, "oci-put-blob1"))  # the writer dropped it
        with open(os.path.join(root, "oci-put-blob2"), "wb") as f:
            f.write(b'{"schemaVersion": 2}')  # JSON: not a layer
        os.remove(os.path.join(root, "oci-put-blob2"))
        assert early.finish() == {}
    stuck = threading.Event()
    with pytest.raises(RuntimeError, match="copy failed"), \
            EarlyUnpack(root, layers_dir, 2):
        with open(os.path.join(root, "oci-put-blob3"), "wb") as f:
            f.write(layer({"x": os.urandom(65536)})[:40000])  # never completed
        _wait_for(lambda: _early_dirs(layers_dir), "the early unpack to start")
        stuck.set()
        raise RuntimeError("copy failed")
    assert stuck.is_set() and os.listdir(layers_dir) == []


def _staged(stage: Layout) -> tuple[str, str]:
    stage.init()
    build.add_image(stage, "localhost/early:1", [layer({"b": b"2"})])
    image = stage.images()[0]
    return image.layers[0][0], image.diff_ids[0]


@pytest.mark.parametrize("matches", [True, False])
def test_the_store_takes_an_early_layer_only_when_both_digests_match(
        tmp_path: object, matches: bool) -> None:
    store = ImageStore(str(tmp_path))
    ahead = os.path.join(store.layers_dir, "early.tmp-test")
    os.makedirs(ahead)
    with open(os.path.join(ahead, "marker"), "wb"):
        pass
    with store.staging() as stage:
        digest, diff_id = _staged(stage)
        claimed = diff_id if matches else _digest(b"something else")
        store._adopt(stage, early={digest: Unpacked(ahead, digest, claimed)})
    unpacked = sorted(os.listdir(store.layer_path(digest)))
    assert unpacked == (["marker"] if matches else ["b"])
    assert os.path.isdir(ahead) is not matches  # a mismatch is never renamed in


def test_a_layer_the_store_has_is_not_downloaded_again(tmp_path: object, registry: Registry,
                                                       repo: str) -> None:
    shared = layer({"shared": uuid.uuid4().bytes})
    source = Layout(os.path.join(str(tmp_path), "source")).init()
    build.add_image(source, "one", [shared])
    build.add_image(source, "two", [shared, layer({"own": uuid.uuid4().bytes})])
    for tag in ("one", "two"):
        push(source, tag, f"{registry.host}/{repo}:{tag}")
    store = ImageStore(os.path.join(str(tmp_path), "root"))
    auth = skopeo.Auth(tls_verify=False)
    store.pull(f"{registry.host}/{repo}:one", auth)
    # the registry loses the shared layer: a pull that fetched it again would fail
    hexpart = _digest(shared)[7:]
    os.remove(os.path.join(registry.storage, "docker", "registry", "v2", "blobs", "sha256",
                           hexpart[:2], hexpart, "data"))
    image = store.pull(f"{registry.host}/{repo}:two", auth)
    assert [d for d, _s, _m in image.layers][0] == _digest(shared)
    for digest, size, _media in image.layers:
        store.layout.verify_blob(digest, size)
        assert os.path.isdir(store.layer_path(digest))
    assert os.listdir(store.staging_dir) == []
