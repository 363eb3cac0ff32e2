"""Attaching whatever the length of ``$BERTH_RUN`` (issue 21, B5). conmon names its
attach entry ``<socket dir>/<id>``, a link to the bundle, and makes that name one byte
shorter when it would be exactly 107 bytes (the 108 of ``sun_path`` less its NUL): a
client that looked for the full id there found nothing. The socket itself is in the
bundle, where podman reaches it. Run directories around the limit, for containers
(id of 64) and for exec sessions (id of 36)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from bus.broker import Broker
from bus.endpoints import from_run_dir
from tests.conftest import release_networks
from tests.e2e.conftest import Engine, _remove_all

SOCKET_SUFFIX = len("/runtime/socket/")
"""What the worker adds to ``$BERTH_RUN`` for conmon's socket directory."""
LIMIT = 107


@contextmanager
def engine_with_run_of(length: int, rootfs: str) -> Iterator[Engine]:
    """An engine whose run directory is exactly ``length`` bytes long."""
    base = tempfile.mkdtemp(prefix="berth-l-", dir="/tmp")
    run = base + "/" + "r" * (length - len(base) - 1)
    assert len(run) == length
    root = os.path.join(base, "root")
    endpoints = from_run_dir(run)
    os.makedirs(run, mode=0o700)
    broker = Broker(endpoints.frontend, endpoints.backend, endpoints.events)
    broker.start()
    eng = Engine(root, run, rootfs, endpoints, broker, default_network="none")
    try:
        eng.start_worker()
        yield eng
    finally:
        if eng.worker is not None:
            eng.worker.close()
        _remove_all(eng)
        broker.stop()
        release_networks(base)
        shutil.rmtree(base, ignore_errors=True)


def _berth(engine: Engine, *args: str, data: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "berth", *args], env=engine.env, input=data,
                          capture_output=True, check=False, timeout=120)


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_run_attached_whatever_the_run_directory_length(busybox_rootfs: str,
                                                        delta: int) -> None:
    length = LIMIT - 64 - SOCKET_SUFFIX + delta  # 0: conmon shortens the container's link
    with engine_with_run_of(length, busybox_rootfs) as eng:
        done = _berth(eng, "run", "--rm", "-i", eng.rootfs, "sh", "-c", "cat; echo end >&2",
                      data=b"in\n")
        assert (done.returncode, done.stdout, done.stderr) == (0, b"in\n", b"end\n")
        started = eng.cli("run", "-d", "-i", "--name", "att", eng.rootfs, "cat")
        assert started.returncode == 0, started.stderr
        attached = _berth(eng, "attach", "att", data=b"again\n")
        assert (attached.returncode, attached.stdout) == (0, b"again\n"), attached.stderr


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_exec_attached_whatever_the_run_directory_length(busybox_rootfs: str,
                                                         delta: int) -> None:
    length = LIMIT - 36 - SOCKET_SUFFIX + delta  # 0: conmon shortens a session's link
    with engine_with_run_of(length, busybox_rootfs) as eng:
        started = eng.cli("run", "-d", "--name", "ex", eng.rootfs, "sleep", "120")
        assert started.returncode == 0, started.stderr
        for _ in range(3):
            done = _berth(eng, "exec", "-i", "ex", "sh", "-c", "cat; echo end >&2",
                          data=b"x" * 100_000)
            assert (done.returncode, done.stdout, done.stderr) == (0, b"x" * 100_000,
                                                                   b"end\n")
