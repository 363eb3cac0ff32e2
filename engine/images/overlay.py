"""Overlay mounts: a container's root filesystem is its image's layers, read-only,
under a private upper directory (the only place its writes go). Nothing is copied,
so a container from a many-layer image starts as fast as one from a directory.

Mounts are made with the mount(2) system call (no process per mount); the layer
directories are given top first, as overlayfs wants its ``lowerdir``.

Overlays are mounted ``volatile`` (as podman does for transient containers): an
unmount then skips syncing the whole upper filesystem, which otherwise costs a few
milliseconds twice per container (in its mount namespace and on the host), and far
more while other programs write. The price: after a host crash, writes a container
had not synced itself may be lost from its upper directory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import stat
from collections.abc import Sequence
from typing import Final

from engine.errors import InvalidArgument, RuntimeFailure

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
MNT_DETACH = 2
ROOT_MODE: Final = 0o755
"""A container's ``/`` when its image gives it no mode (podman's)."""
MAX_OPTIONS = 4000
"""The kernel reads mount options from one page."""


def overlay_options(lower_top_first: Sequence[str], upper: str, work: str) -> str:
    """The mount options of an overlay (pure). Paths with a comma or a colon would be
    read as separators, so they are refused."""
    if not lower_top_first:
        raise InvalidArgument("an overlay needs at least one layer")
    for path in (*lower_top_first, upper, work):
        if not os.path.isabs(path) or any(ch in path for ch in ",:\0"):
            raise InvalidArgument(f"overlay path {path!r} must be absolute, without , or :")
    options = f"lowerdir={':'.join(lower_top_first)},upperdir={upper},workdir={work},volatile"
    if len(options) > MAX_OPTIONS:
        raise InvalidArgument(f"an image of {len(lower_top_first)} layers is too deep for one "
                              "overlay mount here (its options exceed a page)")
    return options


def is_mounted(path: str) -> bool:
    target = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split(" ")
                if len(fields) > 4 and _unescape(fields[4]) == target:
                    return True
    except OSError:
        return False
    return False


def _unescape(field: str) -> str:
    return (field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
            .replace("\\134", "\\"))


def image_root(lower_top_first: Sequence[str]) -> tuple[int, int, int]:
    """(mode, uid, gid) of an image's root directory: its top layer's. A layer root
    still 0700 is taken for one its layer gave no mode (the worker's umask 077 made
    it): it gets podman's default, ``ROOT_MODE``."""
    st = os.stat(lower_top_first[0])
    mode = stat.S_IMODE(st.st_mode)
    return (ROOT_MODE if mode == 0o700 else mode), st.st_uid, st.st_gid


def make_upper(upper: str, lower_top_first: Sequence[str]) -> None:
    """The upper directory, made with the image's root's mode and owner: overlayfs
    shows the upper directory's own as those of the container's ``/``, and one left
    to the worker's umask (0700) would shut every non-root process out of ``/etc``,
    ``/var``, ... An upper made before (a remount) keeps what the container made of it."""
    os.makedirs(os.path.dirname(upper), mode=0o700, exist_ok=True)
    try:
        os.mkdir(upper, 0o700)
    except FileExistsError:
        return
    mode, uid, gid = image_root(lower_top_first)
    fd = os.open(upper, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)  # after the chown, which would drop a set-gid bit
    finally:
        os.close(fd)


def mount_overlay(lower_top_first: Sequence[str], upper: str, work: str, target: str) -> None:
    """Mount the overlay at ``target`` (created if missing); a no-op if mounted."""
    options = overlay_options(lower_top_first, upper, work)
    for path in (work, target):
        os.makedirs(path, mode=0o700, exist_ok=True)
    make_upper(upper, lower_top_first)
    if is_mounted(target):
        return
    # overlayfs refuses a work directory a volatile mount used before (a remount after
    # a reboot) until its marker is gone.
    shutil.rmtree(os.path.join(work, "work", "incompat"), ignore_errors=True)
    if _libc.mount(b"overlay", target.encode(), b"overlay", 0, options.encode()) != 0:
        err = ctypes.get_errno()
        raise RuntimeFailure(f"cannot mount the overlay root filesystem at {target}: "
                             f"{os.strerror(err)}")


def unmount(target: str) -> None:
    """Unmount ``target`` if it is a mount point (lazily if it is busy)."""
    if not is_mounted(target):
        return
    if _libc.umount2(target.encode(), 0) == 0:
        return
    err = ctypes.get_errno()
    if err == errno.EBUSY and _libc.umount2(target.encode(), MNT_DETACH) == 0:
        return
    if err in (errno.EINVAL, errno.ENOENT):
        return
    raise RuntimeFailure(f"cannot unmount {target}: {os.strerror(err)}")
