"""Restart policies with real containers: counted from the log, never doubled, never
undoing an explicit stop, backing off as Docker does."""

from __future__ import annotations

import os
import shutil
import signal

import pytest

from engine import events as ev
from engine.restarts.rules import backoff
from engine.runtime import OCIRuntime
from engine.runtime.waits import wait_pids_exit
from tests.e2e.conftest import Engine
from tests.helpers import wait_until
from tests.restarts.helpers import armed_worker, count, of_type, stream


def _judged(engine: Engine, cid: str, at_least: int) -> bool:
    worker = engine.worker
    return bool(worker and worker.restarts and worker.restarts.judged.get(cid, 0) >= at_least)


def test_on_failure_3_starts_four_times_then_stays_exited(up: Engine) -> None:
    c = up.client()
    cid = c.create(rootfs=up.rootfs, args=["sh", "-c", "exit 1"],
                   restart="on-failure:3").result["id"]
    c.start(cid)
    wait_until(lambda: _judged(up, cid, 4), 30, what="four exits judged")
    records = stream(up, cid)
    assert len(of_type(records, ev.Started)) == 4
    restarts = [r.event for r in of_type(records, ev.Restarting)]
    assert [(e.attempt, e.exit_code, e.policy) for e in restarts] == [
        (1, 1, "on-failure:3"), (2, 1, "on-failure:3"), (3, 1, "on-failure:3")]
    # each restart answers its own exit, named by position
    exits = [r.position for r in of_type(records, ev.Exited)]
    assert [e.exit_position for e in restarts] == exits[:3]
    state = c.inspect(cid)
    assert (state["state"], state["exit_code"], state["restart_count"]) == ("exited", 1, 3)


def test_on_failure_leaves_a_clean_exit_alone(up: Engine) -> None:
    c = up.client()
    cid = c.create(rootfs=up.rootfs, args=["true"], restart="on-failure").result["id"]
    c.start(cid)
    wait_until(lambda: _judged(up, cid, 1), 20, what="the exit judged")
    assert count(up, cid, ev.Restarting) == 0
    assert c.inspect(cid)["state"] == "exited"


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_an_explicit_stop_wins_over_always(up: Engine, how: str) -> None:
    c = up.client()
    cid = c.create(rootfs=up.rootfs, args=["sleep", "600"], restart="always").result["id"]
    c.start(cid)
    if how == "stop":
        c.stop(cid, timeout=5)
    else:
        c.kill(cid, "KILL")
    wait_until(lambda: _judged(up, cid, 1), 20, what="the exit judged")
    assert count(up, cid, ev.Restarting) == 0
    state = c.inspect(cid)
    assert (state["state"], state["exit_reason"]) == ("exited", "stop")


def test_backoff_doubles_from_100ms(up: Engine) -> None:
    c = up.client()
    cid = c.create(rootfs=up.rootfs, args=["sh", "-c", "exit 3"],
                   restart="always").result["id"]
    c.start(cid)
    wait_until(lambda: count(up, cid, ev.Restarting) >= 4, 30, what="four restarts")
    c.remove(cid, force=True)
    records = stream(up, cid)
    restarts = of_type(records, ev.Restarting)[:4]
    assert [r.event.delay_s for r in restarts] == [backoff(i) for i in range(4)] \
        == [0.1, 0.2, 0.4, 0.8]
    # each restart waited its delay after its intent was recorded
    started = of_type(records, ev.Started)
    for intent, start in zip(restarts, started[1:], strict=False):
        assert isinstance(intent.event, ev.Restarting)
        waited = (start.metadata.recorded_at - intent.metadata.recorded_at).total_seconds()
        assert waited >= intent.event.delay_s


@pytest.mark.parametrize("point", ["container.restart.deciding", "container.restart.intended"])
def test_always_survives_a_worker_killed_between_exit_and_restart(engine: Engine,
                                                                  point: str) -> None:
    armed_worker(engine, point)
    c = engine.client(timeout=2, retries=3)
    wait_until(lambda: _ping(c), 30, what="the armed worker answering")
    cid = c.create(rootfs=engine.rootfs, args=["sh", "-c", "sleep 0.5; exit 7"],
                   restart="always").result["id"]
    c.start(cid)
    proc = engine.worker_proc
    assert proc is not None
    wait_until(lambda: proc.poll() is not None, 30, what="the worker dying at its fault point")
    assert proc.returncode == -signal.SIGKILL
    first = stream(engine, cid)
    exits = of_type(first, ev.Exited)
    assert len(exits) == 1 and count(engine, cid, ev.Started) == 1
    assert len(of_type(first, ev.Restarting)) == (point == "container.restart.intended")
    engine.start_worker()
    wait_until(lambda: count(engine, cid, ev.Started) >= 2, 20, what="the restart")
    c.remove(cid, force=True)
    records = stream(engine, cid)
    answers = [r.event.exit_position for r in of_type(records, ev.Restarting)
               if isinstance(r.event, ev.Restarting)]
    assert answers.count(exits[0].position) == 1  # one restart for the one exit
    assert len(answers) == len(set(answers))
    # every restart recorded is followed by exactly one start before the next exit
    kinds = [type(r.event).__name__ for r in records
             if isinstance(r.event, (ev.Restarting, ev.Started, ev.Exited))]
    text = " ".join(kinds)
    assert "Restarting Started Restarting" not in text
    assert "Started Started" not in text


