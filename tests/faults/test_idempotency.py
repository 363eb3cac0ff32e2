"""A resent command id runs once, whichever layer sees the resend first.

Three layers remember a command id: the broker's reply cache and the worker link's
recent replies (both in memory), and the worker's service, which asks the store for
the command's recorded outcome (the row written with its events) before acting. Each
test makes the layers above the one under test forget by restarting them, resends
the same id through ``bus.client`` and counts the SIDE EFFECT inside the container,
not only the reply: the container is a busybox shell that prints one line per
SIGUSR1 it gets (a ``container.kill``), and an exec prints one line into the
container's own output (``/proc/1/fd/1``). Both land in the container's log file,
which the test reads from the host, so a doubled signal or a re-run exec shows as
a second line whatever the reply says.
"""

from __future__ import annotations

import os
import signal
import uuid
from datetime import UTC, datetime, timedelta

from bus.client import Client
from bus.protocol import Command, Reply, encode
from engine import command_types as t
from engine.containers.service import system_command_id
from engine.runtime.waits import pid_alive
from engine.store.store import EventStore
from tests.faults.cluster import Cluster, Node
from tests.helpers import wait_until

Attempts = tuple[tuple[Command, Reply], tuple[Command, Reply]]

TRAPS = (
    "trap 'echo got-usr1' USR1; trap 'echo got-usr2' USR2; echo ready; "
    "while :; do sleep 1 & wait $!; done"
)
EXEC_ARGV = ["sh", "-c", "echo exec-ran > /proc/1/fd/1"]


def _log_lines(node: Node, cid: str) -> list[str]:
    """The container's output as conmon wrote it (k8s-file: time, stream, tag, text)."""
    try:
        with open(node.runtime().log_path(cid), errors="replace") as f:
            return [line.split(" ", 3)[-1] for line in f.read().splitlines()]
    except FileNotFoundError:
        return []


def _trap_container(cluster: Cluster, c: Client) -> str:
    cid = str(c.create(rootfs=cluster.rootfs, args=["sh", "-c", TRAPS]).result["id"])
    c.start(cid)
    node = cluster.nodes["local"]
    wait_until(lambda: "ready" in _log_lines(node, cid), 30, what="the traps installed")
    return cid


def _first_attempts(cluster: Cluster, c: Client, cid: str) -> Attempts:
    """A kill (SIGUSR1) and an exec with explicit ids, each answered once."""
    kill = c.command(t.KILL, cid, "local", {"signal": "SIGUSR1"}, command_id=str(uuid.uuid4()))
    exe = c.command(t.EXEC, cid, "local", {"cmd": EXEC_ARGV}, command_id=str(uuid.uuid4()))
    first_kill = c.request(kill)
    first_exec = c.request(exe)
    assert first_exec.result["exit_code"] == 0
    node = cluster.nodes["local"]
    wait_until(lambda: _log_lines(node, cid).count("got-usr1") == 1, 30, what="the first signal")
    assert _log_lines(node, cid).count("exec-ran") == 1
    return (kill, first_kill), (exe, first_exec)


