"""Unpack one layer into its own directory, in the form overlayfs reads.

An OCI layer marks deletions with whiteout files: ``.wh.NAME`` deletes NAME from the
layers below, ``.wh..wh..opq`` hides everything below in its directory. overlayfs
marks the same with a character device 0:0 and the ``trusted.overlay.opaque=y``
attribute, so each is translated once here and a container's root filesystem is
then a plain overlay mount of the layer directories, with nothing copied.

A layer is untrusted input. It is unpacked inside its own temporary directory,
never through a host path: that directory is opened once (``engine.inroot.Root``)
and each entry's parent is opened from it by ``openat2(RESOLVE_IN_ROOT |
RESOLVE_NO_SYMLINKS)``, so an absolute name, a ``..`` part or a parent that is a
symbolic link (planted by an earlier entry) is refused by the kernel, not by a check
a later entry could outrun. Each entry is made relative to its parent's descriptor
and its owner, mode and times are set on the opened object (``fchown``, ``fchmod``,
``futimens``) or with ``AT_SYMLINK_NOFOLLOW``. A directory's times are set at the
end (creating entries in it changes them), through a descriptor opened again the
same way and only on the very directory its entry made: a later entry that
replaced it by a symbolic link to a host file cannot redirect them (nor anything
else: its owner and mode were set at once, on the directory's own descriptor).
Hard links must point at an entry of the same layer, and the whole layer is unpacked
into a temporary directory renamed into place only when it is complete, after its
uncompressed content matched the image's ``diff_id``.

A layer is streamed, never held in memory, and measured as it goes
(``engine.images.limits``): its size on disk, its tar stream, its inflation ratio,
and its image's total are capped.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import os
import shutil
import stat
import tarfile
import uuid
from collections.abc import Callable
from typing import IO, Any, Final, cast

from engine.errors import InvalidArgument
from engine.images.layout import DigestMismatch, sha256_file
from engine.images.limits import BoundedTarInfo, Budget, LimitExceeded, Limits, Meter, disk_cost
from engine.inroot import RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS, Root, fchmod_nofollow, openat2

OPAQUE_MARKER = ".wh..wh..opq"
WHITEOUT_PREFIX = ".wh."
OPAQUE_XATTR = "trusted.overlay.opaque"
_KEPT_XATTRS = ("security.capability", "user.")
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
RESOLVE_NO_SYMLINKS: Final = 0x04
_STRICT: Final = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS
"""Inside the layer's root, and through no symbolic link at all (ELOOP)."""
_DIR: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
MAX_DEPTH: Final = 256
"""Directories an entry's path may nest (real layers nest a few dozen): a deeper tree
could not be removed by ``shutil.rmtree``, which recurses once per level."""


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
    if len(parts) > MAX_DEPTH:
        raise LayerError(f"layer entry {name[:64]!r}... nests deeper than {MAX_DEPTH} "
                         "directories")
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


class _Tree:
    """The layer's temporary directory, opened once: every entry is reached from its
    descriptor, never through a host path. The directory the last entry went into
    stays open (a tar lists a directory's entries together); any removal of a
    directory forgets it."""

    def __init__(self, root: Root) -> None:
        self.root = root
        self._cached: tuple[str, int] | None = None

    def close(self) -> None:
        self.forget()

    def forget(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None

    def open(self, rel: str) -> int:
        """A new descriptor of the directory ``rel`` ('' for the root), resolved
        inside the tree through no symbolic link; FileNotFoundError if missing."""
        try:
            return openat2(self.root.fd, rel or ".", _DIR, resolve=_STRICT)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EXDEV):
                raise LayerError(f"layer entry {rel!r} goes through an entry that is not "
                                 "a directory (a symbolic link, maybe)") from None
            raise

    def directory(self, rel: str) -> int:
        """The directory ``rel``, made (mode 0755) where missing; the tree keeps the
        descriptor: do not close it."""
        if self._cached is not None and self._cached[0] == rel:
            return self._cached[1]
        try:
            fd = self.open(rel)
        except FileNotFoundError:
            fd = self._make(rel)
        self.forget()
        self._cached = (rel, fd)
        return fd

    def _make(self, rel: str) -> int:
        fd = self.open("")
        for part in rel.split("/"):
            try:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
                step = openat2(fd, part, _DIR, resolve=_STRICT)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EXDEV):
                    raise LayerError(f"layer entry {rel!r} goes through {part!r}, which is "
                                     "not a directory (a symbolic link, maybe)") from None
                raise
            finally:
                os.close(fd)
            fd = step
        return fd

    def remove(self, dirfd: int, name: str) -> None:
        """Clear the way for an entry that replaces an earlier one of the same layer."""
        st = _lstat(dirfd, name)
        if st is None:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(name, dir_fd=dirfd)
            if self._cached is not None and self._cached[1] != dirfd:
                self.forget()  # it may have been inside the removed directory
        else:
            os.unlink(name, dir_fd=dirfd)


