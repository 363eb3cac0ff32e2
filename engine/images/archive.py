"""What a ``docker-archive`` or ``oci-archive`` file holds, read before skopeo copies
it (``berth image load``).

The archive is untrusted: its index (``manifest.json``, or ``index.json``) is read
with the cap and the depth limit of any image document, the archive's entries are
counted, and a compressed archive is measured as it is read (a small gzip could
otherwise make the scan inflate gigabytes). The images are grouped so that skopeo
copies each image once, however many names it has: a docker-archive image is named
by its index in ``manifest.json`` (``docker-archive:PATH:@N``) and its other tags are
added to the staging layout's index afterwards; an oci-archive's names that point at
the same manifest are copied once too.
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass
from typing import IO, Any, Final

from engine.errors import InvalidArgument
from engine.images.layout import MAX_JSON_BLOB, REF_NAME, loads_json
from engine.images.limits import BoundedTarInfo, LimitExceeded, Limits, human
from engine.images.reference import parse_reference

DOCKER_ARCHIVE: Final = "docker-archive"
OCI_ARCHIVE: Final = "oci-archive"
ARCHIVE_FORMATS = (DOCKER_ARCHIVE, OCI_ARCHIVE)
MAX_ENTRIES: Final = 100_000
"""Entries an archive may have (a real one has a few per layer)."""
MAX_IMAGES: Final = 256
"""Images one archive may hold (each is one skopeo copy)."""
MAX_TAGS: Final = 4096
_WANTED: Final = frozenset({"manifest.json", "index.json", "oci-layout"})


@dataclass(frozen=True, slots=True)
class ArchiveImage:
    """One image of an archive: skopeo's source for it and its names (full
    references; empty for an untagged image)."""

    source: str
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Archive:
    kind: str
    images: tuple[ArchiveImage, ...]


def read_archive(path: str, limits: Limits | None = None) -> Archive:
    """The kind of the archive at ``path`` and its images; InvalidArgument with one
    sentence for anything that is not an archive berth loads."""
    limits = limits or Limits()
    if not os.path.isabs(path) or not os.path.isfile(path):
        raise InvalidArgument(f"archive {path!r} must be an absolute path to a file")
    if ":" in path:
        raise InvalidArgument(f"archive {path!r}: a path with ':' cannot be named to skopeo")
    try:
        found = _scan(path, limits)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InvalidArgument(f"{path} is not an image archive: {exc}") from None
    if "manifest.json" in found:
        doc = loads_json(found["manifest.json"], "manifest.json in the archive")
        return Archive(DOCKER_ARCHIVE, _docker_images(path, doc))
    if "index.json" in found and "oci-layout" in found:
        doc = loads_json(found["index.json"], "index.json in the archive")
        return Archive(OCI_ARCHIVE, _oci_images(path, doc))
    raise InvalidArgument(f"{path} is neither a docker-archive nor an oci-archive")


def _scan(path: str, limits: Limits) -> dict[str, bytes]:
    """The archive's ``manifest.json``, ``index.json`` and ``oci-layout`` (the last of
    each, as a tar's later entry replaces an earlier one)."""
    found: dict[str, bytes] = {}
    with open(path, "rb") as raw:
        head = raw.read(512)
        raw.seek(0)
        plain = head[257:262] == b"ustar"
        # a plain tar is read by seeking over the entries' data; anything else is
        # streamed (decompressed on the way) and measured as it goes
        opened = (tarfile.open(fileobj=raw, mode="r:", tarinfo=BoundedTarInfo)  # noqa: SIM115
                  if plain  # (with below)
                  else tarfile.open(fileobj=raw, mode="r|*", tarinfo=BoundedTarInfo))  # noqa: SIM115
        with opened as tar:
            for count, member in enumerate(tar, 1):
                if count > MAX_ENTRIES:
                    raise InvalidArgument(f"{path} has more than {MAX_ENTRIES} entries: not "
                                          "an image archive berth loads")
                if not plain:
                    _check_inflation(tar.offset, raw.tell(), limits)
                name = member.name.removeprefix("./")
                if name in _WANTED:
                    found[name] = _read_member(tar, member, name)
    return found


