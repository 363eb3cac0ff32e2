"""A catch-up subscription: stored events first, then live ones, gap-free.

The SUB socket connects BEFORE the first read from the store, so an event
committed during the catch-up is either in a page already read (its live copy is
dropped: position <= last delivered) or arrives live. Live events are buffered
by position; one that jumps past ``last + 1`` means the subscriber missed some
(slow joiner, a dropped message at the high-water mark, or commits published out
of order by concurrent workers), so the gap is read from the store through
``query.events``. A hole the store cannot fill within ``gap_timeout`` is skipped
with a warning (positions a failed transaction never used). When the bus is
quiet, the store is polled every ``idle_check`` seconds, which also catches the
events published before the SUB connection was complete.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Self

import zmq

from bus import endpoints as _endpoints
from bus.keys import ClientKeys, peer_socket
from bus.protocol import MAX_FRAME_SIZE, EventMessage, decode
from bus.results import container_of
from engine.errors import ProtocolError

log = logging.getLogger(__name__)

Fetch = Callable[[int, int], tuple[list[EventMessage], int]]
"""(after, limit) -> (events with position > after in order, head position)."""


class Subscription(Iterator[EventMessage]):
    """Iterate over events from a position on; use from one thread; close() it."""

    def __init__(
        self,
        fetch: Fetch,
        events_endpoint: str,
        *,
        from_position: int | None = None,
        types: Iterable[str] | None = None,
        container: str | None = None,
        page_size: int = 500,
        gap_timeout: float = 2.0,
        idle_check: float = 1.0,
        context: zmq.Context[Any] | None = None,
        on_close: Callable[[], None] | None = None,
        curve: ClientKeys | None = None,
    ) -> None:
        """``curve``: this subscriber's keys, used when ``events_endpoint`` is tcp
        (the broker admits only authorised publishers' keys to its event feed)."""
        self._fetch_page = fetch
        self._types = None if types is None else frozenset(types)
        self._container = container
        self._page_size = page_size
        self._gap_timeout = gap_timeout
        self._idle_check = idle_check
        self._on_close = on_close
        self._ready: deque[EventMessage] = deque()
        self._live: dict[int, EventMessage] = {}
        self._gap_since: float | None = None
        self._last_fetch = 0.0
        ctx = context or zmq.Context.instance()
        self._sub = peer_socket(ctx, zmq.SUB, _endpoints.split(events_endpoint)[0], curve,
                                max_message=4 * MAX_FRAME_SIZE)
        self._sub.setsockopt(zmq.RCVHWM, 100_000)
        self._sub.setsockopt(zmq.SUBSCRIBE, b"")  # all types: gaps are seen by position
        # A Binary Star pair: both feeds at once; only the active broker publishes,
        # and positions make a switch seamless (gaps are fetched, repeats dropped).
        for endpoint in _endpoints.split(events_endpoint):
            self._sub.connect(endpoint)
        try:
            if from_position is None:
                _, head = self._fetch_page(0, 1)  # only the head matters here
                self.last_position = head
            else:
                self.last_position = max(0, from_position - 1)
            self._catch_up()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ public

    def get(self, timeout: float | None = None) -> EventMessage | None:
        """The next matching event, or None when ``timeout`` seconds pass first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ready:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return None
            wait = self._idle_check if self._gap_since is None else 0.05
            if deadline is not None:
                wait = min(wait, deadline - now)
            if self._sub.poll(max(0, int(wait * 1000)), zmq.POLLIN):
                self._receive()
            elif time.monotonic() - self._last_fetch >= self._idle_check:
                self._catch_up()
            self._advance()
        return self._ready.popleft()

    def __next__(self) -> EventMessage:
        event = self.get(None)
        assert event is not None  # get(None) waits until there is one
        return event

    def __iter__(self) -> Self:
        return self

    def close(self) -> None:
        self._sub.close(linger=0)
        if self._on_close is not None:
            self._on_close()
            self._on_close = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _deliver(self, event: EventMessage) -> None:
        """Advance past one event; queue it if it matches the filters."""
        self.last_position = event.position
        if self._types is not None and event.type not in self._types:
            return
        if self._container is not None and container_of(event) != self._container:
            return
        self._ready.append(event)

    def _catch_up(self) -> None:
        """Read stored events after the last position until a short page."""
        self._last_fetch = time.monotonic()
        while True:
            events, _head = self._fetch_page(self.last_position, self._page_size)
            for event in events:
                if event.position > self.last_position:
                    self._deliver(event)
            if len(events) < self._page_size:
                break
        for position in [p for p in self._live if p <= self.last_position]:
            del self._live[position]

    def _receive(self) -> None:
        while True:
            try:
                frames = self._sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msg = decode(frames[-1])
            except ProtocolError as exc:
                log.warning("dropped a bad event frame: %s", exc)
                continue
            if isinstance(msg, EventMessage) and msg.position > self.last_position:
                self._live[msg.position] = msg

    def _advance(self) -> None:
        """Deliver buffered live events in order; fill a gap from the store."""
        fetched = False
        while self._live:
            following = self.last_position + 1
            if following in self._live:
                self._deliver(self._live.pop(following))
                self._gap_since = None
                continue
            if not fetched:
                fetched = True
                before = self.last_position
                self._catch_up()
                if self.last_position != before:
                    self._gap_since = None
                continue
            lowest = min(self._live)
            now = time.monotonic()
            if self._gap_since is None:
                self._gap_since = now
                return
            if now - self._gap_since < self._gap_timeout:
                return
            log.warning("events %d..%d never appeared; skipping the hole",
                        following, lowest - 1)
            self.last_position = lowest - 1
        self._gap_since = None
