"""The node's image store: the OCI layout, its unpacked layers and the containers'
overlay root filesystems.

Everything that enters the store comes in through a private staging layout (skopeo
copies into it, or ``build`` writes it), is checked there blob by blob against the
digests, its layers unpacked, and only then are its blobs moved into the store and
its name written into ``index.json``: a copy that fails, or a blob with the wrong
content, leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import queue
import re
import shutil
import tarfile
import threading
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO

from engine.errors import AlreadyExists, InvalidArgument, NotFound
from engine.faults import crash_point
from engine.images import build
from engine.images.early import EarlyUnpack, Unpacked
from engine.images.layout import Image, Layout
from engine.images.reference import looks_like_id, parse_reference
from engine.images.unpack import unpack_layer
from engine.runtime import overlay, skopeo

log = logging.getLogger("berth.images")

ARCHIVE_FORMATS = ("docker-archive", "oci-archive")
UNPACKERS = 4
"""Layers unpacked at once (decompression and hashing run outside the GIL)."""
_HEX64 = re.compile(r"[0-9a-f]{64}")
REMOVED = ".removed-"
"""Prefix of an unmounted overlay directory waiting for its removal."""


@dataclass(frozen=True, slots=True)
class Rootfs:
    """A container's overlay: where it is mounted and the layers under it."""

    merged: str
    layers: tuple[str, ...]


