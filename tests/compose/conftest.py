"""Compose stacks are tested on the e2e suite's real engine (broker, worker, runc, SQLite)."""

from tests.e2e.conftest import engine, up  # noqa: F401 (fixtures)
