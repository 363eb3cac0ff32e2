"""The store checks what a copy staged before anything enters it (real files)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest

from engine.errors import InvalidArgument
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


def _rewrite(stage: Layout, digest: str, change: Callable[[dict[str, Any]], None]) -> str:
    """The blob ``digest`` (a JSON document) changed, stored again; its new digest."""
    doc = stage.read_json(digest)
    change(doc)
    return stage.put_blob(json.dumps(doc).encode())[0]


@pytest.mark.parametrize("where, change", [
    ("config", lambda d: d.update(rootfs=["layers"])),
    ("config", lambda d: d.update(rootfs={"diff_ids": 5})),
    ("manifest", lambda d: d["layers"][0].update(size="big")),
    ("manifest", lambda d: d["layers"][0].update(size=[1])),
    ("manifest", lambda d: d["layers"][0].update(size=1e400)),
])
def test_a_malformed_image_document_is_refused_in_one_sentence(
        tmp_path: object, where: str, change: Callable[[dict[str, Any]], None]) -> None:
    # documents a hostile registry or archive can hold that skopeo copies as they are:
    # each ended in a TypeError, ValueError or AttributeError (an internal error)
    store = ImageStore(str(tmp_path))
    with store.staging() as stage:
        _staged(store, stage)
        entry = stage.entries()[0]
        manifest = stage.read_json(entry["digest"])
        if where == "config":
            config = _rewrite(stage, manifest["config"]["digest"], change)
            manifest["config"].update(digest=config, size=os.path.getsize(
                stage.blob_path(config)))
        else:
            change(manifest)
        digest, size = stage.put_blob(json.dumps(manifest).encode())
        stage.write_entries([{**entry, "digest": digest, "size": size}])
        with pytest.raises(InvalidArgument):
            store._adopt(stage)
    assert store.layout.entries() == [] and os.listdir(store.layers_dir) == []
