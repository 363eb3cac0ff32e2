"""The node's image store: the OCI layout, its unpacked layers and the containers'
overlay root filesystems.

Everything that enters the store comes in through a private staging layout (skopeo
copies into it, or ``build`` writes it), is checked there blob by blob against the
digests, its layers unpacked, and only then are its blobs moved into the store and
its name written into ``index.json``: a copy that fails, or a blob with the wrong
content, leaves nothing behind.

What enters is bounded (``engine.images.limits``): every layer is streamed and
measured while it is unpacked, a copy whose blobs grow past the limits is stopped,
and what a dead worker left half-made is moved aside at start and removed in the
background, so a start never waits for a large sweep.
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
import stat
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from engine.errors import AlreadyExists, InvalidArgument, NotFound
from engine.faults import crash_point
from engine.hostfiles import remove_tree
from engine.images import build, overlay, skopeo
from engine.images.archive import ARCHIVE_FORMATS as ARCHIVE_FORMATS  # noqa: PLC0414
from engine.images.archive import ArchiveImage, read_archive
from engine.images.early import EarlyUnpack, Unpacked
from engine.images.layout import OCI_LAYER, OCI_LAYER_GZIP, Image, Layout
from engine.images.limits import Budget, LimitExceeded, Limits, human
from engine.images.reference import looks_like_id, parse_reference
from engine.images.unpack import unpack_copy, unpack_layer

log = logging.getLogger("berth.images")

UNPACKERS = 4
"""Layers unpacked at once (decompression and hashing run outside the GIL)."""
_HEX64 = re.compile(r"[0-9a-f]{64}")
REMOVED = ".removed-"
"""Prefix of an unmounted overlay directory waiting for its removal."""
TMP = ".tmp-"
"""In a layer directory's name: an unpack not finished (or not taken) yet."""


@dataclass(frozen=True, slots=True)
class Rootfs:
    """A container's overlay: where it is mounted and the layers under it."""

    merged: str
    layers: tuple[str, ...]


