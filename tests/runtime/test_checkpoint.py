"""Checkpoint through runc + CRIU and restore through conmon --restore, on real containers.

CRIU comes from scripts/install.sh (a private CRIU 4 prefix); its absence is a
failure, not a skip, because every supported machine can have it.
"""

from __future__ import annotations

import os

import pytest

from engine.errors import NotFound
from engine.runtime import Status
from engine.runtime.waits import wait_pids_exit
from tests.helpers import wait_until
from tests.runtime.conftest import Containers

COUNTER = "i=0; while true; do echo count=$i; i=$((i+1)); sleep 0.05; done"


def _counts(containers: Containers, cid: str) -> list[int]:
    return [
        int(line.rsplit("count=", 1)[1]) for line in containers.log_lines(cid) if "count=" in line
    ]


@pytest.fixture(autouse=True)
def _criu_present(containers: Containers) -> None:
    path = containers.runtime.config.criu_path
    assert os.access(path, os.X_OK), f"CRIU missing at {path}: run scripts/install.sh"


def test_checkpoint_then_restore_continues_the_counter(containers: Containers) -> None:
    cid, created = containers.run("sh", "-c", COUNTER)
    wait_until(lambda: len(_counts(containers, cid)) >= 5, 10, what="counter output")
    image = containers.runtime.checkpoint(cid)
    assert os.path.isfile(os.path.join(image, "inventory.img"))
    assert wait_pids_exit([created.pid], 10), (
        "checkpoint without --leave-running must stop the process"
    )
    last = _counts(containers, cid)[-1]
    spec = containers.spec("sh", "-c", COUNTER)
    restored = containers.runtime.restore(cid, spec)
    assert restored.pid > 0
    assert containers.runtime.status(cid).status is Status.RUNNING
    wait_until(lambda: _counts(containers, cid)[-1] >= last + 3, 10, what="restored output")
    after = [n for n in _counts(containers, cid) if n > last]
    # The counter goes on from where it stopped instead of starting again at 0.
    assert after[0] == last + 1
    assert 0 not in _counts(containers, cid)[_counts(containers, cid).index(last) + 1 :]


def test_leave_running_keeps_the_container_running(containers: Containers) -> None:
    cid, _created = containers.run("sh", "-c", COUNTER)
    wait_until(lambda: len(_counts(containers, cid)) >= 2, 10, what="counter output")
    image = containers.runtime.checkpoint(cid, leave_running=True)
    assert os.path.isfile(os.path.join(image, "inventory.img"))
    assert containers.runtime.status(cid).status is Status.RUNNING
    n = len(_counts(containers, cid))
    wait_until(lambda: len(_counts(containers, cid)) > n + 2, 10, what="output after checkpoint")
    assert containers.runtime.exit_status(cid) is None


def test_checkpoint_paths_must_be_absolute(containers: Containers) -> None:
    cid, _ = containers.run("sleep", "60")
    from engine.errors import InvalidArgument

    with pytest.raises(InvalidArgument):
        containers.runtime.checkpoint(cid, image_path="relative/img")
    assert containers.runtime.status(cid).status is Status.RUNNING


def test_restore_without_checkpoint_is_not_found(containers: Containers) -> None:
    with pytest.raises(NotFound, match="no checkpoint"):
        containers.runtime.restore("no-checkpoint-here", containers.spec("true"))
