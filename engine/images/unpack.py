"""Unpack one layer into its own directory, in the form overlayfs reads.

An OCI layer marks deletions with whiteout files: ``.wh.NAME`` deletes NAME from the
layers below, ``.wh..wh..opq`` hides everything below in its directory. overlayfs
marks the same with a character device 0:0 and the ``trusted.overlay.opaque=y``
attribute, so each is translated once here and a container's root filesystem is
then a plain overlay mount of the layer directories, with nothing copied.

A layer is untrusted input: no entry may land outside the layer directory (an
absolute name, a ``..`` part, or a parent that is a symbolic link are refused),
hard links must point at an entry of the same layer, and the whole layer is
unpacked into a temporary directory renamed into place only when it is complete,
after its uncompressed content matched the image's ``diff_id``.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
import stat
import tarfile
import uuid
from typing import IO, Any, cast

from engine.errors import InvalidArgument
from engine.images.layout import DigestMismatch, sha256_file

OPAQUE_MARKER = ".wh..wh..opq"
WHITEOUT_PREFIX = ".wh."
OPAQUE_XATTR = "trusted.overlay.opaque"
_KEPT_XATTRS = ("security.capability", "user.")
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class LayerError(InvalidArgument):
    """A layer that cannot be unpacked safely: nothing of it is kept."""


def member_path(name: str) -> str:
    """The entry's path relative to the layer directory ('' for the root itself);
    LayerError for a name that would leave it."""
    if not name or "\0" in name:
        raise LayerError(f"layer entry {name!r} has an empty or NUL-containing name")
    if name.startswith("/"):
        raise LayerError(f"layer entry {name!r} is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise LayerError(f"layer entry {name!r} leaves the layer through '..'")
    return "/".join(parts)


def whiteout(path: str) -> tuple[str, str] | None:
    """What a whiteout entry means: ("opaque", DIR) for ``DIR/.wh..wh..opq``,
    ("delete", PATH) for ``DIR/.wh.NAME``, None for an ordinary entry."""
    parent, _, base = path.rpartition("/")
    if base == OPAQUE_MARKER:
        return ("opaque", parent)
    if base.startswith(WHITEOUT_PREFIX):
        hidden = base[len(WHITEOUT_PREFIX):]
        if hidden in ("", ".", "..") or hidden.startswith(WHITEOUT_PREFIX):
            raise LayerError(f"layer entry {path!r} is a whiteout of nothing")
        return ("delete", f"{parent}/{hidden}" if parent else hidden)
    return None


def safe_parent(root: str, rel: str) -> str:
    """Create (as needed) and return the parent directory of ``rel`` under ``root``,
    refusing any existing part of it that is not a real directory (a symbolic link
    planted by an earlier entry would otherwise carry the next one out)."""
    current = root
    for part in rel.split("/")[:-1]:
        current = os.path.join(current, part)
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            os.mkdir(current, 0o755)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise LayerError(f"layer entry {rel!r} goes through {part!r}, which is not a "
                             "directory (a symbolic link, maybe)")
    return current


class _Hashing:
    """A read-only stream that hashes what passes through (the layer's diff_id)."""

    def __init__(self, inner: IO[bytes]) -> None:
        self.inner = inner
        self.sha = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        self.sha.update(data)
        return data

    def drain(self) -> str:
        while self.read(1 << 20):
            pass
        return "sha256:" + self.sha.hexdigest()


def _decompressed(stored: _Hashing, magic: bytes) -> IO[bytes]:
    if magic.startswith(_GZIP_MAGIC):
        return cast(IO[bytes], gzip.GzipFile(fileobj=cast(IO[bytes], stored), mode="rb"))
    if magic == _ZSTD_MAGIC:
        raise LayerError("zstd-compressed layers are not supported: push the image with "
                         "gzip layers")
    return stored  # type: ignore[return-value]


def unpack_layer(blob: str, dest: str, diff_id: str | None = None,
                 digest: str | None = None) -> str:
    """Unpack the layer ``blob`` into ``dest`` (which must not exist) and return it.

    ``digest``: the blob's own digest; ``diff_id``: the digest of the uncompressed
    layer, as the image config lists it. Both are checked in the one pass that unpacks
    (the stored bytes are hashed as they are read, the tar as it is decompressed), and
    a layer that matches either badly is refused, nothing of it kept.
    """
    tmp = f"{dest}.tmp-{uuid.uuid4().hex[:12]}"
    os.makedirs(tmp, mode=0o755)
    try:
        stored_digest, got = unpack_into(blob, tmp)
        if digest is not None and stored_digest != digest:
            raise DigestMismatch(f"blob {digest} does not match its digest (its content "
                                 f"hashes to {stored_digest})")
        if diff_id is not None and got != diff_id:
            raise LayerError(f"layer {os.path.basename(blob)} does not match its diff_id: "
                             f"expected {diff_id}, got {got}")
        os.rename(tmp, dest)
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile, LayerError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno in (17, 39) and os.path.isdir(dest):
            return dest  # unpacked meanwhile by another caller: same content
        if digest is not None and not isinstance(exc, DigestMismatch):
            actual = sha256_file(blob)  # a corrupt blob is the cause to report
            if actual != digest:
                raise DigestMismatch(f"blob {digest} does not match its digest (its "
                                     f"content hashes to {actual})") from None
        if isinstance(exc, LayerError):
            raise
        raise LayerError(f"cannot unpack layer {os.path.basename(blob)}: {exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def unpack_into(blob: str, tmp: str) -> tuple[str, str]:
    """Unpack the layer ``blob`` into the existing directory ``tmp`` and return the
    digests it hashed on the way: (of the stored bytes, of the uncompressed tar).
    Nothing is checked here: the caller compares both before it keeps ``tmp``."""
    with open(blob, "rb") as f:
        return unpack_stream(f, tmp)


def unpack_stream(f: IO[bytes], tmp: str) -> tuple[str, str]:
    """``unpack_into`` for an open blob (which may arrive in short reads)."""
    magic = b""
    while len(magic) < 4:
        more = f.read(4 - len(magic))
        if not more:
            break
        magic += more
    f.seek(0)
    stored = _Hashing(f)
    plain = _Hashing(_decompressed(stored, magic))
    _extract(plain, tmp)
    got = plain.drain()
    return stored.drain(), got


def _extract(stream: Any, root: str) -> None:
    dirs: list[tuple[str, tarfile.TarInfo]] = []
    # Stream mode reads in records of ``bufsize``: 1 MiB, not tarfile's 10 KiB, so a
    # large layer passes through the hashing and decompression in few calls.
    with tarfile.open(fileobj=stream, mode="r|", bufsize=1 << 20) as tar:
        for member in tar:
            rel = member_path(member.name)
            if not rel:
                dirs.append((root, member))
                continue
            parent = safe_parent(root, rel)
            meaning = whiteout(rel)
            if meaning is not None:
                kind, target = meaning
                if kind == "opaque":
                    os.setxattr(parent, OPAQUE_XATTR, b"y")
                else:
                    path = os.path.join(root, target)
                    _remove(path)
                    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(0, 0))
                continue
            path = os.path.join(parent, rel.rsplit("/", 1)[-1])
            if member.isdir():
                if not os.path.isdir(path) or os.path.islink(path):
                    _remove(path)
                    os.mkdir(path, 0o700)
                dirs.append((path, member))
                continue
            _remove(path)
            if member.isreg():
                source = tar.extractfile(member)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as out:
                    if source is not None:
                        shutil.copyfileobj(source, out, 1 << 20)
            elif member.issym():
                os.symlink(member.linkname, path)
            elif member.islnk():
                target_rel = member_path(member.linkname)
                target = os.path.join(safe_parent(root, target_rel),
                                      target_rel.rsplit("/", 1)[-1])
                if not target_rel or not os.path.lexists(target) or os.path.isdir(target):
                    raise LayerError(f"hard link {rel!r} points at {member.linkname!r}, "
                                     "which is not a file of this layer")
                os.link(target, path, follow_symlinks=False)
                continue  # shares the target's inode: its owner and mode are the target's
            elif member.ischr() or member.isblk():
                node_type = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
                os.mknod(path, node_type | 0o600, os.makedev(member.devmajor, member.devminor))
            elif member.isfifo():
                os.mkfifo(path, 0o600)
            else:
                raise LayerError(f"layer entry {rel!r} has an unknown type")
            _attributes(path, member)
    for path, member in reversed(dirs):
        _attributes(path, member)


def _remove(path: str) -> None:
    """Clear the way for an entry that replaces an earlier one of the same layer."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _attributes(path: str, member: tarfile.TarInfo) -> None:
    """Owner, mode, extended attributes and times, as the layer recorded them."""
    os.chown(path, member.uid, member.gid, follow_symlinks=False)
    for key, value in member.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            name = key[len("SCHILY.xattr."):]
            if name.startswith(_KEPT_XATTRS):
                with contextlib.suppress(OSError):
                    os.setxattr(path, name, value.encode("utf-8", "surrogateescape"),
                                follow_symlinks=False)
    if not member.issym():
        os.chmod(path, member.mode & 0o7777)
    os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)