class ImageStore:
    """Images of one node under ``root`` (BERTH_ROOT): ``images/`` (the OCI layout),
    ``layers/`` (one directory per layer), ``overlay/`` (one per container)."""

    def __init__(self, root: str) -> None:
        self.layout = Layout(os.path.join(root, "images")).init()
        self.layers_dir = os.path.join(root, "layers")
        self.overlay_dir = os.path.join(root, "overlay")
        self.staging_dir = os.path.join(root, "images.tmp")
        for path in (self.layers_dir, self.overlay_dir, self.staging_dir):
            os.makedirs(path, mode=0o700, exist_ok=True)
        self._doomed: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._reaper: threading.Thread | None = None
        self._reaper_lock = threading.Lock()

    # -- reading -------------------------------------------------------------------

    def images(self) -> list[Image]:
        with self.layout.lock(exclusive=False):
            return self.layout.images()

    def find(self, ref: str) -> Image:
        """The image ``ref`` names: a reference (short or full), an id or an id prefix."""
        images = self.images()
        if not isinstance(ref, str) or not ref:
            raise InvalidArgument("give an image name or id")
        if looks_like_id(ref):
            hexpart = ref.removeprefix("sha256:")
            found = {i.id: i for i in images if i.id.removeprefix("sha256:").startswith(hexpart)}
            if len(found) == 1:
                return next(iter(found.values()))
            if len(found) > 1:
                raise InvalidArgument(f"image id prefix {ref!r} is ambiguous")
        name = str(parse_reference(ref))
        for image in images:
            if image.name == name:
                return image
        raise NotFound(f"image {ref!r} is not in this node's store: pull it first")

    def present(self, ref: str) -> Image | None:
        try:
            return self.find(ref)
        except NotFound:
            return None

    # -- entering the store ----------------------------------------------------------

    def clear_staging(self) -> None:
        """Remove what copies and unpacks cut short by a dead worker left (at start)."""
        for name in os.listdir(self.staging_dir):
            shutil.rmtree(os.path.join(self.staging_dir, name), ignore_errors=True)
        for name in os.listdir(self.layers_dir):
            if ".tmp-" in name:
                shutil.rmtree(os.path.join(self.layers_dir, name), ignore_errors=True)
        for name in os.listdir(self.overlay_dir):
            if name.startswith(REMOVED):
                shutil.rmtree(os.path.join(self.overlay_dir, name), ignore_errors=True)

    @contextlib.contextmanager
    def staging(self) -> Iterator[Layout]:
        path = os.path.join(self.staging_dir, uuid.uuid4().hex)
        try:
            yield Layout(path)
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def pull(self, ref: str, auth: skopeo.Auth | None = None) -> Image:
        reference = parse_reference(ref)
        with self.staging() as stage, self._early(stage) as early:
            skopeo.copy(f"docker://{reference}", f"oci:{stage.root}:{reference}",
                        src=auth, registry=reference.domain)
            return self._adopt(stage, only=str(reference), early=early.finish())[0]

    def load(self, path: str) -> list[Image]:
        """Images from a ``docker-archive`` or ``oci-archive`` file (as ``podman save``
        writes them), under the names the archive gives them."""
        kind, names = archive_kind(path)
        with self.staging() as stage, self._early(stage) as early:
            if not names:
                names = [""]
            for name in names:
                dest = str(parse_reference(name)) if name else ""
                source = f"{kind}:{path}" + (f":{name}" if name else "")
                skopeo.copy(source, f"oci:{stage.root}:{dest}")
            return self._adopt(stage, early=early.finish())

    def import_tarball(self, path: str, ref: str) -> Image:
        """An image of one layer, a root filesystem tarball, named ``ref``."""
        reference = str(parse_reference(ref))
        if not os.path.isfile(path):
            raise InvalidArgument(f"{path!r} is not a file")
        with self.staging() as stage:
            stage.init()
            with open(path, "rb") as f:
                build.add_image(stage, reference, [f.read()])
            return self._adopt(stage)[0]

    def _early(self, stage: Layout) -> EarlyUnpack:
        """Layers of a copy into ``stage`` unpacked while the copy goes on; the blobs
        of the layers the store has unpacked already are linked into ``stage`` first:
        skopeo takes a blob its destination holds as copied, so they are neither
        downloaded nor unpacked again (they were verified when they entered)."""
        stage.init()
        with self.layout.lock(exclusive=False):
            for name in os.listdir(self.layers_dir):
                digest = f"sha256:{name}"
                if not _HEX64.fullmatch(name) or not self.layout.has_blob(digest):
                    continue
                with contextlib.suppress(FileNotFoundError, FileExistsError):
                    os.link(self.layout.blob_path(digest), stage.blob_path(digest))
        return EarlyUnpack(stage.root, self.layers_dir, UNPACKERS)

    def _adopt(self, stage: Layout, only: str | None = None,
               early: dict[str, Unpacked] | None = None) -> list[Image]:
        """Check a staging layout, unpack its layers (taking those ``early`` unpacked
        during the copy once their digests match), move its blobs in, name its images."""
        early = early or {}
        images = stage.images()  # manifests and configs checked against their digests
        if only is not None:
            images = [i for i in images if i.name == only] or images[:1]
        if not images:
            raise InvalidArgument("the copy produced no image")
        layers = {(digest, size, diff_id) for image in images
                  for (digest, size, _m), diff_id in zip(image.layers, image.diff_ids,
                                                         strict=True)}
        fresh = [self.layer_path(d) for d, _s, _i in layers
                 if not os.path.isdir(self.layer_path(d))]
        try:
            with ThreadPoolExecutor(max_workers=UNPACKERS) as pool:
                # each layer checked against its digest and diff_id while it is unpacked
                list(pool.map(lambda layer: self._check_layer(stage, *layer, early=early), layers))
        except BaseException:
            for path in fresh:  # the image did not enter: neither do its other layers
                shutil.rmtree(path, ignore_errors=True)
            raise
        crash_point("image.adopt.unpacked")  # layers in, no blob moved, no name given
        with self.layout.lock():
            for digest in stage.referenced_blobs(images):
                target = self.layout.blob_path(digest)
                if not os.path.exists(target):
                    os.replace(stage.blob_path(digest), target)
            entries = self.layout.entries()
            names = {i.name for i in images if i.name}
            kept = [e for e in entries
                    if (e.get("annotations") or {}).get(build.REF_NAME) not in names]
            kept_digests = {e.get("digest") for e in kept}
            kept += [i.descriptor() for i in images
                     if i.name or i.manifest_digest not in kept_digests]
            self.layout.write_entries(kept)
        return images

    def layer_path(self, digest: str) -> str:
        return os.path.join(self.layers_dir, digest.removeprefix("sha256:"))

    def _ensure_layer(self, source: Layout, digest: str, diff_id: str) -> str:
        dest = self.layer_path(digest)
        if not os.path.isdir(dest):
            unpack_layer(source.blob_path(digest), dest, diff_id, digest)
        return dest

    def _check_layer(self, stage: Layout, digest: str, size: int, diff_id: str,
                     *, early: dict[str, Unpacked]) -> None:
        """A staged layer: unpacked (and so checked) unless the store has it already;
        a blob the store lacks for an unpacked layer is checked on its own. A layer
        unpacked during the copy is taken only if both its digests match."""
        dest = self.layer_path(digest)
        if os.path.isdir(dest):
            if not self.layout.has_blob(digest):
                stage.verify_blob(digest, size)
            return
        if os.path.getsize(stage.blob_path(digest)) != size:
            stage.verify_blob(digest, size)  # raises, with the sizes
        ahead = early.get(digest)
        if ahead is not None and ahead.digest == digest and ahead.diff_id == diff_id:
            try:
                os.rename(ahead.tmp, dest)
                return
            except OSError as exc:  # unpacked meanwhile by another caller: same content
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not os.path.isdir(dest):
                    raise
                return
        self._ensure_layer(stage, digest, diff_id)

    # -- leaving the store -----------------------------------------------------------

    def save(self, ref: str, path: str, fmt: str = "docker-archive") -> Image:
        if fmt not in ARCHIVE_FORMATS:
            raise InvalidArgument(f"unknown archive format {fmt!r}: use "
                                  f"{' or '.join(ARCHIVE_FORMATS)}")
        image = self.find(ref)
        if not os.path.isabs(path) or not os.path.isdir(os.path.dirname(path)):
            raise InvalidArgument(f"output {path!r} must be an absolute path in an existing "
                                  "directory")
        if os.path.exists(path):
            raise AlreadyExists(f"{path} exists: berth does not overwrite it")
        name = image.name or ""
        with self.layout.lock(exclusive=False):
            source = f"oci:{self.layout.root}:{name}" if name else \
                f"oci:{self.layout.root}@{image.manifest_digest}"
            dest = f"{fmt}:{path}" + (f":{name}" if name else "")
            skopeo.copy(source, dest)
        return image

    def push(self, ref: str, dest: str, auth: skopeo.Auth | None = None) -> Image:
        image = self.find(ref)
        target = parse_reference(dest)
        if not image.name:
            raise InvalidArgument("an untagged image cannot be pushed: tag it first")
        with self.layout.lock(exclusive=False):
            skopeo.copy(f"oci:{self.layout.root}:{image.name}", f"docker://{target}",
                        dst=auth, registry=target.domain)
        return image

    def tag(self, ref: str, new: str) -> Image:
        image = self.find(ref)
        name = str(parse_reference(new))
        with self.layout.lock():
            entries = [e for e in self.layout.entries()
                       if (e.get("annotations") or {}).get(build.REF_NAME) != name]
            entries.append({**image.descriptor(), "annotations": {build.REF_NAME: name}})
            self.layout.write_entries(entries)
        return Image(name, image.manifest_digest, image.manifest_size, image.config_digest,
                     image.layers, image.diff_ids, image.config)

    def untag(self, image: Image) -> None:
        """Remove one name (or, for an untagged image, its entry) from the index."""
        with self.layout.lock():
            entries = [e for e in self.layout.entries()
                       if not (e.get("digest") == image.manifest_digest
                               and (e.get("annotations") or {}).get(build.REF_NAME, "")
                               == image.name)]
            self.layout.write_entries(entries)

    def collect(self, in_use: Iterable[str] = ()) -> tuple[int, int]:
        """Remove blobs no image names and layer directories no image and no container
        (``in_use``: layer directories of containers) needs; (blobs, layers) removed."""
        keep_layers = set(in_use)
        removed_blobs = removed_layers = 0
        with self.layout.lock():
            images = self.layout.images()
            referenced = self.layout.referenced_blobs(images)
            for digest in self.layout.all_blobs():
                if digest not in referenced:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.layout.blob_path(digest))
                        removed_blobs += 1
            wanted = {self.layer_path(d) for i in images for d, _s, _t in i.layers}
            for name in os.listdir(self.layers_dir):
                path = os.path.join(self.layers_dir, name)
                if path not in wanted and path not in keep_layers:
                    shutil.rmtree(path, ignore_errors=True)
                    removed_layers += 1
        return removed_blobs, removed_layers

    # -- containers' root filesystems --------------------------------------------------

    def container_dir(self, container_id: str) -> str:
        if not container_id or "/" in container_id or container_id.startswith("."):
            raise InvalidArgument(f"invalid container id {container_id!r}")
        return os.path.join(self.overlay_dir, container_id)

    def mount(self, container_id: str, image: Image) -> Rootfs:
        """Mount the container's overlay of ``image``'s layers (unpacking any layer a
        prune removed) and record which layers it uses."""
        base = self.container_dir(container_id)
        layers = tuple(self._ensure_layer(self.layout, d, diff)
                       for (d, _s, _t), diff in zip(image.layers, image.diff_ids, strict=True))
        os.makedirs(base, mode=0o700, exist_ok=True)
        with open(os.path.join(base, "layers.json"), "w") as f:
            json.dump(list(layers), f)
        merged = os.path.join(base, "merged")
        overlay.mount_overlay(tuple(reversed(layers)) or (self._empty_layer(),),
                              os.path.join(base, "upper"), os.path.join(base, "work"), merged)
        return Rootfs(merged, layers)

    def remount(self, container_id: str) -> bool:
        """Mount a container's overlay again from its recorded layers (after a reboot)."""
        base = self.container_dir(container_id)
        try:
            with open(os.path.join(base, "layers.json")) as f:
                layers = [str(p) for p in json.load(f)]
        except (OSError, ValueError):
            return False
        if not all(os.path.isdir(p) for p in layers):
            return False
        overlay.mount_overlay(tuple(reversed(layers)) or (self._empty_layer(),),
                              os.path.join(base, "upper"), os.path.join(base, "work"),
                              os.path.join(base, "merged"))
        return True

    def _empty_layer(self) -> str:
        path = os.path.join(self.layers_dir, "empty")
        os.makedirs(path, mode=0o755, exist_ok=True)
        return path

    def release(self, container_id: str) -> bool:
        """Unmount and remove a container's overlay; False if it had none.

        The unmount is done at once; the directory is renamed out of the way and its
        removal left to a background thread: deleting an overlay's upper and work
        directories takes ~10-20 ms that ``rm`` need not wait for (a directory left
        by a crash meanwhile is removed at the next start, ``clear_staging``)."""
        base = self.container_dir(container_id)
        if not os.path.isdir(base):
            return False
        overlay.unmount(os.path.join(base, "merged"))
        trash = os.path.join(self.overlay_dir, f"{REMOVED}{container_id}-{uuid.uuid4().hex[:8]}")
        os.rename(base, trash)
        self._remove_later(trash)
        return True

    def _remove_later(self, path: str) -> None:
        with self._reaper_lock:
            if self._reaper is None or not self._reaper.is_alive():
                self._reaper = threading.Thread(target=self._reap, name="berth-overlay-reaper",
                                                daemon=True)
                self._reaper.start()
        self._doomed.put(path)

    def _reap(self) -> None:
        while True:
            shutil.rmtree(self._doomed.get(), ignore_errors=True)

    def containers(self) -> list[str]:
        """The containers that have an overlay directory."""
        return sorted(n for n in os.listdir(self.overlay_dir) if not n.startswith("."))

    def layers_in_use(self) -> set[str]:
        used: set[str] = set()
        for cid in self.containers():
            with contextlib.suppress(OSError, ValueError), \
                    open(os.path.join(self.overlay_dir, cid, "layers.json")) as f:
                used.update(str(p) for p in json.load(f))
        return used


