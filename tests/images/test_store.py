"""The store checks what a copy staged before anything enters it (real files)."""

from __future__ import annotations

import os

import pytest

from engine.images import build
from engine.images.layout import DigestMismatch, Layout
from engine.images.store import ImageStore
from tests.images.registry import layer


def _staged(store: ImageStore, stage: Layout) -> dict[str, str]:
    stage.init()
    build.add_image(stage, "localhost/x:1", [layer({"a": b"1"}), layer({"b": b"2"})])
    image = stage.images()[0]
    return {"config": image.config_digest, "layer": image.layers[1][0]}


def _tamper(stage: Layout, digest: str) -> None:
    path = stage.blob_path(digest)
    with open(path, "rb") as f:
        data = bytearray(f.read())
    data[len(data) // 2] ^= 0xFF  # same size, other content
    with open(path, "wb") as f:
        f.write(data)


@pytest.mark.parametrize("which", ["config", "layer"])
def test_a_staged_blob_with_the_wrong_content_is_refused_and_nothing_enters(
        tmp_path: object, which: str) -> None:
    store = ImageStore(str(tmp_path))
    with store.staging() as stage:
        digests = _staged(store, stage)
        _tamper(stage, digests[which])
        with pytest.raises(DigestMismatch, match="does not match its digest"):
            store._adopt(stage)
    assert store.layout.entries() == [] and store.layout.all_blobs() == []
    assert os.listdir(store.layers_dir) == [] and os.listdir(store.staging_dir) == []


def test_a_good_staging_layout_enters_whole(tmp_path: object) -> None:
    store = ImageStore(str(tmp_path))
    with store.staging() as stage:
        _staged(store, stage)
        (image,) = store._adopt(stage)
    assert store.find("localhost/x:1") == image
    assert len(store.layout.all_blobs()) == 4 and len(os.listdir(store.layers_dir)) == 2
    for digest, size, _media in image.layers:
        store.layout.verify_blob(digest, size)
