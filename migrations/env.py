"""Alembic environment for berth.

Connections come from ``engine.store.db.make_engine`` so migrations run with the same
SQLite pragmas as the store. The whole upgrade is one transaction taken with the
database's writer lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock), so a
worker and a CLI starting at once do not both try to create the tables.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from engine.store.db import WRITE, make_engine
from engine.store.schema import metadata

MIGRATION_LOCK_KEY = 0x62657274  # "bert"


def _run(conn: Connection) -> None:
    context.configure(
        connection=conn,
        target_metadata=metadata,
        render_as_batch=conn.dialect.name == "sqlite",
        transactional_ddl=True,
        compare_type=True,
    )
    with context.begin_transaction():
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
        context.run_migrations()


def run_migrations_online() -> None:
    given = context.config.attributes.get("connection")
    if given is not None:
        _run(given)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no sqlalchemy.url configured for berth migrations")
    engine = make_engine(url)
    try:
        with engine.connect().execution_options(**{WRITE: True}) as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("berth migrations run online only (migrations.runner.upgrade)")
run_migrations_online()
