"""pause/unpause freeze and resume a real process; exec runs commands inside it."""

from __future__ import annotations

import threading

import pytest

from engine.errors import InvalidArgument, InvalidState
from engine.runtime import ExecResult, Status
from engine.runtime.conmon import read_pidfile
from tests.helpers import wait_until
from tests.runtime.conftest import Containers

COUNTER = "i=0; while true; do echo $i; i=$((i+1)); sleep 0.05; done"


def test_pause_freezes_output_and_unpause_resumes(containers: Containers) -> None:
    cid, _created = containers.run("sh", "-c", COUNTER)
    wait_until(lambda: len(containers.log_lines(cid)) >= 3, 10, what="output")
    containers.runtime.pause(cid)
    assert containers.runtime.status(cid).status is Status.PAUSED
    frozen = len(containers.log_lines(cid))
    # A paused process cannot write: the line count must not move while we watch it
    # for 20 output periods.
    with pytest.raises(AssertionError):
        wait_until(lambda: len(containers.log_lines(cid)) > frozen + 1, 1.0, what="growth")
    containers.runtime.unpause(cid)
    assert containers.runtime.status(cid).status is Status.RUNNING
    wait_until(lambda: len(containers.log_lines(cid)) > frozen + 3, 10, what="resumed output")


def test_unpause_of_running_container_is_invalid_state(containers: Containers) -> None:
    cid, _ = containers.run("sleep", "60")
    with pytest.raises(InvalidState):
        containers.runtime.unpause(cid)


def test_exec_returns_output_and_exit_code(containers: Containers) -> None:
    cid, _ = containers.run("sleep", "60")
    result = containers.runtime.exec(cid, ["sh", "-c", "echo inside; exit 5"], session_id="s1")
    assert result.exit_code == 5
    assert result.output == b"inside\n"
    assert result.pid > 0


def test_exec_env_cwd_user(containers: Containers) -> None:
    cid, _ = containers.run("sleep", "60")
    result = containers.runtime.exec(
        cid, ["sh", "-c", 'echo "$A $(pwd) $(id -u)"'], session_id="s2",
        env=["A=b"], cwd="/tmp", user="65534",
    )
    assert result.exit_code == 0
    assert result.output == b"b /tmp 65534\n"


def test_exec_with_tty(containers: Containers) -> None:
    cid, _ = containers.run("sleep", "60")
    result = containers.runtime.exec(cid, ["tty"], session_id="tty1", tty=True)
    assert result.exit_code == 0
    assert b"/dev/pts/" in result.output


def test_exec_no_new_privileges_and_capabilities(containers: Containers) -> None:
    cid, _ = containers.run("sleep", "60")
    result = containers.runtime.exec(
        cid, ["sh", "-c", "grep -E '^(NoNewPrivs|CapEff)' /proc/self/status"],
        session_id="caps", no_new_privileges=True, cap_add=["CAP_SYS_ADMIN"],
    )
    assert result.exit_code == 0
    text = result.output.decode()
    assert "NoNewPrivs:\t1" in text
    cap_eff = int(text.split("CapEff:\t")[1].split()[0], 16)
    assert cap_eff & (1 << 21)  # CAP_SYS_ADMIN


def test_exec_needs_a_command_and_a_session(containers: Containers) -> None:
    cid, _ = containers.run("sleep", "60")
    with pytest.raises(InvalidArgument, match="command"):
        containers.runtime.exec(cid, [], session_id="x")
    with pytest.raises(InvalidArgument, match="session id"):
        containers.runtime.exec(cid, ["true"], session_id="")
    with pytest.raises(InvalidArgument):
        containers.runtime.exec(cid, ["true"], session_id="../escape")


def test_exec_in_stopped_container_is_an_error(containers: Containers) -> None:
    cid, created = containers.run("true")
    containers.wait_exit(cid, created.pid)
    with pytest.raises(InvalidState, match="stopped container"):
        containers.runtime.exec(cid, ["true"], session_id="late")


def test_exec_stop_terminates_sessions(containers: Containers) -> None:
    cid, _ = containers.run("sleep", "60")
    results: list[ExecResult] = []
    t = threading.Thread(
        target=lambda: results.append(
            containers.runtime.exec(cid, ["sleep", "300"], session_id="long")
        )
    )
    t.start()
    pidfile = containers.runtime.paths(cid).exec_pidfile("long")
    pid = wait_until(lambda: read_pidfile(pidfile), 10, what="exec pid file")
    containers.runtime.exec_stop(cid, [pid], timeout=2)
    t.join(10)
    assert not t.is_alive()
    assert results and results[0].exit_code in (143, 137)


def test_exec_stop_kills_processes_ignoring_term(containers: Containers) -> None:
    cid, _ = containers.run("sleep", "60")
    results: list[ExecResult] = []
    t = threading.Thread(
        target=lambda: results.append(
            containers.runtime.exec(
                cid, ["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"],
                session_id="stubborn",
            )
        )
    )
    t.start()
    pidfile = containers.runtime.paths(cid).exec_pidfile("stubborn")
    pid = wait_until(lambda: read_pidfile(pidfile), 10, what="exec pid file")
    containers.runtime.exec_stop(cid, [pid], timeout=1)
    t.join(10)
    assert results and results[0].exit_code == 137
