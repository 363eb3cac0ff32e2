"""The node's images as the worker serves them: commands on the image store, the
events that record them, and the root filesystems of containers made from images.

Every change is recorded on the image's own stream (``image:`` + its id) with the
actor that asked for it; credentials never reach an event, a reply or a log line.
One lock serialises this node's image changes (they are few, and each is a copy).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine import commands as c
from engine import events as ev
from engine.containers.process import USER_FILE_LIMIT
from engine.containers.projection import PAUSED, RUNNING
from engine.containers.service import system_command_id
from engine.containers.spec import RunSpec
from engine.errors import BerthError, ConcurrencyError, InvalidArgument, InvalidState, NotFound
from engine.images import commands as ic
from engine.images.config import apply_image
from engine.images.layout import Image
from engine.images.reference import parse_reference
from engine.images.store import ImageStore
from engine.inroot import Root
from engine.store.caused import CausedWrites

log = logging.getLogger("berth.images")


@dataclass(frozen=True, slots=True)
class ImageOutcome:
    result: dict[str, Any]
    positions: tuple[int, ...] = ()


def stream_of(image: Image) -> str:
    return ev.IMAGE_STREAM_PREFIX + image.id


def summary(image: Image) -> dict[str, Any]:
    """One line of ``berth images``."""
    repository, tag = "<none>", "<none>"
    if image.name:
        ref = parse_reference(image.name)
        repository, tag = ref.familiar, ref.tag or "<none>"
    return {"repository": repository, "tag": tag, "name": image.name, "id": image.id,
            "digest": image.manifest_digest, "created": image.created, "size": image.size}


def detail(image: Image) -> dict[str, Any]:
    """``berth image inspect``: the summary, the layers and the image's configuration."""
    return {**summary(image), "layers": [d for d, _s, _t in image.layers],
            "diff_ids": list(image.diff_ids), "config": image.run_config,
            "architecture": image.config.get("architecture", ""),
            "os": image.config.get("os", "")}


