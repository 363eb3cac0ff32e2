"""Archives of ``berth cp`` in flight, in pieces: a bus frame holds at most 1 MiB.

Copy in: ``container.copy_chunk`` pieces are staged here by transfer id (each at its
offset, so a resent piece is harmless), and the closing ``container.copy_in`` joins
them before the service records and writes anything. Copy out: the first page packs
the archive and keeps it here; the next pages are read from it, the last drops it.
Bounded: at most MAX_HELD bytes are held, and anything left for TTL seconds (a
client that went away) is dropped.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from engine import commands as c
from engine.containers.copying import CHUNK, MAX_COPY, check_archive
from engine.errors import InvalidArgument, RateLimited

MAX_HELD: Final = 2 * MAX_COPY
TTL: Final = 300.0


@dataclass
class _Held:
    data: io.BytesIO = field(default_factory=io.BytesIO)
    """The pieces, each written at its offset. Joined with ``getvalue()``, which hands
    over the buffer itself: the archive is never held twice."""
    size: int = 0
    touched: float = field(default_factory=time.monotonic)


@dataclass
class _Packed:
    data: bytes  # as packed: pages are sliced from it, never a second copy of it
    touched: float = field(default_factory=time.monotonic)


class Transfers:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in: dict[str, _Held] = {}
        self._out: dict[str, _Packed] = {}

    def _expire(self, now: float) -> None:
        for key in [k for k, h in self._in.items() if now - h.touched > TTL]:
            del self._in[key]
        for key in [k for k, p in self._out.items() if now - p.touched > TTL]:
            del self._out[key]

    def _room(self, more: int) -> None:
        held = (sum(h.size for h in self._in.values())
                + sum(len(p.data) for p in self._out.values()))
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
            if chunk.offset > held.size or end > MAX_COPY:
                raise InvalidArgument(f"copy piece at offset {chunk.offset} does not follow "
                                      f"the {held.size} bytes staged (at most {MAX_COPY})")
            self._room(max(0, end - held.size))
            held.data.seek(chunk.offset)
            held.data.write(chunk.data)
            held.size = max(held.size, end)
            held.touched = now
            return held.size

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
        held.data.seek(held.size)
        held.data.write(command.data)
        data = held.data.getvalue()
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
                held = self._out[key] = _Packed(data)
        page = held.data[offset:offset + CHUNK]
        size = len(held.data)
        with self._lock:
            held.touched = now
            if offset + len(page) >= size:
                self._out.pop(key, None)
        return page, size
