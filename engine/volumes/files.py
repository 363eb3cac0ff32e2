"""A named volume's directory on disk: made, filled from a root filesystem, taken away.

Kept apart from the decisions (``engine.volumes.rules``) and from the service that records
them: these are the only functions that touch ``$BERTH_ROOT/volumes``. Each step that
a crash could cut short leaves something the next attempt recognises: a fill is
copied into a staging directory and renamed into place whole, a removal first renames
the volume out of its name, so a half-copied or half-deleted volume is never seen
under a volume's name.

A fill reads a root filesystem, which is untrusted: a process with access to it (a
container running on the same directory) can swap any directory in it for a
symbolic link to a host path at any moment. So nothing there is named by a host path.
The target is opened inside the root (``engine.inroot``: the kernel resolves it with
the root as ``/``), and every entry below is opened relative to its already opened
parent with ``O_NOFOLLOW``, first as ``O_PATH`` (which opens nothing), then read only
if it is a regular file or a directory: a link is copied as a link, a FIFO, device or
socket is made anew (never opened), and what changes meanwhile is copied as it is
found, never followed. The copy is written by descriptor into the staging directory,
which only this process writes to. It keeps what ``cp -a`` kept: owners, modes, times,
hard links between the copied files, extended attributes (but overlayfs' own), holes.
It is bounded: in time (``FILL_TIMEOUT``), in depth (``MAX_DEPTH``), and each file in
the size it had when it was opened (one that grows meanwhile is not followed).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import stat
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from engine.containers.ocimounts import volume_data
from engine.errors import NotFound, RuntimeFailure
from engine.hostfiles import remove_tree
from engine.inroot import Root, check_path, fchmod_nofollow

FILL_DIR: Final = "_fill"
REMOVED_PREFIX: Final = ".removed-"
"""Volumes on their way out; a volume name cannot start with a dot."""
FILL_TIMEOUT: Final = 600.0
DATA_MODE: Final = 0o755
"""A new volume's ``_data`` (podman's), whatever the worker's umask."""
MAX_DEPTH: Final = 256
"""Directories below a fill's target; each level holds two descriptors while it is
copied."""
_CHUNK: Final = 1 << 20
_SKIPPED_XATTRS: Final = ("trusted.overlay.",)
"""overlayfs' own marks (whiteouts, opaque directories): they mean nothing in a volume."""

_libc = ctypes.CDLL(None, use_errno=True)
_libc.readlinkat.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t)
_libc.readlinkat.restype = ctypes.c_ssize_t


