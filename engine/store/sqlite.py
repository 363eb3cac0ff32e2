"""The SQLite recorder: the embedded default, one file under the state directory.

SQLite has one writer at a time by design; ``BEGIN IMMEDIATE`` takes that write lock
before the transaction reads anything (``engine.store.db`` issues it for connections
marked ``WRITE``), which is the writers' lock ``Recorder`` relies on. Its deferred read
transactions already see one snapshot.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection

from engine.store.db import WRITE
from engine.store.recorder import Recorder


class SQLiteRecorder(Recorder):
    mark = "?"

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        with self._engine.connect().execution_options(**{WRITE: True}) as conn, conn.begin():
            yield conn

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        with self._engine.connect() as conn, conn.begin():
            yield conn
