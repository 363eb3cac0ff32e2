"""``berth cp``: files into and out of a container's root filesystem, as tar.

Every path in the container is resolved as the container would see it: symbolic
links are followed relative to the root filesystem (an absolute link restarts at
the container's ``/``, ``..`` stops at it), so no path given and no link met can
reach the host's files. Extraction goes through tarfile's ``data`` filter (no
absolute names, no ``..``, no device files, no link pointing outside the target,
which it checks with the target's real path, so a link already in the container
cannot carry a write out either).
"""

from __future__ import annotations

import io
import os
import posixpath
import stat
import tarfile
from typing import Final

from engine.errors import InvalidArgument, NotFound

CHUNK: Final = 768 * 1024
"""Largest piece of a tar in one message (a bus frame holds at most 1 MiB)."""
MAX_COPY: Final = 256 * 1024 * 1024
"""Largest tar one copy carries (in pieces): it is held in the worker's memory."""
_MAX_LINKS: Final = 40


def resolve_in_root(root: str, path: str) -> str:
    """The host path of container path ``path`` under ``root``, links followed inside
    the root (as ``chroot`` would); the last component need not exist."""
    if not posixpath.isabs(path) or "\0" in path:
        raise InvalidArgument(f"container path {path!r} must be absolute")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            resolved.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > _MAX_LINKS:
                raise InvalidArgument(f"too many symbolic links in {path!r}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


def pack(root: str, path: str, limit: int = MAX_COPY) -> bytes:
    """The file or directory at container path ``path`` as a tar holding one top-level
    entry named after it (links inside stay links)."""
    source = resolve_in_root(root, path)
    if not os.path.lexists(source):
        raise NotFound(f"no such file or directory in the container: {path}")
    name = os.path.basename(source.rstrip("/")) or "."
    buffer = _Bounded(limit)
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(source, arcname=name)
    return buffer.getvalue()


def check_archive(data: bytes) -> None:
    """Refuse, before anything is recorded or written, an archive that is too big, not
    a tar, of several top-level entries, or with a name that climbs out (``..``) or a
    device file; links are checked against the real target when extracting."""
    if len(data) > MAX_COPY:
        raise InvalidArgument(f"the copy is {len(data)} bytes: at most {MAX_COPY} at once")
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            members = tar.getmembers()
    except tarfile.TarError as exc:
        raise InvalidArgument(f"not a tar archive: {exc}") from None
    if not members:
        raise InvalidArgument("the archive is empty")
    for member in members:
        if ".." in member.name.split("/"):
            raise InvalidArgument(f"the archive's entry {member.name!r} is outside its "
                                  "directory (..)")
        if member.isdev():
            raise InvalidArgument(f"the archive's entry {member.name!r} is a device file")
    if len({m.name.lstrip("/").split("/", 1)[0] for m in members}) != 1:
        raise InvalidArgument("the archive must hold one top-level file or directory")


def landing(root: str, path: str) -> str:
    """``path`` as a copy to it lands: ending in ``/`` (into it) when it is a directory
    now, else without one (as it, renamed). Judged once, before the copy's intent is
    recorded: after a first write of ``DIR`` as ``/data/new`` that path is a
    directory, and a resend judging again would write a second copy inside it."""
    if os.path.isdir(resolve_in_root(root, path)):
        return path.rstrip("/") + "/"
    return path.rstrip("/") or "/"


def unpack(root: str, path: str, data: bytes) -> int:
    """Extract a tar of one top-level entry at container path ``path``: into it if
    ``path`` ends in ``/`` (``landing``), else as it (renamed to its last component).
    Returns the entries written."""
    if len(data) > MAX_COPY:
        raise InvalidArgument(f"the copy is {len(data)} bytes: at most {MAX_COPY} at once")
    dest = resolve_in_root(root, path)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            return _extract(tar, dest, path)
    except tarfile.TarError as exc:
        raise InvalidArgument(f"cannot copy into {path}: {exc}") from None


def _extract(tar: tarfile.TarFile, dest: str, path: str) -> int:
    members = tar.getmembers()
    tops = {m.name.split("/", 1)[0] for m in members}
    if len(tops) != 1:
        raise InvalidArgument("the archive must hold one top-level file or directory")
    if path.endswith("/"):
        if not os.path.isdir(dest):
            raise NotFound(f"no such directory in the container: {path}")
        target = dest
    else:
        target = os.path.dirname(dest)
        if not os.path.isdir(target):
            raise NotFound(f"no such directory in the container: {posixpath.dirname(path)}")
        (top,) = tops
        new = os.path.basename(dest)
        for member in members:
            member.name = new + member.name[len(top):]
    try:
        tar.extractall(target, members=members, filter="data")
    except OSError as exc:
        raise InvalidArgument(f"cannot copy into {path}: {exc.strerror or exc}") from None
    return len(members)


class _Bounded(io.BytesIO):
    """A buffer that refuses to grow past its limit (a big tree fails fast, not after
    it was read whole)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if self.tell() + len(data) > self.limit:
            raise InvalidArgument(f"the copy is larger than {self.limit} bytes, the most "
                                  "berth cp carries at once")
        return super().write(data)
