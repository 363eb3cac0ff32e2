"""Store fixtures: one contract suite, run on SQLite and on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.store.store import EventStore
from migrations.runner import upgrade
from tests import pgserver


@pytest.fixture(scope="session")
def pg() -> Iterator[pgserver.PgServer]:
    """One PostgreSQL per test session (per xdist worker), always stopped."""
    if pgserver.from_env() is None and pgserver.find_bin_dir() is None:
        # Every supported machine can have it (scripts/install.sh installs it), so
        # its absence fails the run instead of quietly skipping half the contract.
        pytest.fail("no PostgreSQL: run scripts/install.sh, or set BERTH_PG_HOST")
    with pgserver.pg_server() as server:
        yield server


@pytest.fixture
def pg_url(pg: pgserver.PgServer) -> Iterator[str]:
    with pg.fresh_database() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database (no schema yet) on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
    else:
        server = request.getfixturevalue("pg")
        with server.fresh_database() as url:
            yield url


@pytest.fixture
def store(db_url: str) -> Iterator[EventStore]:
    upgrade(db_url)
    s = EventStore(db_url)
    try:
        yield s
    finally:
        s.close()