def _check_inflation(offset: int, stored: int, limits: Limits) -> None:
    if offset > limits.max_image:
        raise LimitExceeded(f"the archive unpacks to more than {human(limits.max_image)}, "
                            "this node's limit per image (BERTH_IMAGE_MAX_SIZE)")
    if limits.max_ratio and offset > limits.ratio_floor and offset > limits.max_ratio * stored:
        raise LimitExceeded(f"the archive inflates to more than {limits.max_ratio} times its "
                            "compressed size (a decompression bomb?), this node's limit "
                            "(BERTH_IMAGE_MAX_RATIO)")


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, name: str) -> bytes:
    if not member.isreg():
        raise InvalidArgument(f"{name} in the archive is not a file")
    if member.size > MAX_JSON_BLOB:
        raise InvalidArgument(f"{name} in the archive has {human(member.size)}, more than "
                              f"the {human(MAX_JSON_BLOB)} an image archive's index may have")
    f: IO[bytes] | None = tar.extractfile(member)
    if f is None:
        raise InvalidArgument(f"{name} in the archive is not a file")
    return f.read(MAX_JSON_BLOB + 1)


def _tags(raw: Any, what: str) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(t, str) for t in raw):
        raise InvalidArgument(f"{what} must be a list of image names")
    return [str(parse_reference(t)) for t in raw]


def _docker_images(path: str, doc: Any) -> tuple[ArchiveImage, ...]:
    if not isinstance(doc, list) or not doc:
        raise InvalidArgument("manifest.json in the archive lists no image")
    if len(doc) > MAX_IMAGES:
        raise InvalidArgument(f"the archive lists {len(doc)} images, more than the "
                              f"{MAX_IMAGES} one load takes")
    groups: dict[str, tuple[int, list[str]]] = {}
    total = 0
    for index, item in enumerate(doc):
        if not isinstance(item, dict):
            raise InvalidArgument("manifest.json in the archive has an entry that is not "
                                  "an object")
        tags = _tags(item.get("RepoTags"), "RepoTags in manifest.json")
        total += len(tags)
        if total > MAX_TAGS:
            raise InvalidArgument(f"the archive names more than {MAX_TAGS} images")
        # the same config and layers listed twice are one image: copied once
        key = repr((item.get("Config"), item.get("Layers")))
        _, names = groups.setdefault(key, (index, []))
        names += [t for t in tags if t not in names]
    return tuple(ArchiveImage(f"{DOCKER_ARCHIVE}:{path}:@{index}", tuple(names))
                 for index, names in groups.values())


def _oci_images(path: str, doc: Any) -> tuple[ArchiveImage, ...]:
    manifests = doc.get("manifests") if isinstance(doc, dict) else None
    if not isinstance(manifests, list) or not manifests:
        raise InvalidArgument("index.json in the archive lists no image")
    if len(manifests) > MAX_TAGS:
        raise InvalidArgument(f"the archive names more than {MAX_TAGS} images")
    named: dict[str, tuple[str, list[str]]] = {}
    for entry in manifests:
        if not isinstance(entry, dict):
            raise InvalidArgument("index.json in the archive has an entry that is not an "
                                  "object")
        annotations = entry.get("annotations") or {}
        ref = annotations.get(REF_NAME, "") if isinstance(annotations, dict) else ""
        if not isinstance(ref, str) or not ref:
            continue
        full = str(parse_reference(ref))
        _, names = named.setdefault(str(entry.get("digest")), (ref, []))
        if full not in names:
            names.append(full)
    if len(named) > MAX_IMAGES:
        raise InvalidArgument(f"the archive holds {len(named)} images, more than the "
                              f"{MAX_IMAGES} one load takes")
    if not named:  # skopeo can name an unnamed image only when it is the only one
        return (ArchiveImage(f"{OCI_ARCHIVE}:{path}", ()),)
    return tuple(ArchiveImage(f"{OCI_ARCHIVE}:{path}:{first}", tuple(names))
                 for first, names in named.values())
