"""Waits keep working once descriptor numbers pass 1024 (select() cannot go there).

A worker with ~1,000 live containers holds a pidfd per conmon plus sockets and
files; every wait it makes must still work then.
"""

from __future__ import annotations

import os
import resource
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from engine.runtime.waits import wait_pids_exit
from tests.runtime.conftest import Containers
from workers.inotify import Inotify

HELD = 1100


@pytest.fixture
def many_descriptors() -> Iterator[list[int]]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < HELD + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    held = [os.open("/dev/null", os.O_RDONLY) for _ in range(HELD)]
    try:
        assert max(held) > 1024
        yield held
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_wait_pids_exit_past_fd_1024(many_descriptors: list[int]) -> None:
    short = subprocess.Popen(["sleep", "0.2"])
    long = subprocess.Popen(["sleep", "30"])
    try:
        assert wait_pids_exit([short.pid], 10)
        assert not wait_pids_exit([long.pid], 0.2)  # still running: the wait says so
    finally:
        long.kill()
        long.wait()
        short.wait()


def test_inotify_reads_past_fd_1024(many_descriptors: list[int], tmp_path: object) -> None:
    directory = str(tmp_path)
    watch = Inotify(directory)
    try:
        assert watch.fileno() > 1024
        with open(os.path.join(directory, "exit-file"), "w") as f:
            f.write("0")
        assert list(watch.read(5)) == ["exit-file"]
    finally:
        watch.close()


def test_a_container_is_created_and_execed_past_fd_1024(
        many_descriptors: list[int], containers: Containers) -> None:
    """A regression: conmon's sync pipe and an exec session's pidfd were waited on
    with select(), so a worker holding ~1,000 descriptors could neither create a
    container nor wait for an exec ("filedescriptor out of range in select()")."""
    cid, created = containers.run("sleep", "30")
    assert created.pid > 0
    result = containers.runtime.exec(cid, ["sh", "-c", "echo past-1024"],
                                     session_id=str(uuid.uuid4()))
    assert (result.exit_code, result.output) == (0, b"past-1024\n")
