"""Create, start, status, exit code and logs against real conmon + runc."""

from __future__ import annotations

import re

import pytest

from engine.errors import NotFound
from engine.runtime import Status
from tests.helpers import wait_until
from tests.runtime.conftest import Containers

K8S_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+[+-]\d\d:\d\d (stdout|stderr) [FP] (.*)$"
)


def test_create_reports_pid_and_created_status(containers: Containers) -> None:
    cid, created = containers.create("sh", "-c", "exit 0")
    assert created.pid > 0 and created.conmon_pid > 0
    assert created.pid != created.conmon_pid
    report = containers.runtime.status(cid)
    assert report.status is Status.CREATED
    assert report.pid == created.pid
    assert containers.runtime.exit_status(cid) is None


@pytest.mark.parametrize("code", [0, 3, 42])
def test_exit_code_reaches_the_exit_file(containers: Containers, code: int) -> None:
    cid, created = containers.run("sh", "-c", f"exit {code}")
    status = containers.wait_exit(cid, created.pid)
    assert status.exit_code == code
    full = containers.runtime.status(cid)
    assert full.status is Status.STOPPED
    assert full.exit_code == code


def test_running_status_then_delete(containers: Containers) -> None:
    cid, _created = containers.run("sleep", "30")
    assert containers.runtime.status(cid).status is Status.RUNNING
    containers.runtime.delete(cid, force=True)
    gone = containers.runtime.status(cid)
    assert gone.status is Status.EXITED
    with pytest.raises(NotFound):
        containers.runtime.runc.state(cid)


def test_logs_are_written_in_k8s_file_format(containers: Containers) -> None:
    cid, created = containers.run("sh", "-c", "echo out-line; echo err-line >&2")
    containers.wait_exit(cid, created.pid)
    lines = containers.log_lines(cid)
    parsed = [K8S_LINE.match(line) for line in lines]
    assert all(parsed), lines
    pairs = {(m.group(1), m.group(2)) for m in parsed if m}
    assert ("stdout", "out-line") in pairs
    assert ("stderr", "err-line") in pairs


def test_status_of_unknown_container_is_exited_minus_one(containers: Containers) -> None:
    report = containers.runtime.status("never-created")
    assert report.status is Status.EXITED
    assert report.exit_code == -1


def test_environment_cwd_user_and_hostname_reach_the_process(containers: Containers) -> None:
    cid, created = containers.run(
        "sh", "-c", 'echo "$GREETING $(pwd) $(id -u):$(id -g) $(hostname)"',
        env=("GREETING=hello",), cwd="/tmp", user="65534:65534", hostname="box1",
    )
    containers.wait_exit(cid, created.pid)
    assert any(line.endswith("hello /tmp 65534:65534 box1") for line in containers.log_lines(cid))


def test_read_only_rootfs_refuses_writes(containers: Containers) -> None:
    cid, created = containers.run("sh", "-c", "touch /etc/x-ro-test", read_only=True)
    assert containers.wait_exit(cid, created.pid).exit_code == 1
    # the write failed because the root is read-only (EROFS), not for another reason
    assert any("Read-only file system" in line for line in containers.log_lines(cid)), \
        containers.log_lines(cid)


def test_pids_limit_is_enforced(containers: Containers) -> None:
    script = "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 5 & done; wait"
    cid, created = containers.run("sh", "-c", script, pids_limit=4)
    containers.wait_exit(cid, created.pid, timeout=20)
    assert any("can't fork" in line or "Resource temporarily unavailable" in line
               for line in containers.log_lines(cid)), containers.log_lines(cid)


def test_memory_limit_is_written_to_the_cgroup(containers: Containers) -> None:
    cid, _created = containers.run("sleep", "30", memory=64 * 1024 * 1024)
    limit = wait_until(lambda: _memory_limit(cid), 5, what="memory cgroup")
    assert limit == 64 * 1024 * 1024


def _memory_limit(cid: str) -> int | None:
    for path in (f"/sys/fs/cgroup/memory/berth/{cid}/memory.limit_in_bytes",
                 f"/sys/fs/cgroup/berth/{cid}/memory.max"):
        try:
            with open(path) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            continue
    return None
