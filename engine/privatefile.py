"""Files written from the event log are private (0600) from their first byte.

The log holds what containers were run with: ``-e DB_PASSWORD=...`` is in the payload
of ``container.created``. So an export, a backup, a proof (it carries its row's bytes)
or a head is readable by its owner only, whatever the umask, as ``berth db backup``
has always written.

``private_output`` writes a new file under a temporary name in the target's directory
(``mkstemp``: ``O_EXCL``, mode 0600) and renames it onto the target once complete. So
the file never exists with wider permissions; an existing file, a symbolic link or a
hard link to another file at that name is replaced, never written through; and a
reader never finds half an export under the final name.
"""

from __future__ import annotations

import os
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


def write_private(path: str | os.PathLike[str], text: str) -> None:
    """``text`` as the whole of the private file ``path``."""
    with private_output(path) as f:
        f.write(text)