class ImageService:
    """Image commands of one node, and the ``images`` hook of its container service."""

    def __init__(self, store: ImageStore, writes: CausedWrites) -> None:
        """``writes``: the node's appends (its event store, node and announcer), not
        the container service: that service is given this one as its ``images`` hook,
        so it is built after it."""
        self.store = store
        self.writes = writes
        self._lock = threading.Lock()
        self._layers = threading.Lock()
        """Held while a container's overlay is mounted and while unused layers are
        removed, so a removal never takes the layers of a container being created
        (a pull, which only adds, does not take it: creates go on during a pull)."""

    # -- commands ------------------------------------------------------------------

    def handle(self, command: ic.ImageCommand, causation: c.Causation) -> ImageOutcome:
        done = self.writes.done(causation)
        if done is not None:  # a resend of a command carried out before
            return ImageOutcome({"replayed": True}, tuple(done.positions))
        match command:
            case ic.ListImages():
                return ImageOutcome({"images": [summary(i) for i in self.store.images()]})
            case ic.InspectImage(reference=ref):
                return ImageOutcome(detail(self.store.find(ref)))
        with self._lock:
            return self._change(command, causation)

    def _change(self, command: ic.ImageCommand, causation: c.Causation) -> ImageOutcome:
        match command:
            case ic.Pull(reference=ref, auth=auth, missing_only=missing_only):
                found = self.store.present(ref) if missing_only else None
                if found is not None:
                    return ImageOutcome({"image": summary(found), "pulled": False})
                image = self.store.pull(ref, auth)
                return self._record([(image, ev.ImagePulled)], causation,
                                    {"image": summary(image), "pulled": True})
            case ic.Load(path=path):
                images = self.store.load(path)
                return self._record([(i, ev.ImageLoaded) for i in images], causation,
                                    {"images": [summary(i) for i in images]})
            case ic.Import(path=path, reference=ref):
                image = self.store.import_tarball(path, ref)
                return self._record([(image, ev.ImageLoaded)], causation,
                                    {"image": summary(image)})
            case ic.Tag(reference=ref, target=target):
                image = self.store.tag(ref, target)
                return self._record([(image, ev.ImageTagged)], causation,
                                    {"image": summary(image)})
            case ic.Save(reference=ref, path=path, format=fmt):
                image = self.store.save(ref, path, fmt)
                return ImageOutcome({"image": summary(image), "path": path})
            case ic.Push(reference=ref, destination=dest, auth=auth):
                image = self.store.push(ref, dest, auth)
                return ImageOutcome({"image": summary(image),
                                     "destination": str(parse_reference(dest))})
            case ic.RemoveImages(references=refs, force=force):
                return self._remove(refs, force, causation)
            case ic.Prune():
                return self._prune(causation)
        raise InvalidArgument(f"unknown image command {command!r}")

    def _record(self, changes: Sequence[tuple[Image, type[ev.Event]]], causation: c.Causation,
                result: dict[str, Any]) -> ImageOutcome:
        """Append each change to its image's stream; the last append carries the
        command's own id (its outcome), the others ids derived from it."""
        positions: list[int] = []
        for n, (image, kind) in enumerate(changes):
            event = kind(reference=image.name, digest=image.manifest_digest,  # type: ignore[call-arg]
                         image_id=image.id, size=image.size)
            last = n == len(changes) - 1
            command_id = (causation.command_id if last
                          else system_command_id(causation.command_id, "image", n))
            recorded = self._append(stream_of(image), event, command_id, causation)
            positions += [r.position for r in recorded]
        return ImageOutcome(result, tuple(positions))

    def _append(self, stream: str, event: ev.Event, command_id: str,
                causation: c.Causation) -> list[ev.RecordedEvent]:
        store = self.writes.store
        for attempt in range(3):  # another node may have written the same image's stream
            version = len(store.read_stream(stream))
            try:
                return self.writes.append(stream, version, [event], causation,
                                                     command_id=command_id)
            except ConcurrencyError:
                if attempt == 2:
                    raise
        return []

    def users(self, image: Image) -> list[tuple[str, str, bool]]:
        """(id, name, running) of this node's containers made from ``image``."""
        return [(s.id, s.name, s.state in (RUNNING, PAUSED))
                for s in self.writes.store.list_containers(all=True,
                                                               node=self.writes.node)
                if s.spec.image_id == image.id]

    def _remove(self, refs: Sequence[str], force: bool,
                causation: c.Causation) -> ImageOutcome:
        targets: list[Image] = []
        for ref in refs:
            image = self.store.find(ref)
            named = [i for i in self.store.images() if i.id == image.id]
            # a name removes that name; an id removes every name of the image
            going = [image] if image.name and image.name == _full(ref) else named
            if len(going) == len(named):  # the image itself goes: who uses it?
                users = self.users(image)
                running = [name for _cid, name, live in users if live]
                if running and force:
                    raise InvalidState(f"image {ref} is used by running container(s) "
                                       f"{', '.join(running)}: stop them first")
                if users and not force:
                    raise InvalidState(f"image {ref} is used by container(s) "
                                       f"{', '.join(n for _c, n, _r in users)}: remove them, "
                                       "or use -f")
            targets += [i for i in going if i not in targets]
        with self._layers:
            for image in targets:
                self.store.untag(image)
            self.store.collect(self.store.layers_in_use())
        outcome = self._record([(i, ev.ImageRemoved) for i in targets], causation,
                               {"removed": [summary(i) for i in targets]})
        return outcome

    def _prune(self, causation: c.Causation) -> ImageOutcome:
        """Remove untagged images no container uses, then every blob and layer no image
        and no container needs."""
        dangling = [i for i in self.store.images() if not i.name and not self.users(i)]
        with self._layers:
            for image in dangling:
                self.store.untag(image)
            blobs, layers = self.store.collect(self.store.layers_in_use())
        result = {"removed": [summary(i) for i in dangling], "blobs": blobs, "layers": layers}
        if not dangling:
            return ImageOutcome(result)
        return self._record([(i, ev.ImageRemoved) for i in dangling], causation, result)

    # -- containers' root filesystems (ContainerService.images) -------------------------

    def prepare(self, container_id: str, spec: RunSpec) -> RunSpec:
        """Mount the container's overlay of its image and return its spec completed from
        the image's configuration (recording the image's reference, digest and id)."""
        with self._layers:
            image = self.store.find(spec.image)
            rootfs = self.store.mount(container_id, image)
        passwd = _read(rootfs.merged, "/etc/passwd")
        group = _read(rootfs.merged, "/etc/group")
        return apply_image(spec, image.run_config, rootfs=rootfs.merged,
                           reference=image.name or image.id,
                           manifest_digest=image.manifest_digest, image_id=image.id,
                           passwd=passwd, group=group)

    def release(self, container_id: str) -> None:
        self.store.release(container_id)

    def remount(self, container_id: str, spec: RunSpec) -> None:
        """Before runc creates the container again (restart, restore): its overlay
        must be mounted (a reboot unmounted it)."""
        if spec.image_id and not self.store.remount(container_id):
            raise NotFound(f"the layers of container {container_id}'s image are gone")

    def reconcile(self) -> int:
        """At worker start: unmount and remove the overlays of containers the log no
        longer has (removed, or never recorded); remount those of live ones; remove
        what a pull or load cut short by a crash left (staging copies, and unpacked
        layers and blobs that no image names and no container uses)."""
        cleaned = 0
        self.store.clear_staging()
        for cid in self.store.containers():
            try:
                state = self.writes.store.get_container(cid, include_removed=True)
                gone = state.removed
            except NotFound:
                gone = True
            except InvalidArgument:
                gone = True
            if gone:
                self.store.release(cid)
                log.warning("removed the leftover root filesystem of container %s", cid)
                cleaned += 1
            elif state.spec.image_id:
                try:
                    self.store.remount(cid)
                except Exception as exc:  # noqa: BLE001 (reported, the rest go on)
                    log.error("cannot mount the root filesystem of %s: %s", cid, exc)
        with self._layers:  # what a pull or load that died half-way put in, no image names
            blobs, layers = self.store.collect(self.store.layers_in_use())
        if blobs or layers:
            log.warning("removed %d blob(s) and %d layer(s) no image or container needs",
                        blobs, layers)
        return cleaned


def _full(ref: str) -> str:
    try:
        return str(parse_reference(ref))
    except InvalidArgument:
        return ""


def _read(rootfs: str, path: str) -> str:
    """A file of the image, resolved inside its root filesystem (a link in it cannot
    reach the host's files) and only if it is a regular file (a FIFO would block the
    create for ever); "" if there is none, or none that can be read."""
    try:
        with Root.open(rootfs) as root:
            data = root.read_regular(path, USER_FILE_LIMIT)
    except (OSError, BerthError):
        return ""
    return "" if data is None else data.decode("utf-8", "replace")
