"""A file on this host that a user named (a Compose file, an env file), read bounded.

Only a regular file is read: a FIFO would block the reader for ever, a device could do
anything when opened (a watchdog starts its timer, a tape rewinds), ``/dev/zero``
never ends. The path is opened ``O_PATH`` first, which opens nothing for I/O, and is
checked on that descriptor; the same inode is then opened for reading through
``/proc/self/fd`` (as ``engine.inroot`` does inside a container's tree), so a file
swapped for a FIFO in between is never read.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess

from engine.errors import InvalidArgument


def read_regular(path: str, limit: int, name: str) -> bytes:
    """At most ``limit`` bytes of the regular file ``path``; ``name`` says what it is
    in the sentence of a refusal (``compose file x.yaml``), which never quotes the
    file's content."""
    try:
        probe = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        reason = exc.strerror if isinstance(exc, OSError) else "invalid path"
        raise InvalidArgument(f"cannot read {name}: {reason}") from None
    return read_opened(probe, limit, name)


def read_opened(probe: int, limit: int, name: str) -> bytes:
    """``read_regular`` for a path already opened ``O_PATH`` as ``probe`` (which this
    closes): how ``engine.inroot`` reads a file it resolved inside a container's tree."""
    try:
        if not stat.S_ISREG(os.fstat(probe).st_mode):
            raise InvalidArgument(f"{name} is not a regular file")
        try:
            fd = os.open(f"/proc/self/fd/{probe}",
                         os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
        except OSError as exc:
            raise InvalidArgument(f"cannot read {name}: {exc.strerror}") from None
    finally:
        os.close(probe)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # the same inode, reopened
            raise InvalidArgument(f"{name} is not a regular file")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            try:
                chunk = os.read(fd, min(1 << 16, limit + 1 - size))
            except OSError as exc:  # EISDIR cannot happen; EIO on a failing disk can
                raise InvalidArgument(f"cannot read {name}: {exc.strerror}") from None
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise InvalidArgument(f"{name} is larger than {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def remove_tree(path: str) -> None:
    """Remove the tree ``path`` whatever it holds, as ``shutil.rmtree(path,
    ignore_errors=True)`` does, even when it nests deeper than Python recurses: a
    container makes what it likes in its volumes and its own filesystem, and
    ``rmtree`` (which recurses once per level) ended in a RecursionError there. GNU
    ``rm`` walks any depth, by descriptor, and stays on the tree's file system."""
    try:
        shutil.rmtree(path, ignore_errors=True)
        return
    except RecursionError:
        pass
    subprocess.run(["rm", "-rf", "--one-file-system", "--", path], check=False,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