def archive_kind(path: str) -> tuple[str, list[str]]:
    """Which archive ``path`` is (``docker-archive`` or ``oci-archive``) and the names
    of its images."""
    if not os.path.isabs(path) or not os.path.isfile(path):
        raise InvalidArgument(f"archive {path!r} must be an absolute path to a file")
    try:
        with tarfile.open(path, "r:*") as tar:
            names = set(tar.getnames())
            if "manifest.json" in names:
                doc = json.load(_member(tar, "manifest.json"))
                tags = [t for item in doc if isinstance(item, dict)
                        for t in item.get("RepoTags") or ()]
                return "docker-archive", [str(t) for t in tags]
            if "index.json" in names and "oci-layout" in names:
                doc = json.load(_member(tar, "index.json"))
                refs = [(m.get("annotations") or {}).get(build.REF_NAME, "")
                        for m in doc.get("manifests") or ()]
                return "oci-archive", [str(r) for r in refs if r]
    except (tarfile.TarError, OSError, ValueError) as exc:
        raise InvalidArgument(f"{path} is not an image archive: {exc}") from None
    raise InvalidArgument(f"{path} is neither a docker-archive nor an oci-archive")


def _member(tar: tarfile.TarFile, name: str) -> IO[bytes]:
    found = tar.extractfile(name)
    if found is None:
        raise InvalidArgument(f"{name} in the archive is not a file")
    return found
