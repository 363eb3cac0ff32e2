"""The stdio tests run real ``berth`` processes against the e2e engine fixtures."""

from tests.e2e.conftest import engine, up

__all__ = ["engine", "up"]