def _resend_and_count(cluster: Cluster, c: Client, cid: str, first: Attempts) -> None:
    """Resend both ids; each reply matches its first one, and neither side effect
    happened again. A fresh SIGUSR2 afterwards is the marker: the shell runs pending
    traps in signal order, so a doubled SIGUSR1 would print before the marker."""
    node = cluster.nodes["local"]
    (kill, first_kill), (exe, first_exec) = first
    again_kill = c.request(kill)
    again_exec = c.request(exe)
    assert again_kill.ok and again_exec.ok
    assert again_kill.positions == first_kill.positions
    # A replayed exec names the events recorded under its own id (its end); the first
    # reply also named its start, recorded under a derived id.
    assert set(again_exec.positions) <= set(first_exec.positions) and again_exec.positions
    # Whoever answers, the exec's reply still says how it ended (its output is not
    # kept once the first reply is gone).
    for key in ("exit_code", "session_id"):
        assert again_exec.result[key] == first_exec.result[key], again_exec.result
    c.kill(cid, "SIGUSR2")
    wait_until(lambda: "got-usr2" in _log_lines(node, cid), 30, what="the marker signal")
    lines = _log_lines(node, cid)
    assert lines.count("got-usr1") == 1, lines
    assert lines.count("exec-ran") == 1, lines
    assert lines.index("got-usr1") < lines.index("got-usr2")
    with EventStore(cluster.db_url) as store:
        outcome = store.outcome(kill.id)
        assert outcome is not None and outcome.ok
        signalled = [r for r in store.read_stream(cid) if r.metadata.causation_id == kill.id]
        assert len(signalled) == 1
        ran = [r for r in store.read_stream(cid) if r.metadata.causation_id == exe.id]
        assert len(ran) == 1


def test_resend_after_broker_restart_runs_once(cluster: Cluster) -> None:
    """(a) The broker's reply cache is cold: the (same) worker sees the resend first
    and answers it from its link's recent replies."""
    cluster.start_broker_process()
    cluster.start_worker("local")
    c = cluster.client(timeout=5, retries=2)
    cid = _trap_container(cluster, c)
    first = _first_attempts(cluster, c, cid)
    worker_pid = cluster.nodes["local"].proc.pid  # type: ignore[union-attr]
    cluster.kill9(cluster.broker_proc)
    cluster.start_broker_process()
    cluster.wait_serving("local")
    _resend_and_count(cluster, c, cid, first)
    assert pid_alive(worker_pid), "the worker kept running: only the broker forgot"


def test_resend_after_worker_restart_runs_once(cluster: Cluster) -> None:
    """(b) The worker restarted, the broker kept running: its reply cache answers,
    and the new worker never carries the resend out."""
    broker = cluster.start_broker_thread()
    cluster.start_worker("local")
    c = cluster.client(timeout=5, retries=2)
    cid = _trap_container(cluster, c)
    first = _first_attempts(cluster, c, cid)
    cluster.kill9(cluster.nodes["local"].proc)
    cluster.start_worker("local")
    absorbed = broker.stats["retries_absorbed"]
    _resend_and_count(cluster, c, cid, first)  # the side effects counted: once each
    # Both resends were answered from the broker's cache. At least twice, not exactly:
    # on a loaded machine a client may time out and resend again, absorbed again.
    assert broker.stats["retries_absorbed"] >= absorbed + 2


def test_resend_after_broker_and_worker_restart_runs_once(cluster: Cluster) -> None:
    """(c) Both restarted: nothing in memory remembers the ids, only the store's
    outcome rows stand between the resend and a second signal or exec."""
    cluster.start_broker_process()
    cluster.start_worker("local")
    c = cluster.client(timeout=5, retries=2)
    cid = _trap_container(cluster, c)
    first = _first_attempts(cluster, c, cid)
    cluster.kill9(cluster.nodes["local"].proc)
    cluster.kill9(cluster.broker_proc)
    cluster.start_broker_process()
    cluster.start_worker("local")
    _resend_and_count(cluster, c, cid, first)


