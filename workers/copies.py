"""Archives of ``berth cp`` in flight, in pieces: a bus frame holds at most 1 MiB.

Copy in: ``container.copy_chunk`` pieces are staged here by transfer id (each at its
offset, so a resent piece is harmless), and the closing ``container.copy_in`` joins
them before the service records and writes anything. Copy out: the first page packs
the archive and keeps it here; the next pages are read from it, the last drops it.
Bounded: at most MAX_HELD bytes are held, and anything left for TTL seconds (a
client that went away) is dropped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from engine import commands as c
from engine.copying import CHUNK, MAX_COPY, check_archive
from engine.errors import InvalidArgument, RateLimited

MAX_HELD: Final = 2 * MAX_COPY
TTL: Final = 300.0


@dataclass
class _Held:
    data: bytearray = field(default_factory=bytearray)
    touched: float = field(default_factory=time.monotonic)


class Transfers:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in: dict[str, _Held] = {}
        self._out: dict[str, _Held] = {}

    def _expire(self, now: float) -> None:
        for table in (self._in, self._out):
            for key in [k for k, h in table.items() if now - h.touched > TTL]:
                del table[key]

    def _room(self, more: int) -> None:
        held = sum(len(h.data) for t in (self._in, self._out) for h in t.values())
        if held + more > MAX_HELD:
            raise RateLimited("too many copies in flight on this node: retry later")

    def stage(self, chunk: c.CopyChunk) -> int:
        """Put a piece at its offset; the bytes staged so far."""
        key = f"{chunk.container}/{chunk.transfer}"
        with self._lock:
            now = time.monotonic()
            self._expire(now)
            held = self._in.get(key)
            if held is None:
                held = self._in[key] = _Held()
            end = chunk.offset + len(chunk.data)
            if chunk.offset > len(held.data) or end > MAX_COPY:
                raise InvalidArgument(f"copy piece at offset {chunk.offset} does not follow "
                                      f"the {len(held.data)} bytes staged (at most {MAX_COPY})")
            self._room(max(0, end - len(held.data)))
            held.data[chunk.offset:end] = chunk.data
            held.touched = now
            return len(held.data)

    def join(self, command: c.CopyIn) -> c.CopyIn:
        """The copy with its whole archive (the staged pieces, then its own data)."""
        if command.transfer is None:
            return command
        with self._lock:
            held = self._in.pop(f"{command.container}/{command.transfer}", None)
        if held is None:
            # A resend of a copy done before (the service replays its outcome), or one
            # whose pieces are gone (the rules refuse it): either way, as it came.
            return command
        data = bytes(held.data) + command.data
        check_archive(data)
        return c.CopyIn(command.container, command.path, data)

    def page(self, key: str, offset: int, make: Callable[[], bytes]) -> tuple[bytes, int]:
        """A page of the archive ``make`` packs (once per transfer), and its size."""
        with self._lock:
            now = time.monotonic()
            self._expire(now)
            held = self._out.get(key)
        if held is None:
            if offset:
                raise InvalidArgument("no such copy in flight: start again from offset 0")
            data = make()
            with self._lock:
                self._room(len(data))
                held = self._out[key] = _Held(bytearray(data))
        page = bytes(held.data[offset:offset + CHUNK])
        size = len(held.data)
        with self._lock:
            held.touched = now
            if offset + len(page) >= size:
                self._out.pop(key, None)
        return page, size