def _ping(c: object) -> bool:
    from engine.errors import BerthError

    try:
        c.ps()  # type: ignore[attr-defined]
        return True
    except BerthError:
        return False


def test_unless_stopped_stays_stopped_and_always_comes_back_after_down_up(
        up: Engine) -> None:
    c = up.client()
    stopped = c.create(rootfs=up.rootfs, args=["sleep", "600"],
                       restart="unless-stopped").result["id"]
    crashed = c.create(rootfs=up.rootfs, args=["sleep", "600"], restart="always").result["id"]
    c.start(stopped)
    c.start(crashed)
    c.stop(stopped, timeout=5)
    pid = c.inspect(crashed)["pid"]
    assert up.worker is not None
    up.worker.close()  # berth down: containers keep running
    up.worker = None
    os.kill(pid, signal.SIGKILL)  # dies while no worker watches
    assert wait_pids_exit([pid], 10)
    runtime = OCIRuntime(up.config().runtime_config())
    wait_until(lambda: runtime.exit_status(crashed), 10, what="conmon's exit file")
    up.start_worker()  # berth up
    wait_until(lambda: c.inspect(crashed)["state"] == "running"
               and count(up, crashed, ev.Started) == 2, 20, what="always restarted after up")
    wait_until(lambda: _judged(up, stopped, 1), 20, what="the stopped one judged")
    assert count(up, stopped, ev.Restarting) == 0
    assert c.inspect(stopped)["state"] == "exited"
    assert c.inspect(crashed)["restart_count"] == 1


def test_a_restart_the_runtime_refuses_is_recorded_once_and_not_retried(
        up: Engine, short_tmp: str) -> None:
    rootfs = os.path.join(short_tmp, "rootfs")
    shutil.copytree(up.rootfs, rootfs, symlinks=True)
    c = up.client()
    # the container breaks its own root filesystem, so its restart cannot exec sh
    cid = c.create(rootfs=rootfs, args=["/bin/sh", "-c", "rm -rf /bin; exit 1"],
                   restart="always").result["id"]
    c.start(cid)
    wait_until(lambda: of_type(stream(up, cid), ev.CommandFailed), 30,
               what="the failed restart recorded")
    assert up.worker is not None and up.worker.restarts is not None
    up.worker.restarts.ask(cid)  # as a worker's start would: the failure is the answer
    wait_until(lambda: _judged(up, cid, 2), 10, what="asked again after the failure")
    records = stream(up, cid)
    failed = of_type(records, ev.CommandFailed)
    assert len(failed) == 1 and isinstance(failed[0].event, ev.CommandFailed)
    assert failed[0].event.command_type == "container.restart"
    assert failed[0].event.message.startswith("restart 1 failed")
    assert len(of_type(records, ev.Restarting)) == 1
    assert len(of_type(records, ev.Started)) == 1
    assert c.inspect(cid)["state"] == "exited"


def test_a_stop_during_the_backoff_calls_the_restart_off(up: Engine) -> None:
    c = up.client()
    cid = c.create(rootfs=up.rootfs, args=["sh", "-c", "exit 3"], restart="always"
                   ).result["id"]
    c.start(cid)
    # the fifth restart waits 1.6 s: stop the container while it waits
    wait_until(lambda: count(up, cid, ev.Restarting) >= 5
               and isinstance(stream(up, cid)[-1].event, ev.Restarting), 30,
               what="a restart waiting out its backoff")
    reply = c.stop(cid, timeout=1)
    assert reply.result["state"] == "exited"
    worker = up.worker
    assert worker is not None and worker.restarts is not None
    wait_until(lambda: worker.restarts is not None and worker.restarts.called_off >= 1, 10,
               what="the restart called off when it came due")
    records = stream(up, cid)
    assert isinstance(records[-1].event, ev.StopRequested)
    assert len(of_type(records, ev.Started)) == 5  # the start and four restarts
    assert c.inspect(cid)["state"] == "exited"
