"""Update tests run on the e2e fixtures: a real engine, real containers."""

from tests.e2e.conftest import engine, up  # noqa: F401 (fixtures)