def ensure(volumes: str, name: str) -> str:
    """The volume's data directory, made if missing (mode 0755 inside a 0700 root)."""
    os.makedirs(volumes, mode=0o700, exist_ok=True)
    os.makedirs(os.path.join(volumes, name), mode=0o700, exist_ok=True)
    data = volume_data(volumes, name)
    try:
        os.mkdir(data, 0o700)
    except FileExistsError:
        if not stat.S_ISDIR(os.lstat(data).st_mode):  # runc would bind-mount what it names
            raise RuntimeFailure(f"volume {name}'s data directory {data} is not a directory "
                                 "(a symbolic link?): remove the volume") from None
        return data  # its mode is the volume's own now (a fill's, a container's chmod)
    fd = os.open(data, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchmod(fd, DATA_MODE)  # the mode asked, not what the umask leaves of it
    finally:
        os.close(fd)
    return data


def fill(volumes: str, name: str, rootfs: str, target: str) -> bool:
    """Copy the rootfs's directory at ``target`` into the volume if the volume is empty
    and the directory is not, ownership, modes, links and all (podman's copy-up).
    Returns whether it copied."""
    data = ensure(volumes, name)
    check_path(target)
    try:
        root = Root.open(rootfs)
    except NotFound:
        return False
    with root, contextlib.ExitStack() as fds:
        try:
            source = root.opendir(target)  # links followed inside the rootfs only
        except NotFound:
            return False
        fds.callback(os.close, source)
        if not os.listdir(source) or os.listdir(data):
            return False
        staging = os.path.join(volumes, name, FILL_DIR)
        shutil.rmtree(staging, ignore_errors=True)
        try:
            os.mkdir(staging, 0o700)
            dest = os.open(staging, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                copy = _Copy(dest, time.monotonic() + FILL_TIMEOUT, target)
                copy.tree(source, dest, os.fstat(source), ())
            finally:
                os.close(dest)
        except BaseException as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(exc, OSError):
                raise RuntimeFailure(f"cannot fill volume {name} from {target}: "
                                     f"{exc.strerror or exc}") from None
            raise
    try:
        os.rmdir(data)  # still empty: nobody wrote to it meanwhile (the volume is locked)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        return False
    os.rename(staging, data)
    return True


@dataclass
class _Copy:
    """One fill's copy: where it writes (``top``: the staging directory), until when,
    and the files met with more than one link (their first copy, relative to ``top``)."""

    top: int
    deadline: float
    target: str
    linked: dict[tuple[int, int], str] = field(default_factory=dict)

    def _check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise RuntimeFailure(f"filling a volume from {self.target} took longer than "
                                 f"{FILL_TIMEOUT:.0f} s")

    def tree(self, src: int, dst: int, st: os.stat_result, where: tuple[str, ...]) -> None:
        """Copy the entries of directory ``src`` into ``dst``, then give ``dst`` the
        attributes of ``src`` (``st``)."""
        if len(where) > MAX_DEPTH:
            raise RuntimeFailure(f"{self.target} is more than {MAX_DEPTH} directories deep")
        for entry in os.listdir(src):
            self._check_time()
            self.entry(src, dst, entry, where)
        _attributes(src, dst, st)

    def entry(self, src: int, dst: int, name: str, where: tuple[str, ...]) -> None:
        try:
            probe = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src)
        except FileNotFoundError:
            return  # gone since it was listed
        try:
            st = os.fstat(probe)
            kind = stat.S_IFMT(st.st_mode)
            if kind == stat.S_IFDIR:
                self.directory(probe, dst, name, st, where)
                return
            if st.st_nlink > 1 and self._link(dst, name, st):
                return
            if kind == stat.S_IFREG:
                self.regular(probe, dst, name, st)
            elif kind == stat.S_IFLNK:
                os.symlink(_readlink(probe), name, dir_fd=dst)
                _link_attributes(dst, name, st)
            elif kind in (stat.S_IFIFO, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFSOCK):
                os.mknod(name, kind | 0o600, st.st_rdev, dir_fd=dst)  # made, never opened
                _node_attributes(dst, name, st)
            else:
                return
            if st.st_nlink > 1:
                self.linked[(st.st_dev, st.st_ino)] = "/".join((*where, name))
        finally:
            os.close(probe)

    def directory(self, probe: int, dst: int, name: str, st: os.stat_result,
                  where: tuple[str, ...]) -> None:
        src = _reopen(probe, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.mkdir(name, 0o700, dir_fd=dst)
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=dst)
            try:
                self.tree(src, sub, st, (*where, name))
            finally:
                os.close(sub)
        finally:
            os.close(src)

    def regular(self, probe: int, dst: int, name: str, st: os.stat_result) -> None:
        src = _reopen(probe, os.O_RDONLY | os.O_NONBLOCK)
        try:
            out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                          | os.O_CLOEXEC, 0o600, dir_fd=dst)
            try:
                self._data(src, out, st.st_size)
                _attributes(src, out, st)
            finally:
                os.close(out)
        finally:
            os.close(src)

    def _data(self, src: int, out: int, size: int) -> None:
        """The first ``size`` bytes of ``src`` (its size when it was opened), holes kept;
        a file that shrinks meanwhile is copied as far as it goes."""
        offset = 0
        while offset < size:
            try:
                start = os.lseek(src, offset, os.SEEK_DATA)
                end = min(os.lseek(src, start, os.SEEK_HOLE), size)
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    break  # only a hole to the end
                if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                start, end = offset, size  # no hole support: all of it is data
            while start < end:
                self._check_time()
                chunk = os.pread(src, min(_CHUNK, end - start), start)
                if not chunk:
                    os.ftruncate(out, start)
                    return
                written = 0
                while written < len(chunk):
                    written += os.pwrite(out, chunk[written:], start + written)
                start += len(chunk)
            offset = max(end, offset + 1)
        os.ftruncate(out, size)

    def _link(self, dst: int, name: str, st: os.stat_result) -> bool:
        """A second name of a file copied before, as a hard link to its copy."""
        first = self.linked.get((st.st_dev, st.st_ino))
        if first is None:
            return False
        try:  # the staging tree is this process's own: its paths cannot be swapped
            os.link(first, name, src_dir_fd=self.top, dst_dir_fd=dst, follow_symlinks=False)
        except OSError:
            return False  # too long a path, say: a copy of its own instead
        return True


