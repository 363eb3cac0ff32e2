"""Reading conmon's ``k8s-file`` logs: one record per line,
``<RFC 3339 nano time> <stdout|stderr> <P|F> <data>``, where ``P`` marks a piece of a
line that goes on in the next record and ``F`` a line's last piece.

Reads are bounded (``limit`` bytes at a time, whole lines only), start where the
caller asks (the last N lines, or an offset), survive conmon truncating the file
(``--log-size-max``: the reader starts again from the top) and filter by time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime

_STREAMS = {b"stdout": 1, b"stderr": 2}
_BLOCK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Record:
    time: str
    fd: int
    partial: bool
    data: bytes

    def when(self) -> datetime | None:
        try:
            return datetime.fromisoformat(self.time)
        except ValueError:
            return None


def parse(line: bytes) -> Record | None:
    """One log line (without its newline) as a Record; None if it is not one."""
    parts = line.split(b" ", 3)
    if len(parts) < 3 or parts[1] not in _STREAMS or parts[2] not in (b"P", b"F"):
        return None
    data = parts[3] if len(parts) == 4 else b""
    return Record(parts[0].decode("ascii", "replace"), _STREAMS[parts[1]], parts[2] == b"P",
                  data)


def tail_offset(path: str, lines: int) -> int:
    """The offset where the last ``lines`` whole lines of the file begin (read from
    the end, a block at a time)."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below; the loop needs the handle
    except FileNotFoundError:
        return 0
    with f:
        end = f.seek(0, os.SEEK_END)
        if lines <= 0:
            return end
        pos, seen = end, 0
        while pos > 0:
            start = max(0, pos - _BLOCK)
            f.seek(start)
            block = f.read(pos - start)
            # A newline ending the file ends the last line; it does not start one.
            stop = len(block) - 1 if pos == end and block.endswith(b"\n") else len(block)
            i = stop
            while True:
                i = block.rfind(b"\n", 0, i)
                if i < 0:
                    break
                seen += 1
                if seen == lines:
                    return start + i + 1
            pos = start
        return 0


class LogReader:
    """Whole records from ``offset`` on, ``limit`` bytes at a time."""

    def __init__(self, path: str, offset: int = 0) -> None:
        self.path = path
        self.offset = offset
        self._file: tuple[int, int] | None = None
        """The (device, inode) the offset is in: conmon's ``--log-size-max`` renames a
        new, empty file over the log, which may have grown past the offset again by the
        time it is read."""

    def read(self, limit: int) -> list[Record]:
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                if self._file is not None and self._file != (st.st_dev, st.st_ino):
                    self.offset = 0  # conmon replaced the log: the new one from its top
                self._file = (st.st_dev, st.st_ino)
                size = f.seek(0, os.SEEK_END)
                if size < self.offset:  # conmon truncated the log: start over
                    self.offset = 0
                f.seek(self.offset)
                data = f.read(limit)
        except FileNotFoundError:
            return []
        cut = data.rfind(b"\n") + 1
        if cut == 0 and len(data) >= limit:
            cut = len(data)  # one line longer than the limit: pass it in pieces
        self.offset += cut
        records = []
        for line in data[:cut].split(b"\n"):
            record = parse(line)
            if record is not None:
                records.append(record)
        return records
