"""Connections to the store's database, and the one edge where driver errors stop.

Everything in ``engine/store`` that touches a connection does it inside
``translated()``: sqlalchemy, sqlite3 and psycopg exceptions become ``engine.errors``
types there and nowhere else, so callers (worker, CLI, bus) only ever branch on
berth's codes.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from sqlalchemy import Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.pool import ConnectionPoolEntry

from engine.errors import (
    AlreadyExists,
    BerthError,
    ConcurrencyError,
    InvalidArgument,
    StoreError,
    StoreUnreachable,
)
from engine.store.retry import is_connection_sqlstate

# Execution option that marks a connection as a writer. On SQLite a writer opens its
# transaction with BEGIN IMMEDIATE: it takes the write lock before reading the head of
# the log, so two writers can never both compute the same next position.
WRITE = "berth_write"

SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str, *, synchronous: str = "NORMAL") -> Engine:
    """Create an Engine with berth's durability settings.

    SQLite runs in WAL mode: readers never block the single writer. synchronous=NORMAL
    in WAL survives a killed process (the guarantee the worker needs, since commits
    land in the WAL before COMMIT returns); pass "FULL" to also survive power loss.
    """
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError as exc:
        raise InvalidArgument(f"bad store url: {exc}") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise InvalidArgument(f"bad sqlite synchronous mode {synchronous!r}")
        database = parsed.database or ""
        if database not in {"", ":memory:"}:
            _private_file(database)
        engine = create_engine(url, connect_args={"check_same_thread": False})
        _configure_sqlite(engine, synchronous.upper(), database)
        return engine
    if backend == "postgresql":
        return create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=8)
    raise InvalidArgument(f"unsupported store backend {backend!r} (sqlite or postgresql)")


def _private_file(database: str) -> None:
    """Make the SQLite file (and its WAL and shared-memory files) 0600 before any
    connection opens it: the log holds what publishers sent (``-e SECRET=...``), and
    SQLite gives the WAL it creates the database file's mode."""
    try:
        fd = os.open(database, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        return  # no directory, no permission: SQLite's own error says so, on first use
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StoreError(f"the database file {database} is not a regular file")
        if stat.S_IMODE(st.st_mode) & 0o077 and st.st_uid == os.geteuid():
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            side = os.lstat(database + suffix)
            if stat.S_ISREG(side.st_mode) and stat.S_IMODE(side.st_mode) & 0o077:
                os.chmod(database + suffix, 0o600)


def _configure_sqlite(engine: Engine, synchronous: str, database: str) -> None:
    in_memory = database in {"", ":memory:"}

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, record: ConnectionPoolEntry) -> None:
        # Take transaction control away from the sqlite3 module so BEGIN is ours.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            if not in_memory:
                cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute(f"PRAGMA synchronous = {synchronous}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get(WRITE):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


def _constraint_of(exc: sa_exc.IntegrityError) -> str:
    orig = exc.orig
    diag = getattr(orig, "diag", None)
    name = getattr(diag, "constraint_name", None) if diag is not None else None
    return f"{name or ''} {orig}"


def _translate(exc: BaseException, action: str) -> BerthError:
    if isinstance(exc, sa_exc.IntegrityError):
        what = _constraint_of(exc)
        if "uq_events_stream_version" in what or "events.stream" in what:
            return ConcurrencyError(f"{action}: a concurrent append took the stream version")
        if "ux_containers_live_name" in what or "containers.name" in what:
            return AlreadyExists(f"{action}: the container name is already in use")
        if "commands" in what:
            return ConcurrencyError(f"{action}: the command id was recorded concurrently")
        return StoreError(f"{action}: integrity error: {exc.orig}")
    if isinstance(exc, sa_exc.DBAPIError):
        if _connection_lost(exc):
            return StoreUnreachable(f"{action}: the database server is unreachable: {exc.orig}")
        sqlite_problem = _sqlite_write_problem(exc.orig)
        if sqlite_problem is not None:
            return StoreError(f"{action}: {sqlite_problem}")
        return StoreError(f"{action}: {type(exc.orig).__name__}: {exc.orig}")
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return StoreUnreachable(f"{action}: the database server is unreachable: {exc}")
    return StoreError(f"{action}: {type(exc).__name__}: {exc}")


def _connection_lost(exc: sa_exc.DBAPIError) -> bool:
    """A failure of the connection rather than of the statement: the only kind the
    store retries (see engine.store.retry)."""
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    if isinstance(orig, psycopg.InterfaceError):
        return True
    if isinstance(orig, psycopg.OperationalError):
        return is_connection_sqlstate(orig.sqlstate)
    return False


_SQLITE_FULL = 13
_SQLITE_READONLY = 8
_SQLITE_IOERR = 10


def _sqlite_write_problem(orig: BaseException | None) -> str | None:
    """One clear sentence for SQLite's disk-level refusals, which are not transient."""
    if not isinstance(orig, sqlite3.Error):
        return None
    code = getattr(orig, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary == _SQLITE_FULL:
        return "the disk holding the SQLite store is full; nothing was written"
    if primary == _SQLITE_READONLY:
        return ("the SQLite store is read-only (read-only file system or permissions); "
                "nothing was written")
    if primary == _SQLITE_IOERR:
        return f"the SQLite store could not be written ({orig}); nothing was written"
    return None


@contextmanager
def translated(action: str) -> Iterator[None]:
    """The single translation edge for database errors."""
    try:
        yield
    except BerthError:
        raise
    except (sa_exc.SQLAlchemyError, sqlite3.Error, psycopg.Error, OSError) as exc:
        raise _translate(exc, action) from exc