class ImageStore:
    """Images of one node under ``root`` (BERTH_ROOT): ``images/`` (the OCI layout),
    ``layers/`` (one directory per layer), ``overlay/`` (one per container);
    ``images.trash/`` holds what waits for its removal in the background. What a pull,
    load or import may unpack is bounded by ``limits`` (by default from the
    environment, ``Limits.from_env``)."""

    def __init__(self, root: str, limits: Limits | None = None) -> None:
        self.limits = limits if limits is not None else Limits.from_env()
        self.layout = Layout(os.path.join(root, "images")).init()
        self.layers_dir = os.path.join(root, "layers")
        self.overlay_dir = os.path.join(root, "overlay")
        self.staging_dir = os.path.join(root, "images.tmp")
        self.trash_dir = os.path.join(root, "images.trash")
        for path in (self.layers_dir, self.overlay_dir, self.staging_dir, self.trash_dir):
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
        """Remove what copies and unpacks cut short by a dead worker left (at start).
        It is only renamed away here, into ``images.trash/``, and removed by a
        background thread: a half-unpacked layer can be large, and the worker's
        start must not wait for it."""
        leftovers = [os.path.join(self.staging_dir, n) for n in os.listdir(self.staging_dir)]
        leftovers += [os.path.join(self.layers_dir, n) for n in os.listdir(self.layers_dir)
                      if TMP in n]
        leftovers += [os.path.join(self.overlay_dir, n) for n in os.listdir(self.overlay_dir)
                      if n.startswith(REMOVED)]
        for path in leftovers:
            self.discard(path)
        for name in os.listdir(self.trash_dir):  # what an earlier start did not finish
            self._remove_later(os.path.join(self.trash_dir, name))

    def discard(self, path: str) -> None:
        """Move ``path`` into the trash at once and remove it in the background
        (removed here, slowly, if the trash is on another file system)."""
        trash = os.path.join(self.trash_dir, uuid.uuid4().hex)
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            shutil.rmtree(path, ignore_errors=True)
            return
        self._remove_later(trash)

    @contextlib.contextmanager
    def staging(self) -> Iterator[Layout]:
        path = os.path.join(self.staging_dir, uuid.uuid4().hex)
        try:
            yield Layout(path)
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def pull(self, ref: str, auth: skopeo.Auth | None = None) -> Image:
        reference = parse_reference(ref)
        budget = Budget(self.limits)
        with self.staging() as stage, self._early(stage, budget) as early:
            skopeo.copy(f"docker://{reference}", f"oci:{stage.root}:{reference}",
                        src=auth, registry=reference.domain, guard=early.check)
            return self._adopt(stage, only=str(reference), early=early.finish(),
                               budget=budget)[0]

    def load(self, path: str) -> list[Image]:
        """Images from a ``docker-archive`` or ``oci-archive`` file (as ``podman save``
        writes them), under the names the archive gives them: one copy per image,
        however many names it has."""
        archive = read_archive(path, self.limits)
        budget = Budget(self.limits)
        with self.staging() as stage, self._early(stage, budget) as early:
            for image in archive.images:
                dest = image.tags[0] if image.tags else ""
                skopeo.copy(image.source, f"oci:{stage.root}:{dest}", guard=early.check)
            _name_all(stage, archive.images)
            return self._adopt(stage, early=early.finish(), budget=budget)

    def import_tarball(self, path: str, ref: str) -> Image:
        """An image of one layer, a root filesystem tarball, named ``ref``. The tarball
        is read once, as a stream: copied into the staging layout as its blob, hashed
        and unpacked in the same pass, never held in memory."""
        reference = str(parse_reference(ref))
        budget = Budget(self.limits)
        with self.staging() as stage:
            stage.init()
            tmp = os.path.join(self.layers_dir, f"import{TMP}{uuid.uuid4().hex[:12]}")
            os.makedirs(tmp, mode=0o755)
            try:
                layer = self._import_blob(path, stage, tmp, budget)
                build.add_image_blobs(stage, reference, [layer])
                early = {layer.digest: Unpacked(tmp, layer.digest, layer.diff_id)}
                return self._adopt(stage, early=early, budget=budget)[0]
            finally:  # taken: renamed away; refused: removed
                shutil.rmtree(tmp, ignore_errors=True)

    def _import_blob(self, path: str, stage: Layout, tmp: str,
                     budget: Budget) -> build.LayerBlob:
        try:  # non-blocking: a FIFO is refused below, not waited on
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except (FileNotFoundError, NotADirectoryError):
            raise InvalidArgument(f"{path!r} is not a file") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise InvalidArgument(f"{path!r} is not a file")
        with open(fd, "rb") as source:
            if st.st_size > self.limits.max_stored:
                raise LimitExceeded(f"{path} has {human(st.st_size)}, more than this node's "
                                    f"limit per layer ({human(self.limits.max_layer)}, "
                                    "BERTH_IMAGE_MAX_LAYER)")
            copy = os.path.join(stage.blobs, f"import{TMP}{uuid.uuid4().hex[:12]}")
            with open(copy, "xb") as out:
                digest, diff_id = unpack_copy(source, out, tmp, path, self.limits, budget)
                size = out.tell()
        with open(copy, "rb") as f:
            media = OCI_LAYER_GZIP if f.read(2) == b"\x1f\x8b" else OCI_LAYER
        os.replace(copy, stage.blob_path(digest))
        return build.LayerBlob(digest, size, media, diff_id)

    def _early(self, stage: Layout, budget: Budget) -> EarlyUnpack:
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
        return EarlyUnpack(stage.root, self.layers_dir, UNPACKERS, self.limits, budget)

    def _adopt(self, stage: Layout, only: str | None = None,
               early: dict[str, Unpacked] | None = None,
               budget: Budget | None = None) -> list[Image]:
        """Check a staging layout, unpack its layers (taking those ``early`` unpacked
        during the copy once their digests match), move its blobs in, name its images.
        The layers unpacked here are charged to ``budget`` (the copy's)."""
        early = early or {}
        budget = budget if budget is not None else Budget(self.limits)
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
        budget.check_declared([s for d, s, _i in layers if self.layer_path(d) in fresh])
        try:
            with ThreadPoolExecutor(max_workers=UNPACKERS) as pool:
                # each layer checked against its digest and diff_id while it is unpacked
                list(pool.map(lambda layer: self._check_layer(stage, *layer, early=early,
                                                              budget=budget), layers))
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

    def _ensure_layer(self, source: Layout, digest: str, diff_id: str,
                      budget: Budget | None = None) -> str:
        dest = self.layer_path(digest)
        if not os.path.isdir(dest):
            unpack_layer(source.blob_path(digest), dest, diff_id, digest, limits=self.limits,
                         budget=budget)
        return dest

    def _check_layer(self, stage: Layout, digest: str, size: int, diff_id: str,
                     *, early: dict[str, Unpacked], budget: Budget | None = None) -> None:
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
        self._ensure_layer(stage, digest, diff_id, budget)

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
                if TMP in name:  # an unpack under way (swept at start if left behind)
                    continue
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
            path = self._doomed.get()
            try:
                remove_tree(path)  # a container's upper: any depth
            except Exception as exc:  # noqa: BLE001 (one tree it cannot remove: the rest go on)
                log.warning("cannot remove %s: %s", path, exc)

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


def _name_all(stage: Layout, images: Sequence[ArchiveImage]) -> None:
    """Give each image copied under its first name its other names too (skopeo copied
    it once): entries of the staging index for the same manifest."""
    more = [image for image in images if len(image.tags) > 1]
    if not more:
        return
    entries = stage.entries()
    by_name = {(e.get("annotations") or {}).get(build.REF_NAME): e for e in entries}
    added = []
    for image in more:
        entry = by_name.get(image.tags[0])
        if entry is None:
            raise InvalidArgument(f"the copy of {image.tags[0]} produced no image")
        for tag in image.tags[1:]:
            added.append({**entry, "annotations": {build.REF_NAME: tag}})
    names = {e["annotations"][build.REF_NAME] for e in added}
    stage.write_entries([e for e in entries
                         if (e.get("annotations") or {}).get(build.REF_NAME) not in names]
                        + added)