def _lstat(dirfd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return None


class _Hashing:
    """A read-only stream that hashes and counts what passes through (the layer's
    digest or diff_id); ``check`` runs after each read (the limits)."""

    def __init__(self, inner: IO[bytes], check: Callable[[], None] | None = None) -> None:
        self.inner = inner
        self.sha = hashlib.sha256()
        self.count = 0
        self.check = check

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        self.sha.update(data)
        self.count += len(data)
        if self.check is not None:
            self.check()
        return data

    def drain(self) -> str:
        while self.read(1 << 20):
            pass
        return "sha256:" + self.sha.hexdigest()


class _Prefixed:
    """The bytes read to tell the compression, then the rest of the stream: nothing
    is read twice, so a stream that cannot seek (or is still growing) works."""

    def __init__(self, head: bytes, inner: IO[bytes]) -> None:
        self.head = head
        self.inner = inner

    def read(self, size: int = -1) -> bytes:
        if not self.head:
            return self.inner.read(size)
        if size is None or size < 0:
            data, self.head = self.head + self.inner.read(), b""
            return data
        data, self.head = self.head[:size], self.head[size:]
        return data


def _decompressed(stored: _Hashing, magic: bytes) -> IO[bytes]:
    if magic.startswith(_GZIP_MAGIC):
        return cast(IO[bytes], gzip.GzipFile(fileobj=cast(IO[bytes], stored), mode="rb"))
    if magic == _ZSTD_MAGIC:
        raise LayerError("zstd-compressed layers are not supported: push the image with "
                         "gzip layers")
    return stored  # type: ignore[return-value]


def unpack_layer(blob: str, dest: str, diff_id: str | None = None,
                 digest: str | None = None, *, limits: Limits | None = None,
                 budget: Budget | None = None) -> str:
    """Unpack the layer ``blob`` into ``dest`` (which must not exist) and return it.

    ``digest``: the blob's own digest; ``diff_id``: the digest of the uncompressed
    layer, as the image config lists it. Both are checked in the one pass that unpacks
    (the stored bytes are hashed as they are read, the tar as it is decompressed), and
    a layer that matches either badly, or is larger than ``limits`` allow (its space
    charged to ``budget``, its image's), is refused, nothing of it kept.
    """
    tmp = f"{dest}.tmp-{uuid.uuid4().hex[:12]}"
    os.makedirs(tmp, mode=0o755)
    try:
        stored_digest, got = unpack_into(blob, tmp, limits, budget)
        if digest is not None and stored_digest != digest:
            raise DigestMismatch(f"blob {digest} does not match its digest (its content "
                                 f"hashes to {stored_digest})")
        if diff_id is not None and got != diff_id:
            raise LayerError(f"layer {os.path.basename(blob)} does not match its diff_id: "
                             f"expected {diff_id}, got {got}")
        os.rename(tmp, dest)
    except LimitExceeded:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile, LayerError, OverflowError,
            ValueError) as exc:
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


def unpack_into(blob: str, tmp: str, limits: Limits | None = None,
                budget: Budget | None = None) -> tuple[str, str]:
    """Unpack the layer ``blob`` into the existing directory ``tmp`` and return the
    digests it hashed on the way: (of the stored bytes, of the uncompressed tar).
    Nothing is checked here but the limits: the caller compares both digests before
    it keeps ``tmp``, and removes ``tmp`` when this raises."""
    with open(blob, "rb") as f:
        return unpack_stream(f, tmp, limits, budget)


