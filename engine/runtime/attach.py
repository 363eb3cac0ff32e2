"""conmon's stdio endpoints, as libpod's ``oci_conmon_attach_linux.go`` uses them.

conmon makes the two endpoints below in the bundle of each container or exec session
(``-b``), and links ``<sockets dir>/<uuid>`` to that bundle (``--socket-dir-path``), a
name it makes one byte shorter when it would be exactly 107 bytes: berth reaches them
through the bundle, whose name is sure.

* ``attach``: a SOCK_SEQPACKET unix socket. Each packet read from it is one chunk of
  output whose first byte names the pipe (``STDOUT``/``STDERR``); bytes written to
  it go to the process's stdin (with ``-i``, or the terminal with ``-t``); a
  ``shutdown(SHUT_WR)`` closes that stdin. conmon writes to every attached socket
  and waits for slow readers, so a reader that stops reading holds the container
  back (back-pressure) instead of making conmon buffer.
* ``ctl``: a fifo taking ``1 HEIGHT WIDTH\\n`` to resize the terminal.

The socket path can exceed the 108 bytes of ``sun_path``, so it is opened through
``/proc/self/fd`` of an ``O_PATH`` descriptor, as libpod does.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import threading
import time

from engine.errors import NotFound, RuntimeFailure

STDIN = 1
STDOUT = 2
STDERR = 3
BUFFER = 8192 + 1
"""conmon's STDIO_BUF_SIZE plus the pipe byte: the largest packet it sends."""
RESIZE_EVENT = 1
"""The ctl fifo's message kind for a terminal resize."""


def connect(directory: str, timeout: float = 5.0) -> socket.socket:
    """Connect to the ``attach`` socket in conmon's ``directory`` (waiting up to
    ``timeout`` for conmon to create it)."""
    path = os.path.join(directory, "attach")
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            break
        except FileNotFoundError:
            if time.monotonic() >= deadline:
                raise NotFound(f"no attach socket at {path}: is the process running?") \
                    from None
            time.sleep(0.005)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        sock.connect(f"/proc/self/fd/{fd}")
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            raise NotFound(f"the attach socket at {path} refuses connections: the process "
                           "has ended") from None
        raise RuntimeFailure(f"cannot attach to {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    return sock


def resize(directory: str, height: int, width: int, timeout: float = 1.0) -> None:
    """Ask conmon to set the terminal's size through its ``ctl`` fifo."""
    if not (0 < height < 65536 and 0 < width < 65536):
        return
    path = os.path.join(directory, "ctl")
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            break
        except OSError as exc:
            # ENXIO: conmon has not opened its end yet; ENOENT: not created yet.
            if exc.errno not in (errno.ENXIO, errno.ENOENT) or time.monotonic() >= deadline:
                return  # a terminal size is a courtesy, never a failure
            time.sleep(0.005)
    with contextlib.suppress(OSError):
        os.write(fd, f"{RESIZE_EVENT} {height} {width}\n".encode())
    os.close(fd)



class Parked:
    """Attach sockets connected for exec sessions before their process ran, kept for
    the session's stream reader to take (``take``). One not taken within ``ttl`` is
    closed: conmon then stops writing to it (the output stays in the log) instead of
    holding the process back for a reader that never came."""

    def __init__(self, ttl: float = 30.0) -> None:
        self.ttl = ttl
        self._socks: dict[str, socket.socket] = {}
        self._cond = threading.Condition()

    def park(self, key: str, sock: socket.socket) -> None:
        with self._cond:
            old = self._socks.pop(key, None)
            self._socks[key] = sock
            self._cond.notify_all()
        if old is not None:
            old.close()
        timer = threading.Timer(self.ttl, self._expire, (key, sock))
        timer.daemon = True
        timer.start()

    def take(self, key: str, timeout: float) -> socket.socket | None:
        """The socket parked under ``key``, waiting up to ``timeout`` for it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while key not in self._socks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self._socks.pop(key)

    def _expire(self, key: str, sock: socket.socket) -> None:
        with self._cond:
            if self._socks.get(key) is not sock:
                return  # taken (or replaced) meanwhile
            del self._socks[key]
        sock.close()

    def __len__(self) -> int:
        with self._cond:
            return len(self._socks)
