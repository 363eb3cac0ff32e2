"""Compose stacks are tested on the e2e suite's real engine (broker, worker, runc, SQLite)."""

import pytest

from tests.e2e.conftest import engine, up  # noqa: F401 (fixtures)


@pytest.fixture
def default_network() -> str:
    """Stacks without networks: the worker gives containers none (no CNI cost)."""
    return "none"