def unpack_stream(f: IO[bytes], tmp: str, limits: Limits | None = None,
                  budget: Budget | None = None) -> tuple[str, str]:
    """``unpack_into`` for an open blob, read once from where it stands (it may
    arrive in short reads, and need not seek). What it charged to ``budget`` is
    given back when it fails (the caller removes ``tmp``)."""
    limits = limits or Limits()
    magic = b""
    while len(magic) < 4:
        more = f.read(4 - len(magic))
        if not more:
            break
        magic += more
    meter = Meter(limits, budget)
    stored = _Hashing(cast(IO[bytes], _Prefixed(magic, f)))
    plain = _Hashing(_decompressed(stored, magic),
                     lambda: limits.check_stream(plain.count, stored.count))
    try:
        with Root.open(tmp) as root:
            _extract(plain, root, meter)
        got = plain.drain()
        return stored.drain(), got
    except BaseException:
        meter.refund()
        raise


class _Tee:
    """A stream that writes what is read from it to ``out``, unchanged."""

    def __init__(self, inner: IO[bytes], out: IO[bytes]) -> None:
        self.inner = inner
        self.out = out

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        self.out.write(data)
        return data


def unpack_copy(source: IO[bytes], copy: IO[bytes], tmp: str, what: str,
                limits: Limits | None = None, budget: Budget | None = None) -> tuple[str, str]:
    """Unpack the layer read from ``source`` into the existing directory ``tmp`` while
    writing its bytes, unchanged, to ``copy`` (``berth image import``: one pass over
    the tarball stores its blob, hashes it and unpacks it); the digests as
    ``unpack_into`` returns them, LayerError (naming ``what``) if it cannot be."""
    try:
        return unpack_stream(cast(IO[bytes], _Tee(source, copy)), tmp, limits, budget)
    except (LayerError, LimitExceeded):
        raise
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile, OverflowError,
            ValueError) as exc:
        raise LayerError(f"cannot unpack {what}: {exc}") from None


def _extract(stream: Any, root: Root, meter: Meter) -> None:
    tree = _Tree(root)
    # a directory's times are set last (creating entries in it changes them): by its
    # path, the directory its entry made (device, inode) and its mtime
    times: dict[str, tuple[tuple[int, int], float]] = {}
    try:
        # Stream mode reads in records of ``bufsize``: 1 MiB, not tarfile's 10 KiB, so
        # a large layer passes through the hashing and decompression in few calls.
        with tarfile.open(fileobj=stream, mode="r|", bufsize=1 << 20,
                          tarinfo=BoundedTarInfo) as tar:
            for member in tar:
                # tarfile keeps every member it read; a layer of millions of entries
                # must not grow the worker by as many (stream mode needs none back)
                cast(Any, tar).members.clear()
                rel = member_path(member.name)
                meter.charge(disk_cost(member.size if member.isreg() else 0))
                if not rel:
                    _directory(tree, "", member, times)
                    continue
                parent, _, name = rel.rpartition("/")
                pfd = tree.directory(parent)
                meaning = whiteout(rel)
                if meaning is not None:
                    kind, target = meaning
                    if kind == "opaque":
                        os.setxattr(pfd, OPAQUE_XATTR, b"y")
                    else:
                        hidden = target.rpartition("/")[2]
                        tree.remove(pfd, hidden)
                        os.mknod(hidden, stat.S_IFCHR | 0o600, os.makedev(0, 0), dir_fd=pfd)
                    continue
                if member.isdir():
                    st = _lstat(pfd, name)
                    if st is None or not stat.S_ISDIR(st.st_mode):
                        tree.remove(pfd, name)
                        os.mkdir(name, 0o700, dir_fd=pfd)
                    _directory(tree, rel, member, times)
                    continue
                tree.remove(pfd, name)
                if member.isreg():
                    _write_file(tar, member, pfd, name)
                elif member.issym():
                    os.symlink(member.linkname, name, dir_fd=pfd)
                    _owner_and_times(pfd, name, member)
                elif member.islnk():
                    _hard_link(tree, rel, member, pfd, name)
                elif member.ischr() or member.isblk():
                    kind_bits = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
                    os.mknod(name, kind_bits | 0o600,
                             os.makedev(member.devmajor, member.devminor), dir_fd=pfd)
                    _node_attributes(pfd, name, member)
                elif member.isfifo():
                    os.mkfifo(name, 0o600, dir_fd=pfd)
                    _node_attributes(pfd, name, member)
                else:
                    raise LayerError(f"layer entry {rel!r} has an unknown type")
        # Directories' times last, as the tree is now: each directory opened again
        # inside the tree through no link, and set only if it is still the one its
        # entry made (a later entry may have replaced it by a link to a host path).
        tree.forget()
        for rel, (made, mtime) in times.items():
            try:
                fd = tree.open(rel)
            except (FileNotFoundError, LayerError):
                continue  # removed or replaced by a later entry: that one holds
            try:
                if _identity(fd) == made:
                    os.utime(fd, (mtime, mtime))
            finally:
                os.close(fd)
    finally:
        tree.close()


