"""One lock per container: commands and the exit monitor append to a stream in turn.

The service reads a container's version, acts, and appends at that version; two
threads doing that at once for one container would conflict. Holding the
container's lock around read-decide-append keeps the order the runtime saw
(started is always before exited).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class ContainerLocks:
    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.RLock] = {}

    @contextmanager
    def hold(self, container_id: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(container_id, threading.RLock())
        with lock:
            yield

    def forget(self, container_id: str) -> None:
        with self._guard:
            self._locks.pop(container_id, None)
