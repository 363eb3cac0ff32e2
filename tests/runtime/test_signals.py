"""kill and stop: signals by name and number, the SIGKILL fallback, already-gone containers."""

from __future__ import annotations

import time

import pytest

from engine.errors import InvalidArgument
from engine.runtime.waits import pid_alive
from tests.helpers import wait_until
from tests.runtime.conftest import Containers

TRAP_TERM = "trap '' TERM; echo ready; while true; do sleep 0.1; done"
# The container's init is PID 1 in its namespace: the kernel drops signals it has no
# handler for, exactly as under podman. Handlers make each signal's arrival visible.
HANDLERS = (
    "trap 'exit 100' TERM; trap 'exit 101' INT; trap 'exit 102' USR1; "
    "echo ready; while true; do sleep 0.05; done"
)


def _ready(containers: Containers, cid: str) -> bool:
    return any(line.endswith(" ready") for line in containers.log_lines(cid))


@pytest.mark.parametrize(
    "signal,expected", [("TERM", 100), ("SIGINT", 101), (9, 137), ("10", 102), ("usr1", 102)]
)
def test_kill_delivers_signal_by_name_or_number(
    containers: Containers, signal: object, expected: int
) -> None:
    cid, created = containers.run("sh", "-c", HANDLERS)
    wait_until(lambda: _ready(containers, cid), 10, what="handlers installed")
    containers.runtime.kill(cid, signal)  # type: ignore[arg-type]
    assert containers.wait_exit(cid, created.pid).exit_code == expected


@pytest.mark.parametrize("bad", ["SIGFOO", "0", 0, -1, 65, "TERM; rm", "", None, 3.5])
def test_invalid_signal_is_refused_before_runc(containers: Containers, bad: object) -> None:
    cid, created = containers.run("sleep", "60")
    with pytest.raises(InvalidArgument, match="invalid signal"):
        containers.runtime.kill(cid, bad)  # type: ignore[arg-type]
    assert pid_alive(created.pid)


def test_stop_uses_stop_signal_then_returns(containers: Containers) -> None:
    cid, created = containers.run("sh", "-c", HANDLERS)
    wait_until(lambda: _ready(containers, cid), 10, what="handlers installed")
    start = time.monotonic()
    containers.runtime.stop(cid, created.pid, stop_signal=15, timeout=10)
    assert time.monotonic() - start < 5
    assert containers.wait_exit(cid, created.pid).exit_code == 100


def test_custom_stop_signal(containers: Containers) -> None:
    cid, created = containers.run("sh", "-c", HANDLERS, stop_signal=2)
    wait_until(lambda: _ready(containers, cid), 10, what="handlers installed")
    containers.runtime.stop(cid, created.pid, stop_signal=2, timeout=10)
    assert containers.wait_exit(cid, created.pid).exit_code == 101


def test_stop_ignoring_term_ends_in_sigkill_within_timeout_plus_5s(containers: Containers) -> None:
    cid, created = containers.run("sh", "-c", TRAP_TERM)
    wait_until(lambda: _ready(containers, cid), 10, what="trap installed")
    start = time.monotonic()
    containers.runtime.stop(cid, created.pid, stop_signal=15, timeout=1)
    elapsed = time.monotonic() - start
    assert 1 <= elapsed < 1 + 5
    assert containers.wait_exit(cid, created.pid).exit_code == 137


def test_stop_with_timeout_zero_kills_at_once(containers: Containers) -> None:
    cid, created = containers.run("sh", "-c", TRAP_TERM)
    wait_until(lambda: _ready(containers, cid), 10, what="trap installed")
    start = time.monotonic()
    containers.runtime.stop(cid, created.pid, timeout=0)
    assert time.monotonic() - start < 1
    assert containers.wait_exit(cid, created.pid).exit_code == 137


def test_stop_of_an_exited_container_is_not_an_error(containers: Containers) -> None:
    cid, created = containers.run("true")
    containers.wait_exit(cid, created.pid)
    containers.runtime.stop(cid, created.pid, timeout=1)


def test_stop_negative_timeout_is_refused(containers: Containers) -> None:
    cid, created = containers.run("sleep", "60")
    with pytest.raises(InvalidArgument):
        containers.runtime.stop(cid, created.pid, timeout=-1)
    assert pid_alive(created.pid)
