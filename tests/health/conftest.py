"""Health-check tests run on the e2e fixtures: a real engine, real containers."""

import pytest

from tests.e2e.conftest import engine, up  # noqa: F401 (fixtures)


@pytest.fixture
def default_network() -> str | None:
    """Not about networks: containers get only lo (no CNI cost)."""
    return "none"