def test_exec_resent_after_its_worker_died_mid_session_runs_once(cluster: Cluster) -> None:
    """The first attempt never answered: the worker and broker were killed while the
    exec session ran (its start recorded, its end not), then the session was killed.
    The session ran under its own conmon, which recorded its real end (SIGKILL, 137):
    the fresh worker records that, and the resend gets it without running again."""
    cluster.start_broker_process()
    cluster.start_worker("local")
    c = cluster.client(timeout=5, retries=2)
    cid = _trap_container(cluster, c)
    node = cluster.nodes["local"]
    argv = ["sh", "-c", "echo exec-ran > /proc/1/fd/1; exec sleep 600"]
    exe = c.command(t.EXEC, cid, "local", {"cmd": argv}, command_id=str(uuid.uuid4()))
    sender = Client(cluster.endpoints.frontend, timeout=60, retries=0)
    try:
        sender._socket().send(encode(exe))  # sent once; its reply will never come
        wait_until(lambda: "exec-ran" in _log_lines(node, cid), 30, what="the exec running")
        with EventStore(cluster.db_url) as store:
            started = system_command_id(exe.id, "started")
            wait_until(lambda: any(r.metadata.causation_id == started
                                   for r in store.read_stream(cid)), 30,
                       what="the exec's start recorded")
    finally:
        sender.close()
    cluster.kill9(node.proc)
    cluster.kill9(cluster.broker_proc)
    _kill_exec_sessions(cid)
    cluster.start_broker_process()
    cluster.start_worker("local")
    reply = c.request(exe)
    assert reply.ok and reply.result["exit_code"] == 137
    ended = [e for e in c.history(cid)["events"] if e["type"] == "container.exec_exited"]
    assert [e["data"]["exit_code"] for e in ended] == [137]
    c.kill(cid, "SIGUSR2")
    wait_until(lambda: "got-usr2" in _log_lines(node, cid), 30, what="the marker signal")
    assert _log_lines(node, cid).count("exec-ran") == 1
    assert c.request(exe).positions == reply.positions


def _kill_exec_sessions(cid: str) -> None:
    """The killed worker's exec (``sleep 600``) lives on in the container: end it so
    it does not outlast the test (the container's own teardown kills the rest)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            continue
        if cmd[:2] == [b"sleep", b"600"] and _in_container(int(pid), cid):
            os.kill(int(pid), signal.SIGKILL)


def _in_container(pid: int, cid: str) -> bool:
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return cid in f.read()
    except OSError:
        return False


def test_stop_resent_after_its_worker_died_mid_stop_still_stops(cluster: Cluster) -> None:
    """The stop's intent (stop_requested) was recorded under the command's id and the
    worker died while the container ignored SIGTERM: the resend must finish the stop,
    not answer "done" from the intent while the container runs on."""
    cluster.start_broker_process()
    cluster.start_worker("local")
    c = cluster.client(timeout=5, retries=2)
    stubborn = "trap 'echo got-term' TERM; echo ready; while :; do sleep 1 & wait $!; done"
    cid = str(c.create(rootfs=cluster.rootfs, args=["sh", "-c", stubborn]).result["id"])
    c.start(cid)
    node = cluster.nodes["local"]
    wait_until(lambda: "ready" in _log_lines(node, cid), 30, what="the TERM trap installed")
    # A short grace period, over before the resend: the resend kills at once and
    # does not send the stop signal a second time.
    stop = c.command(t.STOP, cid, "local", {"timeout": 1.0}, command_id=str(uuid.uuid4()))
    sender = cluster.client(timeout=60, retries=0)
    sender._socket().send(encode(stop))  # sent once; its reply will never come
    wait_until(lambda: "got-term" in _log_lines(node, cid), 30, what="the stop signal")
    cluster.kill9(node.proc)
    cluster.kill9(cluster.broker_proc)
    with EventStore(cluster.db_url) as store:
        requested = [r.metadata.recorded_at for r in store.read_stream(cid)
                     if r.metadata.causation_id == stop.id]
    assert len(requested) == 1, "the stop's intent was not recorded under its id"
    wait_until(lambda: datetime.now(UTC) > requested[0] + timedelta(seconds=1), 30,
               interval=0.05, what="the grace period over")
    cluster.start_broker_process()
    cluster.start_worker("local")
    reply = c.request(stop)
    assert reply.ok, reply
    state = c.inspect(cid)
    assert (state["state"], state["exit_code"]) == ("exited", 137), state
    assert _log_lines(node, cid).count("got-term") == 1, "the stop signal was sent twice"
    assert c.request(stop).ok  # and a further resend changes nothing
    assert c.inspect(cid)["finished_at"] == state["finished_at"]
