"""A minimal inotify binding (ctypes) so exit files are noticed the moment conmon writes them.

The stdlib has no inotify; polling the exits directory on a slow period would
delay every ``exited`` event by that period.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import selectors
import struct
from collections.abc import Iterator

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_HEADER = struct.Struct("iIII")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]


class Inotify:
    """One inotify instance watching one directory for completed files."""

    def __init__(self, directory: str, mask: int = IN_CLOSE_WRITE | IN_MOVED_TO) -> None:
        fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self.fd: int = fd
        if _libc.inotify_add_watch(fd, os.fsencode(directory), mask) < 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise OSError(err, f"inotify_add_watch {directory}: {os.strerror(err)}")

    def fileno(self) -> int:
        return self.fd

    def read(self, timeout: float | None) -> Iterator[str]:
        """Yield the names of files completed since the last read (waits up to ``timeout``)."""
        # poll, not select: a busy worker's descriptor numbers pass 1024
        with selectors.PollSelector() as sel:
            sel.register(self.fd, selectors.EVENT_READ)
            if not sel.select(timeout):
                return
        try:
            buf = os.read(self.fd, 64 * 1024)
        except OSError as exc:
            if exc.errno == errno.EAGAIN:
                return
            raise
        offset = 0
        while offset + _HEADER.size <= len(buf):
            _wd, _mask, _cookie, length = _HEADER.unpack_from(buf, offset)
            raw = buf[offset + _HEADER.size : offset + _HEADER.size + length]
            offset += _HEADER.size + length
            name = raw.rstrip(b"\0").decode(errors="replace")
            if name:
                yield name

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
