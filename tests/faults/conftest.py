"""Fixtures for fault tests: a cluster of real processes, always torn down."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.faults.cluster import Cluster


@pytest.fixture
def cluster(short_tmp: str, busybox_rootfs: str) -> Iterator[Cluster]:
    """No process started yet; a SQLite store under the test's directory."""
    c = Cluster(short_tmp, busybox_rootfs, f"sqlite:///{os.path.join(short_tmp, 'berth.db')}")
    try:
        yield c
    finally:
        c.close()
