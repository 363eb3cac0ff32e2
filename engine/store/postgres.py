"""The PostgreSQL recorder: the shared store when workers run on several hosts.

Writers take ``LOCK TABLE events IN EXCLUSIVE MODE`` as their transaction's first
statement, as pyeventsourcing's postgres recorder does: it serializes writers without
blocking plain readers. Readers that need one snapshot across several queries (a
verification folding the log and comparing rows) ask for REPEATABLE READ, since READ
COMMITTED takes a new snapshot per statement.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection

from engine.store.recorder import Recorder


class PostgresRecorder(Recorder):
    mark = "%s"

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        with self._engine.connect() as conn, conn.begin():
            conn.exec_driver_sql("LOCK TABLE events IN EXCLUSIVE MODE")
            yield conn

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        with (self._engine.connect().execution_options(isolation_level="REPEATABLE READ")
              as conn, conn.begin()):
            yield conn
