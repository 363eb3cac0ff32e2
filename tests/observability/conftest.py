"""Fixtures: the real engine processes of tests/e2e."""

from tests.e2e.test_daemon import place  # noqa: F401 - a fixture, found by name
