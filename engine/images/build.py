"""Writing images into an OCI layout from layer tarballs: ``berth image import``, and
the images the tests and benchmarks build (one busybox layer, whiteout layers, a
multi-platform index) without any registry or builder.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine.images.layout import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    REF_NAME,
    Layout,
)

__all__ = ["REF_NAME", "LayerBlob", "add_image", "add_image_blobs", "add_index", "tar_of"]


@dataclass(frozen=True, slots=True)
class LayerBlob:
    """A layer blob already in the layout: its descriptor and its diff_id."""

    digest: str
    size: int
    media_type: str
    diff_id: str


def _canonical(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _uncompressed(layer: bytes) -> tuple[bytes, str]:
    """The layer's uncompressed tar and its media type as stored."""
    if layer.startswith(b"\x1f\x8b"):
        return gzip.decompress(layer), OCI_LAYER_GZIP
    return layer, OCI_LAYER


def add_image(layout: Layout, name: str, layers: Sequence[bytes],
              config: Mapping[str, Any] | None = None, *, architecture: str = "amd64",
              os_name: str = "linux", created: str | None = None) -> dict[str, Any]:
    """Write an image of ``layers`` (tar or gzipped tar, bottom first, in memory: for
    tests and small images) into ``layout``, named ``name`` in its index ('' for
    none); return its manifest descriptor."""
    blobs = []
    for layer in layers:
        plain, media = _uncompressed(layer)
        digest, size = layout.put_blob(layer)
        blobs.append(LayerBlob(digest, size, media, "sha256:" + hashlib.sha256(plain).hexdigest()))
    return add_image_blobs(layout, name, blobs, config, architecture=architecture,
                           os_name=os_name, created=created)


def add_image_blobs(layout: Layout, name: str, layers: Sequence[LayerBlob],
                    config: Mapping[str, Any] | None = None, *, architecture: str = "amd64",
                    os_name: str = "linux", created: str | None = None) -> dict[str, Any]:
    """``add_image`` for layer blobs the layout holds already (``berth image import``
    streams its tarball into the layout and unpacks it in the same pass)."""
    layer_descs = [{"mediaType": b.media_type, "digest": b.digest, "size": b.size}
                   for b in layers]
    diff_ids = [b.diff_id for b in layers]
    doc = {
        "architecture": architecture, "os": os_name,
        "created": created or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "config": dict(config or {}),
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "berth image import"} for _ in layers],
    }
    config_digest, config_size = layout.put_blob(_canonical(doc))
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config_digest,
                           "size": config_size},
                "layers": layer_descs}
    digest, size = layout.put_blob(_canonical(manifest))
    descriptor: dict[str, Any] = {"mediaType": OCI_MANIFEST, "digest": digest, "size": size,
                                  "platform": {"architecture": architecture, "os": os_name}}
    if name:
        entries = [e for e in layout.entries()
                   if (e.get("annotations") or {}).get(REF_NAME) != name]
        layout.write_entries([*entries, {**descriptor, "annotations": {REF_NAME: name}}])
    return descriptor


def add_index(layout: Layout, name: str, manifests: Sequence[dict[str, Any]]) -> str:
    """Name a multi-platform index of ``manifests`` (descriptors with a platform)."""
    digest, size = layout.put_blob(_canonical({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                               "manifests": list(manifests)}))
    entries = [e for e in layout.entries()
               if (e.get("annotations") or {}).get(REF_NAME) != name]
    layout.write_entries([*entries, {"mediaType": OCI_INDEX, "digest": digest, "size": size,
                                     "annotations": {REF_NAME: name}}])
    return digest


def tar_of(files: Mapping[str, bytes | None], *, gzipped: bool = True,
           mode: int = 0o644) -> bytes:
    """A layer from a map of path -> content (None: an empty directory)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, content in files.items():
            info = tarfile.TarInfo(path)
            info.mtime = 0
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), mode
                tar.addfile(info, io.BytesIO(content))
    data = buf.getvalue()
    return gzip.compress(data, mtime=0) if gzipped else data
