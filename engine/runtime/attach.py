"""conmon's stdio endpoints, as libpod's ``oci_conmon_attach_linux.go`` uses them.

conmon (``--socket-dir-path``) keeps, per container or exec session, a directory
``<sockets dir>/<uuid>`` (a link to the bundle) holding:

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

