"""Back up the event log and restore it into an empty store.

SQLite (the embedded default): SQLite's online backup API copies a consistent
snapshot page by page while the engine keeps writing; the copy is an ordinary
database file, restored by copying it into place. PostgreSQL: ``pg_dump`` in its
custom format (a consistent snapshot, taken while workers write) and ``pg_restore``
into an empty database. Either way the restored log is the same rows with the same
hashes, so ``berth audit verify`` and ``berth projection rebuild --verify`` pass on it
and its head equals the source's at the moment of the backup.

A backup never overwrites a file and a restore never writes into a store that holds
events: both refuse with one sentence and change nothing.
"""

from __future__ import annotations

import glob
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Sequence

from sqlalchemy.engine import URL, make_url

from engine.errors import AlreadyExists, InvalidArgument, NotFound, StoreError

PRIVATE = 0o600


def _sqlite_path(url: URL) -> str | None:
    if url.get_backend_name() != "sqlite":
        return None
    if not url.database or url.database == ":memory:":
        raise InvalidArgument("an in-memory SQLite store has nothing to back up")
    return url.database


def _new_file(path: str) -> None:
    """Create ``path`` empty and private, refusing one that exists."""
    if "\0" in path:
        raise InvalidArgument("the backup path holds a NUL byte")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PRIVATE)
    except FileExistsError:
        raise AlreadyExists(f"{path} exists; a backup never overwrites a file") from None
    except OSError as exc:
        raise InvalidArgument(f"cannot create {path}: {exc.strerror}") from None
    os.close(fd)


def backup(url_text: str, path: str) -> str:
    """Write a backup of the store at ``url_text`` to the new file ``path``; its kind."""
    url = make_url(url_text)
    source = _sqlite_path(url)
    _new_file(path)
    try:
        if source is not None:
            if not os.path.exists(source):
                raise NotFound(f"no SQLite store at {source}")
            with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as src, \
                    sqlite3.connect(path) as dst:
                src.backup(dst)
            dst.close()
            return "sqlite"
        _pg_tool("pg_dump", ["--format=custom", "--no-owner", "--file", path], url)
        return "pg_dump"
    except BaseException:
        os.unlink(path)
        raise


def restore(url_text: str, path: str) -> str:
    """Load the backup ``path`` into the store at ``url_text``, which must be empty
    (no database file yet for SQLite; no berth tables or no events for PostgreSQL)."""
    if not os.path.isfile(path):
        raise NotFound(f"no backup at {path}")
    url = make_url(url_text)
    target = _sqlite_path(url)
    if target is not None:
        if os.path.exists(target) and os.path.getsize(target) > 0:
            raise AlreadyExists(f"{target} exists; restore into a new store only")
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as src:
                intact = src.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        except sqlite3.DatabaseError:
            intact = False
        if not intact:
            raise InvalidArgument(f"{path} is not an intact SQLite database")
        tmp = f"{target}.restoring"
        try:  # a copy a crashed restore left behind
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        # Private from its first byte: it holds the whole log.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PRIVATE)
        with os.fdopen(fd, "wb") as dst, open(path, "rb") as src:
            shutil.copyfileobj(src, dst)
        os.replace(tmp, target)
        return "sqlite"
    _pg_tool("pg_restore", ["--no-owner", "--exit-on-error", "--single-transaction",
                            "--dbname"], url, path)
    return "pg_restore"


def _pg_bin(tool: str) -> str:
    found = shutil.which(tool)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))
    if not candidates:
        raise StoreError(f"{tool} is not installed (package postgresql-client)")
    return candidates[-1]  # the newest major version reads older servers' data


def _pg_tool(tool: str, args: Sequence[str], url: URL, *rest: str) -> None:
    """Run pg_dump/pg_restore against the URL's database; libpq takes the same
    connection string (multi-host included), the password through PGPASSWORD."""
    env = dict(os.environ)
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    conninfo = _libpq_url(url)
    argv = [_pg_bin(tool), *args, conninfo, *rest]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=3600,
                          check=False)
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise StoreError(f"{tool} failed: {detail}")


def _libpq_url(url: URL) -> str:
    """The libpq key=value string SQLAlchemy's psycopg dialect would connect with
    (``host=h1,h2 port=p1,p2`` for a multi-host URL), without the password."""
    from psycopg.conninfo import make_conninfo  # psycopg: only a PostgreSQL backup needs it
    from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg  # the same

    _, params = PGDialect_psycopg().create_connect_args(url)  # type: ignore[no-untyped-call]
    params.pop("password", None)
    return make_conninfo(**{k: str(v) for k, v in params.items()})
