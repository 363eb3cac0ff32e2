"""berth's image store on disk: an OCI image layout (``oci-layout``, ``index.json``,
``blobs/sha256/...``), as the image-spec describes it and skopeo writes it.

Every blob is read through ``read_blob``/``verify_blob``, which check its content
against its digest: a file changed on disk is an error, never an image. ``index.json``
is replaced atomically under the store's lock, so a reader sees the old or the new
index, and each entry names its image with the ``org.opencontainers.image.ref.name``
annotation (the full reference, as podman writes it).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from engine.errors import InvalidArgument, NotFound
from engine.images.reference import DIGEST_RE

REF_NAME = "org.opencontainers.image.ref.name"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
MAX_JSON_BLOB = 4 * 1024 * 1024
"""Manifests and configs are small; a larger one is refused rather than read."""
MAX_JSON_DEPTH = 64
"""Image documents nest a few levels; deeper is refused before it is parsed (Python's
parser recurses: a deep one would end in a RecursionError, not a sentence)."""
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_BRACKET_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


class DigestMismatch(InvalidArgument):
    """A blob whose content does not hash to its name."""


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def json_depth(data: bytes) -> int:
    """How deep the arrays and objects of a JSON text nest, counted without
    recursion (brackets inside strings do not count)."""
    brackets = _JSON_STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    return max(itertools.accumulate(map(_BRACKET_STEP.__getitem__, brackets)), default=0)


def loads_json(data: bytes, what: str) -> Any:
    """A JSON document from untrusted bytes: InvalidArgument with one sentence for
    one nested too deep or not JSON at all (never a RecursionError)."""
    if json_depth(data) > MAX_JSON_DEPTH:
        raise InvalidArgument(f"{what} nests deeper than {MAX_JSON_DEPTH} levels: refused "
                              "as no image document does")
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        raise InvalidArgument(f"{what} is not valid JSON") from None


def check_digest(digest: object) -> str:
    if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
        raise InvalidArgument(f"invalid digest {digest!r}: berth stores sha256 digests only")
    return digest


@dataclass(frozen=True, slots=True)
class Image:
    """One image of the layout: its manifest, its config and its layers, verified."""

    name: str
    """The reference it is stored under ('' for an untagged image)."""
    manifest_digest: str
    manifest_size: int
    config_digest: str
    layers: tuple[tuple[str, int, str], ...]
    """(digest, size, media type) of each layer, bottom first."""
    diff_ids: tuple[str, ...]
    config: dict[str, Any]
    """The image configuration document (``config``, ``rootfs``, ``created``...)."""

    @property
    def id(self) -> str:
        return self.config_digest

    @property
    def size(self) -> int:
        return sum(size for _d, size, _t in self.layers)

    @property
    def created(self) -> str:
        return str(self.config.get("created") or "")

    @property
    def run_config(self) -> dict[str, Any]:
        value = self.config.get("config") or {}
        return value if isinstance(value, dict) else {}

    def descriptor(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"mediaType": OCI_MANIFEST, "digest": self.manifest_digest,
                                 "size": self.manifest_size}
        if self.name:
            entry["annotations"] = {REF_NAME: self.name}
        return entry


class Layout:
    """An OCI image layout directory."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.blobs = os.path.join(root, "blobs", "sha256")

    def init(self) -> Layout:
        os.makedirs(self.blobs, mode=0o700, exist_ok=True)
        marker = os.path.join(self.root, "oci-layout")
        if not os.path.exists(marker):
            _write_json(marker, {"imageLayoutVersion": "1.0.0"})
        if not os.path.exists(self.index_path):
            _write_json(self.index_path, {"schemaVersion": 2, "manifests": []})
        return self

    @property
    def index_path(self) -> str:
        return os.path.join(self.root, "index.json")

    @contextlib.contextmanager
    def lock(self, exclusive: bool = True) -> Iterator[None]:
        """The store's lock: exclusive for a change of the index or the blobs, shared
        for a copy that reads them (push, save)."""
        fd = os.open(os.path.join(self.root, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                     0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def blob_path(self, digest: str) -> str:
        return os.path.join(self.blobs, check_digest(digest).split(":", 1)[1])

    def has_blob(self, digest: str) -> bool:
        return os.path.isfile(self.blob_path(digest))

    def verify_blob(self, digest: str, size: int | None = None) -> str:
        """The blob's path once its content matched ``digest`` (and ``size``)."""
        path = self.blob_path(digest)
        try:
            actual = os.path.getsize(path)
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is missing from the image store") from None
        if size is not None and actual != size:
            raise DigestMismatch(f"blob {digest} has {actual} bytes, its descriptor says {size}")
        got = sha256_file(path)
        if got != digest:
            raise DigestMismatch(f"blob {digest} does not match its digest (its content "
                                 f"hashes to {got})")
        return path

    def read_json(self, digest: str, size: int | None = None) -> dict[str, Any]:
        path = self.blob_path(digest)
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_JSON_BLOB + 1)
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is missing from the image store") from None
        if len(data) > MAX_JSON_BLOB:
            raise InvalidArgument(f"blob {digest} is too large for a manifest or config")
        got = "sha256:" + hashlib.sha256(data).hexdigest()
        if got != digest or (size is not None and len(data) != size):
            raise DigestMismatch(f"blob {digest} does not match its digest (its content "
                                 f"hashes to {got})")
        doc = loads_json(data, f"blob {digest}")
        if not isinstance(doc, dict):
            raise InvalidArgument(f"blob {digest} is not a JSON object")
        return doc

    def put_blob(self, data: bytes) -> tuple[str, int]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = self.blob_path(digest)
        if not os.path.exists(path):
            tmp = f"{path}.tmp-{os.getpid()}"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        return digest, len(data)

    def entries(self) -> list[dict[str, Any]]:
        try:
            with open(self.index_path, "rb") as f:
                doc = loads_json(f.read(), self.index_path)
        except FileNotFoundError:
            return []
        manifests = doc.get("manifests") if isinstance(doc, dict) else None
        if not isinstance(manifests, list):
            raise InvalidArgument(f"{self.index_path} has no manifests list")
        return [m for m in manifests if isinstance(m, dict)]

    def write_entries(self, entries: list[dict[str, Any]]) -> None:
        _write_json(self.index_path, {"schemaVersion": 2, "mediaType": OCI_INDEX,
                                      "manifests": entries})

    def image(self, entry: dict[str, Any], *, verify_layers: bool = False) -> Image:
        """The image an index entry names, its manifest and config checked against their
        digests (and its layers too with ``verify_layers``)."""
        digest = check_digest(entry.get("digest"))
        media = entry.get("mediaType", OCI_MANIFEST)
        if media not in MANIFEST_TYPES:
            raise InvalidArgument(f"index entry {digest} is a {media}, not an image manifest "
                                  "(a multi-platform index should have been resolved)")
        size = entry.get("size")
        manifest = self.read_json(digest, size if isinstance(size, int) else None)
        config_desc = manifest.get("config")
        layers = manifest.get("layers")
        if not isinstance(config_desc, dict) or not isinstance(layers, list):
            raise InvalidArgument(f"manifest {digest} has no config or no layers")
        config_digest = check_digest(config_desc.get("digest"))
        config = self.read_json(config_digest, config_desc.get("size"))
        rootfs = config.get("rootfs") or {}
        found = rootfs.get("diff_ids") or [] if isinstance(rootfs, dict) else None
        if not isinstance(found, list):
            raise InvalidArgument(f"image {config_digest} has no list of diff_ids")
        diff_ids = tuple(check_digest(d) for d in found)
        described: list[tuple[str, int, str]] = []
        for layer in layers:
            layer_size = layer.get("size", 0) if isinstance(layer, dict) else None
            if type(layer_size) is not int or layer_size < 0:  # not a bool, nor 1e400
                raise InvalidArgument(f"manifest {digest} has a malformed layer")
            described.append((check_digest(layer.get("digest")), layer_size,
                              str(layer.get("mediaType", OCI_LAYER_GZIP))))
        if len(diff_ids) != len(described):
            raise InvalidArgument(f"image {config_digest} lists {len(diff_ids)} diff_ids for "
                                  f"{len(described)} layers")
        if verify_layers:
            for layer_digest, layer_size, _media in described:
                self.verify_blob(layer_digest, layer_size)
        annotations = entry.get("annotations") or {}
        return Image(name=str(annotations.get(REF_NAME, "")), manifest_digest=digest,
                     manifest_size=int(size) if isinstance(size, int) else 0,
                     config_digest=config_digest, layers=tuple(described), diff_ids=diff_ids,
                     config=config)

    def images(self, *, verify_layers: bool = False) -> list[Image]:
        return [self.image(e, verify_layers=verify_layers) for e in self.entries()]

    def referenced_blobs(self, images: list[Image]) -> set[str]:
        out: set[str] = set()
        for image in images:
            out.add(image.manifest_digest)
            out.add(image.config_digest)
            out.update(d for d, _s, _t in image.layers)
        return out

    def all_blobs(self) -> list[str]:
        try:
            names = os.listdir(self.blobs)
        except FileNotFoundError:
            return []
        return [f"sha256:{n}" for n in names if len(n) == 64]


def _write_json(path: str, doc: dict[str, Any]) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(doc, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