def _reopen(probe: int, flags: int) -> int:
    """A real descriptor of the object an ``O_PATH`` descriptor holds (the same inode:
    what was checked is what is read, whatever the name leads to now)."""
    return os.open(f"/proc/self/fd/{probe}", flags | os.O_CLOEXEC)


def _readlink(probe: int) -> str:
    buf = ctypes.create_string_buffer(4096)
    n = _libc.readlinkat(probe, b"", buf, len(buf))
    if n < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return os.fsdecode(buf.raw[:n])


def _xattrs(src: int, out: int) -> None:
    """Extended attributes, as ``cp -a`` keeps them: those that cannot be set are
    left out."""
    try:
        names = os.listxattr(src)
    except OSError:
        return
    for key in names:
        if key.startswith(_SKIPPED_XATTRS):
            continue
        with contextlib.suppress(OSError):
            os.setxattr(out, key, os.getxattr(src, key))


def _chown(do: Callable[[], None]) -> bool:
    """An owner set, or not when this worker may not (rootless): ``cp -a`` goes on
    then too. Whether it was set."""
    try:
        do()
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EINVAL):
            raise
        return False
    return True


def _mode(st: os.stat_result, owned: bool) -> int:
    """The mode to give a copy: set-id bits only with the owner they were for."""
    mode = stat.S_IMODE(st.st_mode)
    return mode if owned else mode & ~(stat.S_ISUID | stat.S_ISGID)


def _attributes(src: int, out: int, st: os.stat_result) -> None:
    """Owner, extended attributes, mode and times of ``st`` on ``out`` (in that order:
    a chown drops set-id bits and file capabilities)."""
    owned = _chown(lambda: os.fchown(out, st.st_uid, st.st_gid))
    _xattrs(src, out)
    os.fchmod(out, _mode(st, owned))
    os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))


def _link_attributes(dst: int, name: str, st: os.stat_result) -> None:
    _chown(lambda: os.chown(name, st.st_uid, st.st_gid, dir_fd=dst, follow_symlinks=False))
    os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dst, follow_symlinks=False)


def _node_attributes(dst: int, name: str, st: os.stat_result) -> None:
    owned = _chown(
        lambda: os.chown(name, st.st_uid, st.st_gid, dir_fd=dst, follow_symlinks=False))
    fchmod_nofollow(dst, name, _mode(st, owned))
    os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dst, follow_symlinks=False)


def set_aside(volumes: str, name: str) -> str | None:
    """Rename the volume out of its name (the first step of removing it); the new path,
    or None if it had no directory."""
    aside = os.path.join(volumes, f"{REMOVED_PREFIX}{name}-{uuid.uuid4().hex[:12]}")
    try:
        os.rename(os.path.join(volumes, name), aside)
    except FileNotFoundError:
        return None
    return aside


def put_back(volumes: str, name: str, aside: str | None) -> None:
    """Undo ``set_aside`` (its removal could not be recorded)."""
    if aside is not None:
        os.rename(aside, os.path.join(volumes, name))


def sweep(volumes: str) -> int:
    """Delete volumes set aside by removals (ones a crash cut short too); how many."""
    try:
        names = [n for n in os.listdir(volumes) if n.startswith(REMOVED_PREFIX)]
    except FileNotFoundError:
        return 0
    for n in names:
        remove_tree(os.path.join(volumes, n))
    return len(names)
