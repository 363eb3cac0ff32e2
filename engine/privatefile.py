"""Files written from the event log are private (0600) from their first byte.

The log holds what containers were run with: ``-e DB_PASSWORD=...`` is in the payload
of ``container.created``. So an export, a backup, a proof (it carries its row's bytes)
or a head is readable by its owner only, whatever the umask, as ``berth db backup``
has always written.

``private_output`` writes a new file under a temporary name in the target's directory
(``mkstemp``: ``O_EXCL``, mode 0600) and renames it onto the target once complete. So
the file never exists with wider permissions; an existing file at that name (a hard
link to another file included) is replaced, never written through; and a reader never
finds half an export under the final name. A name that is not a regular file is not
replaced: a device, a pipe or a terminal (``/dev/null``, ``/dev/stdout`` on a pipe)
is written to, as it keeps nothing; a symbolic link to a file is refused, since
following it would write through someone's link and replacing it could be replacing
``/dev/stdout`` itself.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final, TextIO

from engine.errors import InvalidArgument

PRIVATE: Final = 0o600


@contextmanager
def private_output(path: str | os.PathLike[str], *,
                   newline: str | None = None) -> Iterator[TextIO]:
    """A text file to write ``path`` with, private, put in place when the block ends
    without an error (and removed, leaving ``path`` as it was, when it raises)."""
    target = os.fspath(path)
    if "\0" in target:
        raise InvalidArgument("the output path holds a NUL byte")
    try:
        here = os.lstat(target)
    except FileNotFoundError:
        here = None
    except OSError as exc:
        raise InvalidArgument(f"cannot write {target}: {exc.strerror}") from None
    if here is not None and not stat.S_ISREG(here.st_mode):
        with _stream(target) as f:
            yield f
        return
    directory = os.path.dirname(os.path.abspath(target))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", dir=directory)
    except OSError as exc:
        raise InvalidArgument(f"cannot write {target}: {exc.strerror}") from None
    try:
        os.fchmod(fd, PRIVATE)  # mkstemp's mode already; said once more, explicitly
        with os.fdopen(fd, "w", newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise InvalidArgument(f"cannot write {target}: {exc.strerror}") from None
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


@contextmanager
def _stream(target: str) -> Iterator[TextIO]:
    """``target`` when it keeps nothing (a device, a pipe, a socket); refused when it
    is, or leads to, a file or a directory."""
    try:
        st = os.stat(target)
    except OSError as exc:
        raise InvalidArgument(f"cannot write {target}: {exc.strerror}") from None
    if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a symbolic link to a file"
        raise InvalidArgument(f"{target} is {kind}: name the file to write itself (or "
                              "leave out --out for standard output)")
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise InvalidArgument(f"cannot write {target}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as f:
        yield f


def write_private(path: str | os.PathLike[str], text: str) -> None:
    """``text`` as the whole of the private file ``path``."""
    with private_output(path) as f:
        f.write(text)
