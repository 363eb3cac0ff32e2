"""A layer whose compressed digest is right but whose content is not the one its
image's config names (``rootfs.diff_ids``) is refused on every way into the store:
the staged image adopted as it is, an ``oci-archive`` loaded, an image pulled from
a registry (where the early unpacker's digest does not match, so the store unpacks
the layer again itself). Nothing of the image is kept."""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

import pytest

from engine.images import build, skopeo
from engine.images.layout import OCI_LAYER_GZIP, Layout
from engine.images.store import ImageStore
from engine.images.unpack import LayerError
from tests.images.registry import Registry, layer, push


def _tampered(layout: Layout, name: str) -> str:
    """An image of one layer whose config claims another layer's diff_id; the
    layer's blob digest (the manifest's) is its real one. The claimed diff_id."""
    blob = layer({"etc/motd": b"what the layer holds\n"})
    digest, size = layout.put_blob(blob)
    claimed = "sha256:" + hashlib.sha256(b"a different layer").hexdigest()
    build.add_image_blobs(layout, name, [build.LayerBlob(digest, size, OCI_LAYER_GZIP,
                                                         claimed)])
    return claimed


def _nothing_kept(store: ImageStore) -> None:
    assert store.images() == []
    assert os.listdir(store.layers_dir) == []


def test_a_staged_layer_with_a_wrong_diff_id_is_refused(tmp_path: Path) -> None:
    store = ImageStore(str(tmp_path / "root"))
    with store.staging() as stage, pytest.raises(LayerError, match="diff_id"):
        stage.init()
        _tampered(stage, "localhost/tampered:1")
        store._adopt(stage)
    _nothing_kept(store)


def test_a_loaded_archive_with_a_wrong_diff_id_is_refused(tmp_path: Path) -> None:
    source = Layout(str(tmp_path / "source")).init()
    _tampered(source, "localhost/tampered:1")
    archive = tmp_path / "tampered.tar"
    with tarfile.open(archive, "w") as tar:
        for name in sorted(os.listdir(source.root)):
            tar.add(os.path.join(source.root, name), arcname=name)
    store = ImageStore(str(tmp_path / "root"))
    with pytest.raises(LayerError, match="diff_id"):
        store.load(str(archive))
    _nothing_kept(store)


def test_a_pulled_layer_with_a_wrong_diff_id_is_refused(
        tmp_path: Path, registry: Registry, repo: str) -> None:
    source = Layout(str(tmp_path / "source")).init()
    _tampered(source, "tampered")
    push(source, "tampered", f"{registry.host}/{repo}:1")
    store = ImageStore(str(tmp_path / "root"))
    with pytest.raises(LayerError, match="diff_id"):
        store.pull(f"{registry.host}/{repo}:1", skopeo.Auth(tls_verify=False))
    _nothing_kept(store)
