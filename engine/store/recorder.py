"""Appends: events, the command's outcome and the read model, in one transaction.

Writers are serialized for the whole transaction (SQLite: BEGIN IMMEDIATE; PostgreSQL:
``LOCK TABLE events IN EXCLUSIVE MODE``, as pyeventsourcing's postgres recorder does).
Positions are then assigned as head + 1 under that lock, so they are contiguous and
commit in position order: a reader that reads by position never sees a later position
before an earlier one commits, which a bare sequence cannot promise. The lock also
makes the idempotency check (has this command id been recorded?) race-free. Plain
readers are not blocked (EXCLUSIVE still admits ACCESS SHARE).

A command id with no ``commands`` row but with events that name it as their cause
was carried out before and its row deleted since (or it predates the table, revision
0002): it is refused, never run or recorded a second time (``recorded_elsewhere``).
The events are the evidence that it ran; what it answered is gone, so it is not made
up either.

``Recorder`` holds the SQL both dialects share; ``engine.store.sqlite`` and
``engine.store.postgres`` each add how that dialect takes the lock and reads a snapshot.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import Connection, Engine, select

from engine import events as ev
from engine.audit import chain as audit
from engine.audit import transparency, vouch
from engine.audit.treehead import Signer
from engine.containers.projection import ContainerState, fold
from engine.errors import ConcurrencyError, InvalidArgument, StoreError
from engine.store import readmodel, sql
from engine.store.db import translated
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


class Recorder(ABC):
    """Writes to the log. One instance per store; safe to share between threads.

    The SQL is shared; a subclass per dialect says only what differs between them: the
    driver's placeholder, how the writers' lock is taken, and how a reader gets one
    snapshot across several queries (``engine.store.sqlite``, ``engine.store.postgres``).
    """

    mark: ClassVar[str]
    """The driver's placeholder in plain SQL (see ``engine.store.sql``)."""

    def __init__(self, engine: Engine, mapper: Mapper, writer: Signer | None = None) -> None:
        self._engine = engine
        self._mapper = mapper
        self.writer = writer
        """This process's auditor key: it signs every transaction appended, once
        (engine.audit.vouch)."""
        self._cache = readmodel.StateCache(self.mark)
        mark = self.mark
        self._insert_events = sql.insert(
            "events", (*audit.CONTENT, "prev_hash", "hash", "signer", "signature", "signed_from"),
            mark)
        self._outcome_sql = sql.select_in(
            "command_id, command_type, stream, outcome, error_code, message, positions, "
            "recorded_at", "commands", "command_id", mark, 1)
        self._insert_commands = sql.insert(
            "commands", ("command_id", "command_type", "stream", "outcome", "error_code",
                         "message", "positions", "recorded_at", "signer", "signature"), mark)

    @abstractmethod
    def writing(self) -> AbstractContextManager[Connection]:
        """A connection inside a transaction that holds the writers' lock, taken before
        anything is read, for the whole transaction (see the module docstring)."""

    @abstractmethod
    def snapshot(self) -> AbstractContextManager[Connection]:
        """A connection inside a read transaction that sees one snapshot across all
        its queries."""

    def append(self, requests: Sequence[AppendRequest]) -> list[list[ev.RecordedEvent]]:
        """Each request's events and an ok outcome, all in one transaction."""
        return self._record([_Write(r) for r in requests])

    def record_failure(self, request: AppendRequest, code: str,
                       message: str) -> list[ev.RecordedEvent]:
        """The request's events (its ``command.failed``) and an error outcome."""
        return self._record([_Write(request, error_code=code, message=message)])[0]

    def forget_states(self) -> None:
        """Drop cached read-model states (after a rebuild rewrote the rows)."""
        self._cache.clear()

    def _record(self, writes: Sequence[_Write]) -> list[list[ev.RecordedEvent]]:
        for w in writes:
            _validate(w.request)
        with translated("append"), self.writing() as conn:
            results, states = self._write(conn, writes)
        self._cache.remember(states)  # only now: these states are committed
        return results

    def _write(self, conn: Connection, writes: Sequence[_Write],
               ) -> tuple[list[list[ev.RecordedEvent]], list[ContainerState]]:
        # Plain SQL to the driver throughout, as engine.store.sql explains.
        results: list[list[ev.RecordedEvent] | None] = [None] * len(writes)
        known: dict[str, tuple[int, ...]] = {}
        for chunk in sql.chunked(list({w.request.command_id for w in writes})):
            query = sql.select_in("command_id, positions", "commands", "command_id",
                                  self.mark, len(chunk))
            for command_id, positions in conn.exec_driver_sql(query, tuple(chunk)):
                known[command_id] = tuple(unpack(positions))
        self._refuse_unlisted(conn, [w.request.command_id for w in writes
                                     if w.request.command_id not in known])
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

        writer = self.writer
        # One signature for the whole transaction, on its last row (engine.audit.vouch):
        # every row carries the writer's key id, none a signature of its own.
        row_stamp: tuple[str, bytes | None, None] = (
            ("", b"", None) if writer is None else (writer.key_id, None, None))
        first = position + 1
        outcomes: list[bytes] = []
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
                rows.append((*values, prev, digest, *row_stamp))
                prev = digest
                meta = ev.Metadata(req.stream, current, position, event.type, recorded_at,
                                   req.command_id, req.correlation_id, req.actor, req.node)
                recorded.append(ev.RecordedEvent(meta, event))
            versions[req.stream] = current
            outcome = (
                req.command_id, req.command_type, req.stream,
                "ok" if w.error_code is None else "error", w.error_code, w.message,
                pack([r.position for r in recorded]), now_us,
            )
            if writer is not None and recorded:
                outcomes.append(transparency.outcome_digest(outcome))
            command_rows.append((*outcome, *row_stamp[:2]))
            by_command[req.command_id] = recorded
            results[i] = recorded
        # The two hot inserts go to the driver's executemany with plain tuples: Core's
        # per-row parameter processing was a third of a batched append's time.
        if rows and writer is not None:
            message = vouch.txn_message(first, prev, vouch.outcomes_digest(outcomes))
            rows[-1] = (*rows[-1][:-2], writer.sign_bytes(vouch.TXN + message), first)
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
        for chunk in sql.chunked(list(streams)):
            wanted = sql.marks(f"({self.mark})", len(chunk))  # VALUES (?), (?), ...
            query = (f"WITH wanted(s) AS (VALUES {wanted}) SELECT s, "
                     "(SELECT max(stream_version) FROM events WHERE stream = wanted.s) "
                     "FROM wanted")
            for stream, version in conn.exec_driver_sql(query, tuple(chunk)):
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

    def _refuse_unlisted(self, conn: Connection, command_ids: Sequence[str]) -> None:
        """StoreError if any of ``command_ids``, which have no commands row, caused
        events: each one's index probe on ``events.causation_id`` (revision 0006)."""
        for chunk in sql.chunked(sorted(set(command_ids))):
            query = (sql.select_in("causation_id, min(position)", "events", "causation_id",
                                   self.mark, len(chunk)) + " GROUP BY causation_id")
            for command_id, first in conn.exec_driver_sql(query, tuple(chunk)):
                raise StoreError(recorded_elsewhere(command_id, int(first)))

    def outcome(self, command_id: str) -> CommandOutcome | None:
        """The command's recorded outcome; None if it never ran. StoreError if it ran
        (events name it) but its commands row is gone: it must not run again."""
        # Asked before every command a worker runs: plain SQL (engine.store.sql).
        with translated("outcome"), self._engine.connect() as conn:
            row = conn.exec_driver_sql(self._outcome_sql, (command_id,)).first()
            if row is None:
                self._refuse_unlisted(conn, [command_id])
        if row is None:
            return None
        return CommandOutcome(
            command_id=row.command_id, command_type=row.command_type, stream=row.stream,
            ok=row.outcome == "ok", error_code=row.error_code, message=row.message,
            positions=tuple(unpack(row.positions)), recorded_at=from_micros(int(row.recorded_at)))


def recorded_elsewhere(command_id: str, first: int) -> str:
    return (f"command {command_id} was carried out before (its events begin at position "
            f"{first}) but its row in the commands table is gone, so what it answered is "
            "unknown: it is not run again (the row was deleted, or the events predate "
            "revision 0002; see berth audit verify)")
