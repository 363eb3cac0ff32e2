"""Paths inside an untrusted tree, resolved by the kernel inside that tree.

An image's layers, a container's root filesystem and a running container's own view
of it are hostile: any directory in them can become a symbolic link to a host path
between the moment berth looks and the moment it acts (a container can swap them in
a loop with ``renameat2(RENAME_EXCHANGE)``). Checking a path on the host and then
using it is therefore never safe. Everything here goes through one directory file
descriptor (the tree's root) and ``openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)``,
which makes the kernel treat that descriptor as ``/`` for the whole walk: an
absolute link restarts at it, ``..`` stops at it, and a race with a rename is
refused (``EAGAIN``, retried here) instead of escaping. runc's ``securejoin`` and
containers/storage do the same.

What is done with the result is done on the opened object: a new entry is made
relative to its opened parent directory (``mkdirat``, ``symlinkat``, ``openat`` with
``O_NOFOLLOW | O_EXCL``), attributes are set through the descriptor (``fchmod``,
``fchown``, ``futimens``) or with ``AT_SYMLINK_NOFOLLOW``, and a file expected to be
regular is refused when it is anything else (a FIFO would block the reader forever,
a device could do anything).

``Root.of_process(pid)`` opens ``/proc/PID/root``: the container's own root in its
own mount namespace, so its volumes, tmpfs and bind mounts are seen exactly as its
processes see them (as ``podman cp`` does).
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from typing import Final

from engine.errors import InvalidArgument, NotFound
from engine.hostfiles import read_opened

_SYS_OPENAT2: Final = 437
"""The same number on every architecture Linux added it to (5.6)."""
RESOLVE_NO_MAGICLINKS: Final = 0x02
RESOLVE_IN_ROOT: Final = 0x10
_RESOLVE: Final = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS
_EAGAIN_TRIES: Final = 64
MAX_PATH: Final = 4096


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


class OutsideRoot(InvalidArgument):
    """A path that cannot be resolved inside its root (too many links, a magic link)."""


def check_path(path: str) -> str:
    """A container path as given: absolute, no NUL, bounded; the same string back."""
    if not isinstance(path, str) or "\0" in path:
        raise InvalidArgument(f"path {path!r} must be a string without NUL bytes")
    if not path.startswith("/"):
        raise InvalidArgument(f"container path {path!r} must be absolute")
    if len(path.encode("utf-8", "surrogateescape")) > MAX_PATH:
        raise InvalidArgument(f"container path is longer than {MAX_PATH} bytes")
    return path


def openat2(dirfd: int, path: str, flags: int, mode: int = 0,
            resolve: int = _RESOLVE) -> int:
    """``openat2(2)``: a new descriptor (close-on-exec) for ``path`` under ``dirfd``."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode if flags & (os.O_CREAT | os.O_TMPFILE) else 0,
                   resolve)
    raw = os.fsencode(path)
    for _ in range(_EAGAIN_TRIES):
        fd = _syscall(_SYS_OPENAT2, ctypes.c_int(dirfd), ctypes.c_char_p(raw),
                      ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err == errno.EINTR or err == errno.EAGAIN:
            continue  # a rename or mount raced the walk: the kernel asks for a retry
        raise OSError(err, os.strerror(err), path)
    raise OSError(errno.EAGAIN, "the tree kept changing while it was walked", path)


def split(path: str) -> tuple[str, str]:
    """(parent, last component) of a container path; the root's last component is ''.
    ``..`` and ``.`` as the last component are folded into the parent."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if parts and parts[-1] == "..":
        # 'a/b/..' names a directory: the kernel resolves it, inside the root
        return "/" + "/".join(parts), ""
    if not parts:
        return "/", ""
    return "/" + "/".join(parts[:-1]), parts[-1]


class Root:
    """An untrusted directory tree, opened once; every path below is resolved inside it."""

    def __init__(self, fd: int, label: str) -> None:
        self.fd = fd
        self.label = label

    @classmethod
    def open(cls, path: str) -> Root:
        """The tree at host path ``path`` (berth's own: a rootfs, a layer directory)."""
        try:
            fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound(f"no such directory: {path}") from None
        return cls(fd, path)

    @classmethod
    def of_process(cls, pid: int) -> Root:
        """The root a running process sees, with the mounts of its mount namespace."""
        try:
            fd = os.open(f"/proc/{int(pid)}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, ProcessLookupError):
            raise NotFound(f"process {pid} is gone") from None
        return cls(fd, f"/proc/{pid}/root")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Root:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open_path(self, path: str, flags: int = os.O_RDONLY, mode: int = 0) -> int:
        """A descriptor for ``path`` resolved inside the root (links followed inside
        it, the last one too unless ``flags`` has ``O_NOFOLLOW``)."""
        try:
            return openat2(self.fd, path, flags, mode)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise OutsideRoot(
                    f"too many symbolic links (or a magic link) in {path!r}") from None
            raise

    def opendir(self, path: str) -> int:
        """An ``O_RDONLY`` directory descriptor for ``path`` (NotFound if missing or
        not a directory)."""
        try:
            return self.open_path(path, os.O_RDONLY | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"no such directory: {path}") from None

    def parent(self, path: str) -> tuple[int, str]:
        """(descriptor of the parent directory, last component) for acting on the last
        component itself without following it: pass both to ``os`` calls as
        ``name, dir_fd=fd`` with ``follow_symlinks=False``. The caller closes ``fd``."""
        parent, name = split(path)
        fd = self.opendir(parent)
        if not name:
            return fd, "."
        return fd, name

    def lstat(self, path: str) -> os.stat_result | None:
        """The entry at ``path`` itself (a link is not followed), None if missing."""
        fd, name = self.parent(path)
        try:
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        finally:
            os.close(fd)

    def stat(self, path: str) -> os.stat_result | None:
        """The entry ``path`` leads to, links followed inside the root; None if missing."""
        try:
            fd = self.open_path(path, os.O_PATH)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)

    def read_regular(self, path: str, limit: int) -> bytes | None:
        """The content of a regular file at ``path`` (links followed inside the root),
        at most ``limit`` bytes; None if there is none. A FIFO, device or socket there
        is refused unread (``O_PATH`` first, so opening it runs nothing)."""
        try:
            probe = self.open_path(path, os.O_PATH)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return read_opened(probe, limit, f"{path} in {self.label}")


def fchmod_nofollow(dirfd: int, name: str, mode: int) -> None:
    """chmod of the entry ``name`` in ``dirfd`` itself; a symbolic link is left alone
    (Linux links have no mode). Done through an ``O_PATH`` descriptor so neither a
    link swapped in nor a FIFO or device is ever opened for I/O."""
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
    try:
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            return
        os.chmod(f"/proc/self/fd/{fd}", mode)
    finally:
        os.close(fd)
