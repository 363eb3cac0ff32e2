"""The stdio tests run real ``berth`` processes against the e2e engine fixtures."""

import pytest

from tests.e2e.conftest import engine, up


@pytest.fixture
def default_network() -> str | None:
    """Not about networks: containers get only lo (no CNI cost)."""
    return "none"


__all__ = ["default_network", "engine", "up"]
