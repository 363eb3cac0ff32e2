"""Delayed work: "run this at time T" on one thread, with cancellation by key.

The restart scheduler (backoffs, retries after a store error) and the health monitor
(the next probe of each container) both wait for due work. A waiting item costs a
heap entry here, not a thread, so a crash-looping container or a thousand checked
ones cost a thousand entries and one thread.

An item scheduled under a key replaces the one pending under that key, and
``cancel`` drops it: the key is a container's schedule (its next probe, its next
ask), so a newer schedule or an exit ends the older one. Replaced and cancelled
entries are dropped lazily when they come due, and the heap is compacted once they
are most of it, so rescheduling the same keys forever keeps it bounded by the live
entries.

Actions run one at a time on the queue's thread, in due order (ties in the order
they were scheduled); an action that raises is logged and the queue goes on.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Hashable

log = logging.getLogger("berth.delays")

Action = Callable[[], object]

_COMPACT_MIN = 64
"""Stale entries tolerated before a compaction is considered (small heaps never pay)."""


class Delays:
    """One thread that runs actions when they are due (``time.monotonic`` clock)."""

    def __init__(self, name: str) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Hashable | None, Action]] = []
        self._keys: dict[Hashable, int] = {}
        """The sequence number of the live entry under each key."""
        self._stale = 0
        self._seq = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Begin running due actions (those scheduled before are kept until then)."""
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Stop: pending actions are dropped, one running finishes (up to ``timeout``)."""
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._keys.clear()
            self._cond.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def after(self, delay: float, action: Action, *, key: Hashable | None = None) -> bool:
        """Run ``action`` ``delay`` seconds from now; False once the queue is closed."""
        return self.at(time.monotonic() + max(0.0, delay), action, key=key)

    def at(self, when: float, action: Action, *, key: Hashable | None = None) -> bool:
        """Run ``action`` at monotonic time ``when``, replacing what ``key`` held."""
        with self._cond:
            if self._closed:
                return False
            self._seq += 1
            if key is not None:
                if key in self._keys:
                    self._stale += 1
                self._keys[key] = self._seq
            heapq.heappush(self._heap, (when, self._seq, key, action))
            self._compact()
            self._cond.notify_all()
            return True

    def cancel(self, key: Hashable) -> bool:
        """Drop what is pending under ``key``; False if nothing was."""
        with self._cond:
            if self._keys.pop(key, None) is None:
                return False
            self._stale += 1
            self._compact()
            return True

    def pending(self, key: Hashable) -> bool:
        with self._cond:
            return key in self._keys

    def __len__(self) -> int:
        """Live entries (replaced and cancelled ones not counted)."""
        with self._cond:
            return len(self._heap) - self._stale

    def _live(self, seq: int, key: Hashable | None) -> bool:
        return key is None or self._keys.get(key) == seq

    def _compact(self) -> None:
        if self._stale > _COMPACT_MIN and self._stale * 2 > len(self._heap):
            self._heap = [e for e in self._heap if self._live(e[1], e[2])]
            heapq.heapify(self._heap)
            self._stale = 0

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not (self._heap
                                                and self._heap[0][0] <= time.monotonic()):
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(wait)
                if self._closed:
                    return
                _when, seq, key, action = heapq.heappop(self._heap)
                if not self._live(seq, key):
                    self._stale -= 1
                    continue
                if key is not None:
                    del self._keys[key]
            try:
                action()
            except Exception:
                log.exception("a delayed action failed")
