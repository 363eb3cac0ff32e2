"""Reads of the log: by stream, by global position, by filter, and in bulk for replays.

Bulk reads page by position (keyset) instead of holding one cursor open: each page is
a short read, so a replay of millions of events neither pins an old snapshot on
PostgreSQL nor blocks a SQLite checkpoint for its whole duration.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Connection, Engine, Select, func, select, type_coerce

from engine import events as ev
from engine.errors import InvalidArgument
from engine.store.db import translated
from engine.store.mapper import Mapper
from engine.store.schema import events, to_micros

PAGE = 5000

# The decode path wants plain values: recorded_at as raw micros skips the TypeDecorator.
COLUMNS = (
    events.c.position, events.c.stream, events.c.stream_version, events.c.type,
    events.c.schema_version, events.c.data,
    type_coerce(events.c.recorded_at, BigInteger).label("recorded_at"),
    events.c.causation_id, events.c.correlation_id, events.c.actor, events.c.node,
)


class Reader:
    def __init__(self, engine: Engine, mapper: Mapper) -> None:
        self._engine = engine
        self._mapper = mapper

    def _run(self, query: Select[tuple[object, ...]], action: str) -> list[ev.RecordedEvent]:
        decode = self._mapper.from_values
        with translated(action), self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [decode(row) for row in rows]

    def read_stream(self, stream: str, from_version: int = 1) -> list[ev.RecordedEvent]:
        query = (select(*COLUMNS)
                 .where(events.c.stream == stream, events.c.stream_version >= from_version)
                 .order_by(events.c.stream_version))
        return self._run(query, "read stream")

    def read_all(self, from_position: int = 1,
                 limit: int | None = None) -> list[ev.RecordedEvent]:
        """Events at ``from_position`` and after, in log order (inclusive, so a
        subscriber that has seen position P asks for P + 1)."""
        if limit is not None and limit <= 0:
            raise InvalidArgument("limit must be positive")
        query = (select(*COLUMNS).where(events.c.position >= from_position)
                 .order_by(events.c.position).limit(limit))
        return self._run(query, "read all")

    def query(self, container: str | None = None, types: Sequence[str] | None = None,
              since: datetime | None = None, until: datetime | None = None,
              newest_first: bool = False, limit: int | None = None, after: int = 0,
              ) -> list[ev.RecordedEvent]:
        """The ``berth events`` filter: one container, some types, a time window;
        ``after`` (a position) pages through it without re-reading earlier rows."""
        if types is not None:
            for name in types:
                ev.event_class(name)  # refuses unknown types with InvalidArgument
        query = select(*COLUMNS)
        if after > 0:
            query = query.where(events.c.position > after)
        if container is not None:
            query = query.where(events.c.stream == container)
        if types is not None:
            query = query.where(events.c.type.in_(list(types)))
        if since is not None:
            query = query.where(events.c.recorded_at >= to_micros(since))
        if until is not None:
            query = query.where(events.c.recorded_at <= to_micros(until))
        order = events.c.position.desc() if newest_first else events.c.position
        return self._run(query.order_by(order).limit(limit), "query events")

    def max_position(self) -> int:
        with translated("max position"), self._engine.connect() as conn:
            value = conn.execute(select(func.max(events.c.position))).scalar()
        return 0 if value is None else int(value)

    def iter_all(self, *, from_position: int = 1, to_position: int | None = None,
                 until: datetime | None = None, stream: str | None = None,
                 page: int = PAGE, conn: Connection | None = None,
                 ) -> Iterator[ev.RecordedEvent]:
        """Every event in log order within the bounds, a page at a time."""
        decode = self._mapper.from_values
        for rows in self.iter_rows(from_position=from_position, to_position=to_position,
                                   until=until, stream=stream, page=page, conn=conn):
            for row in rows:
                yield decode(row)

    def iter_rows(self, *, from_position: int = 1, to_position: int | None = None,
                  until: datetime | None = None, stream: str | None = None,
                  page: int = PAGE, conn: Connection | None = None,
                  ) -> Iterator[list[tuple[Any, ...]]]:
        """Raw pages of event rows (column order of ``COLUMNS``), for replays and for
        benchmarks that measure decoding apart from reading. With ``conn``, pages are
        read inside that connection's transaction (a rebuild reads under its lock)."""
        cursor = from_position
        while True:
            query = select(*COLUMNS).where(events.c.position >= cursor)
            if to_position is not None:
                query = query.where(events.c.position <= to_position)
            if until is not None:
                query = query.where(events.c.recorded_at <= to_micros(until))
            if stream is not None:
                query = query.where(events.c.stream == stream)
            query = query.order_by(events.c.position).limit(page)
            with translated("replay"):
                if conn is not None:
                    rows = [tuple(r) for r in conn.execute(query)]
                else:
                    with self._engine.connect() as own:
                        rows = [tuple(r) for r in own.execute(query)]
            if not rows:
                return
            yield rows
            if len(rows) < page:
                return
            cursor = int(rows[-1][0]) + 1