def _directory(tree: _Tree, rel: str, member: tarfile.TarInfo,
               times: dict[str, tuple[tuple[int, int], float]]) -> None:
    """A directory entry's owner, extended attributes and mode, set now through a
    descriptor of the directory itself; its times are set last."""
    fd = tree.open(rel)
    try:
        _fd_attributes(fd, member, with_times=False)
        times.pop(rel, None)  # the last entry for a path is the one that holds
        times[rel] = (_identity(fd), member.mtime)
    finally:
        os.close(fd)


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _write_file(tar: tarfile.TarFile, member: tarfile.TarInfo, pfd: int, name: str) -> None:
    source = tar.extractfile(member)
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600, dir_fd=pfd)
    try:
        if source is not None:
            with open(fd, "wb", closefd=False) as out:
                shutil.copyfileobj(source, out, 1 << 20)
        _fd_attributes(fd, member)
    finally:
        os.close(fd)


def _hard_link(tree: _Tree, rel: str, member: tarfile.TarInfo, pfd: int, name: str) -> None:
    """A hard link to an earlier non-directory entry of this layer (shares its inode:
    its owner and mode are the target's)."""
    target_rel = member_path(member.linkname)
    refused = LayerError(f"hard link {rel!r} points at {member.linkname!r}, which is not "
                         "a file of this layer")
    if not target_rel:
        raise refused
    target_parent, _, target_name = target_rel.rpartition("/")
    try:
        tfd = tree.open(target_parent)
    except FileNotFoundError:
        raise refused from None
    try:
        st = _lstat(tfd, target_name)
        if st is None or stat.S_ISDIR(st.st_mode):
            raise refused
        os.link(target_name, name, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
    finally:
        os.close(tfd)


def _xattrs(member: tarfile.TarInfo) -> list[tuple[str, bytes]]:
    out = []
    for key, value in member.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            name = key[len("SCHILY.xattr."):]
            if name.startswith(_KEPT_XATTRS):
                out.append((name, value.encode("utf-8", "surrogateescape")))
    return out


def _fd_attributes(fd: int, member: tarfile.TarInfo, *, with_times: bool = True) -> None:
    """Owner, extended attributes, mode and times of a file or directory, set on its
    open descriptor (chown first: it clears set-id bits and capabilities)."""
    os.fchown(fd, member.uid, member.gid)
    for name, value in _xattrs(member):
        with contextlib.suppress(OSError):
            os.setxattr(fd, name, value)
    os.fchmod(fd, member.mode & 0o7777)
    if with_times:
        os.utime(fd, (member.mtime, member.mtime))


def _owner_and_times(pfd: int, name: str, member: tarfile.TarInfo) -> None:
    """A symbolic link's owner and times, set on the link itself (it has no mode)."""
    os.chown(name, member.uid, member.gid, dir_fd=pfd, follow_symlinks=False)
    os.utime(name, (member.mtime, member.mtime), dir_fd=pfd, follow_symlinks=False)


def _node_attributes(pfd: int, name: str, member: tarfile.TarInfo) -> None:
    """A device's or FIFO's owner, mode and times, never opening it for I/O."""
    os.chown(name, member.uid, member.gid, dir_fd=pfd, follow_symlinks=False)
    fchmod_nofollow(pfd, name, member.mode & 0o7777)
    os.utime(name, (member.mtime, member.mtime), dir_fd=pfd, follow_symlinks=False)
