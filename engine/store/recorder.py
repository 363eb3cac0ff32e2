"""Appends: events, the command's outcome and the read model, in one transaction.

Writers are serialized for the whole transaction (SQLite: BEGIN IMMEDIATE; PostgreSQL:
``LOCK TABLE events IN EXCLUSIVE MODE``, as pyeventsourcing's postgres recorder does).
Positions are then assigned as head + 1 under that lock, so they are contiguous and
commit in position order: a reader that reads by position never sees a later position
before an earlier one commits, which a bare sequence cannot promise. The lock also
makes the idempotency check (has this command id been recorded?) race-free. Plain
readers are not blocked (EXCLUSIVE still admits ACCESS SHARE).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, select

from engine import events as ev
from engine.errors import ConcurrencyError, InvalidArgument
from engine.projection import ContainerState, fold
from engine.store import audit, readmodel
from engine.store.db import WRITE, is_sqlite, translated
from engine.store.mapper import Mapper, pack, unpack
from engine.store.schema import events, from_micros, to_micros

MAX_STREAM_LEN = 128


@dataclass(frozen=True, slots=True)
class AppendRequest:
    """One command's events for one stream, as a handler decided them.

    ``expected_version`` is the number of events the handler saw in the stream (0 for
    a new container); None skips the check, which only failure records should do.
    """

    stream: str
    expected_version: int | None
    events: tuple[ev.Event, ...]
    command_id: str
    command_type: str
    correlation_id: str = ""
    actor: str = ""
    node: str = ""


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """What became of a command: what a retry with the same id is answered with."""

    command_id: str
    command_type: str
    stream: str
    ok: bool
    error_code: str | None
    message: str | None
    positions: tuple[int, ...]
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class _Write:
    request: AppendRequest
    error_code: str | None = None
    message: str | None = None


def _validate(req: AppendRequest) -> None:
    if not req.stream or len(req.stream) > MAX_STREAM_LEN:
        raise InvalidArgument(f"bad stream name {req.stream!r}")
    if not req.command_id or len(req.command_id) > 64:
        raise InvalidArgument(f"bad command id {req.command_id!r}")
    if req.expected_version is not None and req.expected_version < 0:
        raise InvalidArgument("expected version must be >= 0")
    for i, event in enumerate(req.events):
        if not isinstance(event, ev.Event):
            raise InvalidArgument(f"not an event: {event!r}")
        if isinstance(event, ev.ContainerCreated) and (
                req.expected_version != 0 or i != 0):
            raise InvalidArgument("container.created must open a new stream")


def _insert_sql(table: str, columns: tuple[str, ...], mark: str) -> str:
    return (f"INSERT INTO {table} ({', '.join(columns)}) "
            f"VALUES ({', '.join([mark] * len(columns))})")


class Recorder:
    """Writes to the log. One instance per store; safe to share between threads."""

    def __init__(self, engine: Engine, mapper: Mapper) -> None:
        self._engine = engine
        self._mapper = mapper
        self._sqlite = is_sqlite(engine)
        self._cache = readmodel.StateCache()
        mark = self._mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        self._insert_events = _insert_sql("events", (*audit.CONTENT, "prev_hash", "hash"), mark)
        self._known_sql = f"SELECT command_id, positions FROM commands WHERE command_id = {mark}"
        self._outcome_sql = (
            "SELECT command_id, command_type, stream, outcome, error_code, message, positions, "
            f"recorded_at FROM commands WHERE command_id = {mark}")
        self._insert_commands = _insert_sql(
            "commands", ("command_id", "command_type", "stream", "outcome", "error_code",
                         "message", "positions", "recorded_at"), mark)

    def write(self, writes: Sequence[_Write]) -> list[list[ev.RecordedEvent]]:
        for w in writes:
            _validate(w.request)
        with (translated("append"),
              self._engine.connect().execution_options(**{WRITE: True}) as conn,
              conn.begin()):
            results, states = self._write(conn, writes)
        self._cache.remember(states)  # only now: these states are committed
        return results

    def forget_states(self) -> None:
        """Drop cached read-model states (after a rebuild rewrote the rows)."""
        self._cache.clear()

    def _write(self, conn: Connection, writes: Sequence[_Write],
               ) -> tuple[list[list[ev.RecordedEvent]], list[ContainerState]]:
        if not self._sqlite:
            conn.exec_driver_sql("LOCK TABLE events IN EXCLUSIVE MODE")
        results: list[list[ev.RecordedEvent] | None] = [None] * len(writes)
        ids = list({w.request.command_id for w in writes})
        known: dict[str, tuple[int, ...]] = {}
        # The hot path of every append goes to the driver with plain SQL, as the
        # inserts below do: building and cache-keying a Core statement per call was
        # the largest share of a one-event append's CPU time.
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            sql = self._known_sql if len(chunk) == 1 else (
                "SELECT command_id, positions FROM commands WHERE command_id IN ("
                + ", ".join([self._mark] * len(chunk)) + ")")
            for command_id, positions in conn.exec_driver_sql(sql, tuple(chunk)):
                known[command_id] = tuple(unpack(positions))
        fresh: list[int] = []
        claimed: set[str] = set()
        for i, w in enumerate(writes):
            cid = w.request.command_id
            if cid not in known and cid not in claimed:
                claimed.add(cid)
                fresh.append(i)
        versions = self._versions(conn, {writes[i].request.stream for i in fresh})
        head = conn.exec_driver_sql(
            "SELECT position, hash, recorded_at AS at FROM events "
            "ORDER BY position DESC LIMIT 1").first()
        position = 0 if head is None else int(head.position)
        prev = audit.GENESIS if head is None or head.hash is None else bytes(head.hash)
        # Never let time run backwards along the log: a time bound then selects a
        # prefix of positions, so state_at(time=...) agrees with state_at(position=...).
        now_us = to_micros(datetime.now(UTC))
        if head is not None and head.at > now_us:
            now_us = int(head.at)
        recorded_at = from_micros(now_us)

        rows: list[tuple[Any, ...]] = []
        command_rows: list[tuple[Any, ...]] = []
        by_command: dict[str, list[ev.RecordedEvent]] = {}
        for i in fresh:
            w = writes[i]
            req = w.request
            current = versions.get(req.stream, 0)
            if req.expected_version is not None and req.expected_version != current:
                raise ConcurrencyError(
                    f"stream {req.stream}: expected version {req.expected_version}, "
                    f"found {current}")
            recorded: list[ev.RecordedEvent] = []
            for event in req.events:
                position += 1
                current += 1
                new = ev.NewEvent(req.stream, event, req.command_id, req.correlation_id,
                                  req.actor, req.node)
                values = self._mapper.to_values(new, position=position, version=current,
                                                recorded_at_us=now_us)
                digest = audit.link_values(prev, values)
                rows.append((*values, prev, digest))
                prev = digest
                meta = ev.Metadata(req.stream, current, position, event.type, recorded_at,
                                   req.command_id, req.correlation_id, req.actor, req.node)
                recorded.append(ev.RecordedEvent(meta, event))
            versions[req.stream] = current
            command_rows.append((
                req.command_id, req.command_type, req.stream,
                "ok" if w.error_code is None else "error", w.error_code, w.message,
                pack([r.position for r in recorded]), now_us,
            ))
            by_command[req.command_id] = recorded
            results[i] = recorded
        # The two hot inserts go to the driver's executemany with plain tuples: Core's
        # per-row parameter processing was a third of a batched append's time.
        if rows:
            conn.exec_driver_sql(self._insert_events, rows)
        if command_rows:
            conn.exec_driver_sql(self._insert_commands, command_rows)
        states = self._project(
            conn, [r for i in fresh for r in by_command[writes[i].request.command_id]])
        for i, w in enumerate(writes):
            if results[i] is None:
                cid = w.request.command_id
                results[i] = (by_command[cid] if cid in by_command
                              else self._at_positions(conn, known[cid]))
        return [r if r is not None else [] for r in results], states

    def _versions(self, conn: Connection, streams: set[str]) -> dict[str, int]:
        """Current version of each stream, each found by one index probe.

        One correlated max() per stream, not ``GROUP BY stream``: SQLite answers a
        lone max() on an indexed column from the end of the index, but walks every
        version of the stream for a grouped one, so appends to long streams slowed.
        """
        found: dict[str, int] = {}
        names = list(streams)
        for start in range(0, len(names), 500):
            chunk = names[start:start + 500]
            wanted = ", ".join([f"({self._mark})"] * len(chunk))
            sql = (f"WITH wanted(s) AS (VALUES {wanted}) SELECT s, "
                   "(SELECT max(stream_version) FROM events WHERE stream = wanted.s) "
                   "FROM wanted")
            for stream, version in conn.exec_driver_sql(sql, tuple(chunk)):
                if version is not None:
                    found[stream] = int(version)
        return found

    def _project(self, conn: Connection,
                 recorded: list[ev.RecordedEvent]) -> list[ContainerState]:
        """Fold the new events onto the current rows and write what changed; returns
        the new states, for the cache once the transaction has committed."""
        if not recorded:
            return []
        touched = {r.stream for r in recorded}
        before = self._cache.load(conn, touched)
        after = fold(recorded, before)
        changed = {cid: after[cid] for cid in touched if cid in after}
        readmodel.save_states(conn, changed, before)
        return list(changed.values())

    def _at_positions(self, conn: Connection,
                      positions: tuple[int, ...]) -> list[ev.RecordedEvent]:
        if not positions:
            return []
        query = select(events).where(events.c.position.in_(positions)).order_by(
            events.c.position)
        return [self._mapper.from_row(row) for row in conn.execute(query)]

    def outcome(self, command_id: str) -> CommandOutcome | None:
        # Asked before every command a worker runs: plain SQL, as in _write.
        with translated("outcome"), self._engine.connect() as conn:
            row = conn.exec_driver_sql(self._outcome_sql, (command_id,)).first()
        if row is None:
            return None
        return CommandOutcome(
            command_id=row.command_id, command_type=row.command_type, stream=row.stream,
            ok=row.outcome == "ok", error_code=row.error_code, message=row.message,
            positions=tuple(unpack(row.positions)), recorded_at=from_micros(int(row.recorded_at)))
