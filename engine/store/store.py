"""``EventStore``: the one object the worker and the CLI hold.

It only composes the parts (recorder, reader, read model, audit, time travel) and owns
the Engine; each part lives in its own module so each can be read in one sitting.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from types import TracebackType
from typing import Self

from sqlalchemy import Engine, select

from engine import events as ev
from engine.errors import StoreError
from engine.projection import ContainerState, fold
from engine.store import audit, readmodel, timetravel
from engine.store.db import make_engine, translated
from engine.store.mapper import Mapper
from engine.store.postgres import PostgresRecorder
from engine.store.reader import Reader
from engine.store.recorder import AppendRequest, CommandOutcome, Recorder
from engine.store.retry import RetryPolicy, retried
from engine.store.schema import events
from engine.store.sqlite import SQLiteRecorder

# The one place a dialect is chosen (make_engine has already refused any other).
RECORDERS: dict[str, type[Recorder]] = {
    "sqlite": SQLiteRecorder,
    "postgresql": PostgresRecorder,
}


def recorder_for(engine: Engine, mapper: Mapper) -> Recorder:
    return RECORDERS[engine.dialect.name](engine, mapper)


class EventStore:
    """The event log with its read model. Thread-safe; open one per process.

    The schema must already be at head. The store never changes it: Alembic in the
    ``migrations`` package owns it, and the programs that open a store (a worker
    starting, ``berth db upgrade``) upgrade the database first.
    """

    def __init__(self, url: str, *, synchronous: str = "NORMAL",
                 retry: RetryPolicy | None = None) -> None:
        self.url = url
        # Calls that lose their connection are retried (engine.store.retry); the
        # decorated methods below are the store's whole public surface.
        self.retry_policy = retry if retry is not None else RetryPolicy.from_env()
        self._engine = make_engine(url, synchronous=synchronous)
        self._mapper = Mapper()
        self._recorder = recorder_for(self._engine, self._mapper)
        self._reader = Reader(self._engine, self._mapper)

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- writes ---------------------------------------------------------------

    @retried
    def append(self, stream: str, expected_version: int | None,
               events: Sequence[ev.Event], *, command_id: str, command_type: str,
               correlation_id: str = "", actor: str = "", node: str = "",
               ) -> list[ev.RecordedEvent]:
        """Append one command's events to one stream, atomically with its outcome
        and the read model.

        A command id seen before returns what it recorded then and writes nothing,
        so a publisher's retry is harmless. A stream at a version other than
        ``expected_version`` raises ConcurrencyError and writes nothing; a name
        already used by a live container raises AlreadyExists.
        """
        request = AppendRequest(stream, expected_version, tuple(events), command_id,
                                command_type, correlation_id, actor, node)
        return self._recorder.append([request])[0]

    @retried
    def append_batch(self, requests: Sequence[AppendRequest],
                     ) -> list[list[ev.RecordedEvent]]:
        """Several commands in one transaction, for throughput. All or nothing: one
        conflict refuses the whole batch, so retry the rest one by one."""
        return self._recorder.append(requests)

    @retried
    def record_failure(self, command_id: str, command_type: str, stream: str, code: str,
                       message: str, *, correlation_id: str = "", actor: str = "",
                       node: str = "") -> list[ev.RecordedEvent]:
        """Record that a command failed: a ``command.failed`` event in ``stream`` plus an
        error outcome, so a retry gets the same error and the history shows it.

        The failure is appended whatever the stream's version: it reports a decision
        that was not taken, so it cannot conflict with one that was.
        """
        failed = ev.CommandFailed(command_type=command_type, code=code, message=message)
        request = AppendRequest(stream, None, (failed,), command_id, command_type,
                                correlation_id, actor, node)
        return self._recorder.record_failure(request, code, message)

    @retried
    def record_refusal(self, command_id: str, command_type: str, container: str, code: str,
                       message: str, *, correlation_id: str = "", actor: str = "",
                       node: str = "") -> list[ev.RecordedEvent]:
        """Record that the rules refused a command: a ``command.refused`` event in the
        refusals stream (never the container's: nothing about it changed) plus an error
        outcome, so a retry gets the same error and the audit trail shows who asked."""
        refused = ev.CommandRefused(command_type=command_type, container=container, code=code,
                                    message=message)
        request = AppendRequest(ev.REFUSALS_STREAM, None, (refused,), command_id, command_type,
                                correlation_id, actor, node)
        return self._recorder.record_failure(request, code, message)

    @retried
    def outcome(self, command_id: str) -> CommandOutcome | None:
        return self._recorder.outcome(command_id)

    # -- reads of the log -----------------------------------------------------

    @retried
    def read_stream(self, stream: str, from_version: int = 1) -> list[ev.RecordedEvent]:
        return self._reader.read_stream(stream, from_version)

    @retried
    def read_all(self, from_position: int = 1,
                 limit: int | None = None) -> list[ev.RecordedEvent]:
        return self._reader.read_all(from_position, limit)

    def iter_all(self, from_position: int = 1) -> Iterator[ev.RecordedEvent]:
        return self._reader.iter_all(from_position=from_position)

    @retried
    def query(self, container: str | None = None, types: Sequence[str] | None = None,
              since: datetime | None = None, until: datetime | None = None,
              newest_first: bool = False, limit: int | None = None,
              ) -> list[ev.RecordedEvent]:
        return self._reader.query(container, types, since, until, newest_first, limit)

    @retried
    def max_position(self) -> int:
        return self._reader.max_position()

    @property
    def reader(self) -> Reader:
        return self._reader

    # -- read model -----------------------------------------------------------

    @retried
    def list_containers(self, all: bool = False,
                        node: str | None = None) -> list[ContainerState]:
        with translated("list containers"), self._engine.connect() as conn:
            return readmodel.list_containers(conn, all=all, node=node)

    @retried
    def get_container(self, container_id: str, *,
                      include_removed: bool = False) -> ContainerState:
        with translated("get container"), self._engine.connect() as conn:
            return readmodel.get_container(conn, container_id,
                                           include_removed=include_removed)

    @retried
    def resolve(self, ref: str) -> str:
        with translated("resolve"), self._engine.connect() as conn:
            return readmodel.resolve(conn, ref)

    @retried
    def rebuild_read_model(self) -> int:
        """Drop every row and replay the whole log, under the writer lock so no append
        interleaves. Returns the number of containers written."""
        with translated("rebuild read model"), self._recorder.writing() as conn:
            states = fold(self._reader.iter_all(conn=conn))
            readmodel.replace_all(conn, states)
            self._recorder.forget_states()
            return len(states)

    @retried
    def verify_read_model(self) -> list[str]:
        """Differences between the rows and a fresh fold of the log (empty if none)."""
        with translated("verify read model"), self._recorder.snapshot() as conn:
            states = fold(self._reader.iter_all(conn=conn))
            rows = readmodel.all_states(conn)
        return readmodel.differences(states, rows)

    # -- time travel and audit --------------------------------------------------

    @retried
    def state_at(self, position: int | None = None, time: datetime | None = None,
                 container: str | None = None) -> dict[str, ContainerState]:
        return timetravel.state_at(self._reader, position, time, container)

    @retried
    def verify_chain(self) -> int | None:
        """None if the hash chain holds; else the first position where it breaks."""
        with translated("verify chain"), self._recorder.snapshot() as conn:
            return audit.first_break(audit.chain_rows(conn))

    @retried
    def head(self) -> tuple[int, str]:
        """(position, hex hash) of the last event: anchor it elsewhere for audits."""
        with translated("head"), self._engine.connect() as conn:
            row = conn.execute(select(events.c.position, events.c.hash)
                               .order_by(events.c.position.desc()).limit(1)).first()
        if row is None:
            return 0, audit.GENESIS.hex()
        if row.hash is None:
            raise StoreError(f"event {row.position} has no hash")
        return int(row.position), bytes(row.hash).hex()

