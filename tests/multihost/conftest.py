"""Fixtures for the multi-host tests: one real cluster per test module.

Each module gets its own network namespaces, PostgreSQL, broker and workers
(tests/multihost/cluster.py), shared by its tests because starting them costs
seconds; every test leaves it with no container (removed through the bus, so the
removals are in the log too), and the teardown removes everything else, also
after a failure. Run with ``pytest -n 2 --dist loadfile``: modules, and so
clusters, then run side by side without sharing anything.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests import pgserver
from tests.multihost.cluster import Cluster, cluster


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nsenter", "runc", "conmon"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/install.sh)"
    if pgserver.find_bin_dir() is None:
        return "the PostgreSQL server binaries are not installed (postgresql-15)"
    return None


@pytest.fixture(scope="module")
def hosts(busybox_rootfs: str) -> Iterator[Cluster]:
    """Hosts ``a`` and ``b``, each running ``berth worker --node NAME``, over tcp
    with CURVE to a broker and PostgreSQL on the bridge."""
    missing = _missing()
    if missing is not None:
        pytest.fail(f"multi-host tests cannot run: {missing}")
    with cluster(["a", "b"], busybox_rootfs) as c:
        yield c


@pytest.fixture
def mh(hosts: Cluster) -> Iterator[Cluster]:
    """The module's cluster, emptied of containers after the test."""
    yield hosts
    hosts.remove_all()
