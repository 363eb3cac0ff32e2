"""Schema management: Alembic, driven from code so it works from any directory.

The schema is created and upgraded only here; the event store never runs Alembic, so
``engine`` does not depend on this package. The programs that open a store call
``upgrade`` first: a worker when it starts, and ``berth db upgrade``.
``script_location`` is this package's directory, so neither an alembic.ini nor a
particular cwd is needed; ``migrations/alembic.ini`` exists only for people running
the alembic CLI.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError

from engine.errors import StoreError
from engine.store.db import make_engine, translated


def script_location() -> str:
    return str(Path(__file__).resolve().parent)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", script_location())
    # ConfigParser interpolation: a literal % in a password must be doubled.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` up to ``revision`` (idempotent; concurrent
    callers serialize on the database's own lock, see migrations/env.py)."""
    with translated("migrate"):
        try:
            command.upgrade(alembic_config(url), revision)
        except CommandError as exc:  # e.g. an unknown revision, or a newer database
            raise StoreError(f"migrate: {exc}") from exc


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    if head is None:
        raise StoreError(f"no migration revisions in {script_location()}")
    return head


def revisions() -> list[str]:
    """All revision ids, oldest first."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


def current_revision(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with translated("schema revision"), engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
