"""A minimal inotify binding (ctypes) so exit files are noticed the moment conmon writes them.

The stdlib has no inotify; polling the exits directory on a slow period would
delay every ``exited`` event by that period. ``Inotify`` is one instance watching one
directory (the exit monitor's); ``SharedInotify`` is one instance that all the stream
sessions of a worker share, however many follow a log.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import selectors
import struct
import threading
import time
from collections.abc import Callable, Iterator

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_HEADER = struct.Struct("iIII")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]


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


IN_MODIFY = 0x00000002
IN_IGNORED = 0x00008000
IN_Q_OVERFLOW = 0x00004000
SHARED_MASK = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE
"""What a shared watch reports: a file written to, completed, renamed or made in the
directory (a log growing or replaced, an exit file landing)."""
MAX_WATCHES = 1024
"""Directories one worker watches at once; more are polled (each watch costs kernel
memory, and root's ``max_user_watches`` is shared by the whole host)."""
POLL_INTERVAL = 0.25
"""How often a polled watch's owner looks again (no inotify for it)."""
_RETRY_INIT = 10.0
"""How long after a refused ``inotify_init1`` the next watch tries again."""

log = logging.getLogger("berth.inotify")


class Watch:
    """One owner's interest in one directory of a ``SharedInotify``: its ``wake`` is
    called when something changes there. ``polled`` is True when inotify does not
    cover it (no instance, the watch limit, or its directory was removed): the
    owner then looks every POLL_INTERVAL instead of waiting for a wake."""

    def __init__(self, owner: SharedInotify, wd: int, wake: Callable[[], None]) -> None:
        self._owner = owner
        self.wd = wd
        self.wake = wake
        self.polled = wd < 0

    def close(self) -> None:
        if self.wd >= 0:
            self._owner._forget(self)
            self.wd = -1

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SharedInotify:
    """One inotify instance for every stream session of a worker, whatever their
    number: each ``watch`` adds the directory to the one instance (a directory watched
    twice is one kernel watch, counted), and one thread reads the events and wakes the
    watches of the directories they name.

    inotify instances are a per-user resource of the whole host (root's
    ``fs.inotify.max_user_instances``, 128 by default, shared with systemd, udev and
    every other root process): an instance per session would let a few dozen
    ``logs -f`` starve them. Past MAX_WATCHES directories, or when the kernel refuses
    an instance or a watch, watches are polled instead; nothing fails."""

    def __init__(self, max_watches: int = MAX_WATCHES) -> None:
        self.max_watches = max_watches
        self._lock = threading.Lock()
        self._fd: int = -1
        self._refused_at: float | None = None
        self._by_wd: dict[int, list[Watch]] = {}
        self._inode: dict[int, tuple[int, int]] = {}
        self._thread: threading.Thread | None = None
        self._stop_r, self._stop_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._closed = False
        self.polled = 0
        """Watches handed out as polled (for the tests and the log)."""

    @property
    def instances(self) -> int:
        """inotify instances this object holds: 0 or 1."""
        return 1 if self._fd >= 0 else 0

    def watch(self, directory: str, wake: Callable[[], None]) -> Watch:
        """A watch of ``directory`` that calls ``wake`` on each change (from the
        reader thread: it must be quick and must not block). FileNotFoundError if the
        directory does not exist."""
        with self._lock:
            if self._closed:
                raise OSError(errno.EBADF, "the shared inotify instance is closed")
            fd = self._instance()
            if fd < 0:
                return self._polled(directory, wake, "no inotify instance")
            if len(self._by_wd) >= self.max_watches and not self._watched(directory):
                return self._polled(directory, wake,
                                    f"{self.max_watches} directories watched already")
            wd = _libc.inotify_add_watch(fd, os.fsencode(directory), SHARED_MASK)
            if wd < 0:
                err = ctypes.get_errno()
                if err in (errno.ENOENT, errno.ENOTDIR):
                    raise FileNotFoundError(err, f"{directory}: {os.strerror(err)}")
                return self._polled(directory, wake, f"inotify_add_watch: {os.strerror(err)}")
            watch = Watch(self, wd, wake)
            if wd not in self._by_wd:
                with contextlib.suppress(OSError):
                    st = os.stat(directory)
                    self._inode[wd] = (st.st_dev, st.st_ino)
            self._by_wd.setdefault(wd, []).append(watch)
            return watch

    def _watched(self, directory: str) -> bool:
        """Whether the directory is watched already (adding it again costs nothing)."""
        try:
            st = os.stat(directory)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) in self._inode.values()

    def _polled(self, directory: str, wake: Callable[[], None], why: str) -> Watch:
        if not os.path.isdir(directory):
            raise FileNotFoundError(errno.ENOENT, f"{directory}: no such directory")
        if self.polled == 0:
            log.warning("polling %s every %gs: %s", directory, POLL_INTERVAL, why)
        self.polled += 1
        return Watch(self, -1, wake)

    def _instance(self) -> int:
        """The instance, made on first use (and its reader thread); -1 while the
        kernel refuses one (tried again after _RETRY_INIT)."""
        if self._fd >= 0:
            return self._fd
        now = time.monotonic()
        if self._refused_at is not None and now - self._refused_at < _RETRY_INIT:
            return -1
        fd: int = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            if self._refused_at is None:
                log.warning("inotify_init1: %s; stream sessions poll instead", os.strerror(err))
            self._refused_at = now
            return -1
        self._fd = fd
        self._refused_at = None
        self._thread = threading.Thread(target=self._read_loop, args=(fd,),
                                        name="berth-inotify", daemon=True)
        self._thread.start()
        return fd

    def _forget(self, watch: Watch) -> None:
        with self._lock:
            watches = self._by_wd.get(watch.wd)
            if watches is None or watch not in watches:
                return  # its directory went (IN_IGNORED) and the kernel dropped the watch
            watches.remove(watch)
            if not watches:
                del self._by_wd[watch.wd]
                self._inode.pop(watch.wd, None)
                if self._fd >= 0:
                    _libc.inotify_rm_watch(self._fd, watch.wd)

    def _read_loop(self, fd: int) -> None:
        with selectors.PollSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            sel.register(self._stop_r, selectors.EVENT_READ)
            while True:
                ready = {key.fd for key, _ in sel.select(1.0)}
                if self._stop_r in ready or self._closed:
                    return
                if fd not in ready:
                    continue
                try:
                    buf = os.read(fd, 64 * 1024)
                except BlockingIOError:
                    continue
                except OSError:
                    return
                self._dispatch(buf)

    def _dispatch(self, buf: bytes) -> None:
        """Wake each watch of the directories the events name, once per batch."""
        changed: set[int] = set()
        gone: set[int] = set()
        everyone = False
        offset = 0
        while offset + _HEADER.size <= len(buf):
            wd, mask, _cookie, length = _HEADER.unpack_from(buf, offset)
            offset += _HEADER.size + length
            if mask & IN_Q_OVERFLOW:
                everyone = True
            elif mask & IN_IGNORED:
                gone.add(wd)
            else:
                changed.add(wd)
        with self._lock:
            if everyone:
                woken = [w for ws in self._by_wd.values() for w in ws]
            else:
                woken = [w for wd in changed | gone for w in self._by_wd.get(wd, ())]
            for wd in gone:  # the kernel dropped it (its directory was removed)
                self._inode.pop(wd, None)
                for w in self._by_wd.pop(wd, ()):
                    w.polled = True
        for w in woken:
            try:
                w.wake()
            except Exception:  # noqa: BLE001 - one owner's failure is not the others'
                log.exception("waking an inotify watch failed")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for ws in self._by_wd.values():
                for w in ws:
                    w.polled = True
            self._by_wd.clear()
            self._inode.clear()
        with contextlib.suppress(OSError):
            os.write(self._stop_w, b"\0")
        if self._thread is not None:
            self._thread.join(5)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        os.close(self._stop_r)
        os.close(self._stop_w)
