"""Killed processes lose nothing: conmon outlives the worker, and exits that
happen while no worker runs are recorded when one comes back."""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime, timedelta

import pytest
import zmq

from engine.runtime.waits import pid_alive, wait_pids_exit
from tests.e2e.conftest import Engine
from tests.helpers import wait_until


@pytest.fixture
def default_network() -> str:
    """Not about networks: the worker gives containers none (no CNI cost)."""
    return "none"


def test_worker_killed_while_container_runs_records_exit_on_restart(engine: Engine) -> None:
    proc = engine.start_worker_process()
    c = engine.client(timeout=2, retries=2)
    exit_early = c.create(rootfs=engine.rootfs, args=["sleep", "601"]).result["id"]
    keeps_running = c.create(rootfs=engine.rootfs, args=["sleep", "600"]).result["id"]
    c.start(exit_early)
    c.start(keeps_running)
    pids = {r["id"]: r["pid"] for r in c.ps()}
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    # The containers live on under conmon with no worker at all.
    assert pid_alive(pids[exit_early]) and pid_alive(pids[keeps_running])
    killed = datetime.now(UTC)
    os.kill(pids[exit_early], signal.SIGKILL)  # exits while nobody watches
    assert wait_pids_exit([pids[exit_early]], 10)
    wait_until(lambda: os.path.exists(os.path.join(engine.run, "runtime", "exits", exit_early)),
               10, what="conmon's exit file")
    written = datetime.now(UTC)
    time.sleep(1.5)  # so the recording, later, cannot pass for the exit's own time
    engine.start_worker_process()
    state = wait_until(
        lambda: (s := c.inspect(exit_early))["state"] == "exited" and s, 20, what="recorded exit"
    )
    assert state["exit_code"] == 137
    # The exit happened while no worker ran: its time is conmon's, not the recording's.
    finished = datetime.fromisoformat(state["finished_at"])
    assert killed - timedelta(seconds=0.1) <= finished <= written + timedelta(seconds=0.1), \
        (killed, finished, written)
    assert c.inspect(keeps_running)["state"] == "running"
    assert pid_alive(pids[keeps_running])
    store = engine.store()
    assert store.verify_read_model() == []
    assert store.verify_chain() is None
    store.close()


def test_exit_of_a_lost_container_is_recorded_with_unknown_code(engine: Engine) -> None:
    proc = engine.start_worker_process()
    c = engine.client(timeout=2, retries=2)
    cid = c.create(rootfs=engine.rootfs, args=["sleep", "600"]).result["id"]
    c.start(cid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    # Someone removes the container behind berth's back, exit file included.
    from engine.runtime import OCIRuntime

    runtime = OCIRuntime(engine.config().runtime_config())
    runtime.delete(cid, force=True)
    wait_until(lambda: runtime.exit_status(cid), 10, what="exit file")
    os.unlink(runtime.paths(cid).exit_file)
    engine.start_worker_process()
    state = wait_until(
        lambda: (s := c.inspect(cid))["state"] == "exited" and s, 20, what="recorded exit"
    )
    # Its conmon is gone and left no exit status: the code is unknown (-1).
    assert state["exit_code"] == -1 and state["exit_reason"] == "conmon_lost"


def test_garbage_frames_leave_the_broker_answering(up: Engine) -> None:
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(up.endpoints.frontend)
    try:
        frames = (
            b"", b"\xff\x00garbage", b"\x93\x01\x02\x03", os.urandom(2048),
            b"\x00" * (2 * 1024 * 1024),
        )
        for frame in frames:
            sock.send(frame)
        sock.send_multipart([b"a", b"b", b"c"])
    finally:
        sock.close()
    c = up.client(timeout=2)
    assert c.ping()
    assert c.ps() == []
    result = up.cli("run", "--rm", up.rootfs, "true")
    assert result.returncode == 0, result.stderr


def test_exec_resent_after_a_worker_kill_does_not_run_twice(engine: Engine) -> None:
    from bus.protocol import encode
    from bus.results import parse_events_result

    proc = engine.start_worker_process()
    c = engine.client(timeout=5, retries=2)
    cid = c.create(rootfs=engine.rootfs, args=["sleep", "600"]).result["id"]
    c.start(cid)
    command = c.command(
        "container.exec", cid, "local",
        {"cmd": ["sh", "-c", "echo ran >> /tmp/runs; sleep 3; exit 4"], "session_id": "once"},
    )
    ctx = zmq.Context.instance()
    raw = ctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(engine.endpoints.frontend)
    try:
        raw.send(encode(command))  # the publisher's first try; its reply never comes
        wait_until(
            lambda: any(e.type == "container.exec_started"
                        for e in parse_events_result(c.history(cid))[0]),
            15, what="exec started",
        )
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        raw.close()
    engine.start_worker_process()
    # The resend, same command id: the session outlived the worker under its conmon,
    # so the resend follows it (no second process) and gets its real exit code.
    reply = c.request(command, reply_timeout=30)
    assert reply.result["exit_code"] == 4
    history = parse_events_result(c.history(cid))[0]
    sessions = [e for e in history if e.type.startswith("container.exec_")]
    assert [(e.type, e.data["session_id"]) for e in sessions] == [
        ("container.exec_requested", "once"), ("container.exec_started", "once"),
        ("container.exec_exited", "once")]
    assert sessions[2].data["exit_code"] == 4
    assert c.exec(cid, ["cat", "/tmp/runs"]).result["output"] == "ran\n"
    assert c.request(command).positions == reply.positions  # and a third try changes nothing
