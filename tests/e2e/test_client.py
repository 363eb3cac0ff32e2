"""End to end through the Python client: bus -> broker -> worker -> conmon/runc -> log."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest

from bus.protocol import EventMessage
from engine.errors import AlreadyExists, InvalidArgument, InvalidState, NotFound
from tests.e2e.conftest import Engine
from tests.helpers import wait_until

LOOP = "trap 'exit 0' TERM; while true; do echo tick; sleep 0.1; done"


def _types(events: list[EventMessage]) -> list[str]:
    return [e.type for e in events]


def _exited(c, cid: str, timeout: float = 15) -> dict:  # type: ignore[no-untyped-def]
    return wait_until(
        lambda: (s := c.inspect(cid))["state"] == "exited" and s, timeout, what="exit"
    )


def test_lifecycle_event_sequence(up: Engine) -> None:
    c = up.client()
    cid = c.create(rootfs=up.rootfs, args=["sh", "-c", "echo hi; exit 7"]).result["id"]
    c.start(cid)
    assert c.wait(cid).result["exit_code"] == 7
    c.remove(cid)
    history, _ = _history(c, cid)
    assert _types(history) == [
        "container.created", "container.pid_received", "container.network_attached",
        "container.started", "container.exited", "container.network_detached",
        "container.removed",
    ]
    exited = history[4]
    assert exited.data["exit_code"] == 7 and exited.data["expected"] is False
    positions = [e.position for e in history]
    assert positions == sorted(positions)
    assert [e.stream_version for e in history] == [1, 2, 3, 4, 5, 6, 7]


def _history(c, ref: str):  # type: ignore[no-untyped-def]
    from bus.results import parse_events_result

    return parse_events_result(c.history(ref))


def test_rm_container_is_removed_after_exit(up: Engine) -> None:
    c = up.client()
    cid = c.create(rootfs=up.rootfs, args=["true"], auto_remove=True).result["id"]
    c.start(cid)
    wait_until(lambda: cid not in {r["id"] for r in c.ps(all=True)}, 15, what="auto removal")
    history, _ = _history_by_events(c, cid)
    assert _types(history)[-3:] == ["container.exited", "container.network_detached",
                                    "container.removed"]


def _history_by_events(c, cid: str):  # type: ignore[no-untyped-def]
    events, head = c.events(0, 1000)
    return [e for e in events if e.stream == cid], head


def test_names_and_prefixes_resolve(up: Engine) -> None:
    c = up.client()
    cid = c.create(name="web-1", rootfs=up.rootfs, args=["sleep", "30"]).result["id"]
    assert c.resolve("web-1").id == cid
    assert c.resolve(cid[:10]).id == cid
    assert c.inspect("web-1")["id"] == cid
    with pytest.raises(AlreadyExists):
        c.create(name="web-1", rootfs=up.rootfs, args=["true"])
    with pytest.raises(NotFound):
        c.resolve("nope-nothing")
    with pytest.raises(InvalidArgument):
        c.resolve("../etc")


def test_stop_records_expected_exit_and_kill_signals(up: Engine) -> None:
    c = up.client()
    cid = c.create(rootfs=up.rootfs, args=["sh", "-c", LOOP]).result["id"]
    c.start(cid)
    wait_until(lambda: c.logs(cid)["lines"], 10, what="output")
    reply = c.stop(cid, timeout=5)
    assert reply.result["exit_code"] == 0
    history, _ = _history(c, cid)
    assert _types(history)[-3:] == ["container.stop_requested", "container.exited",
                                    "container.network_detached"]
    assert history[-2].data["reason"] == "stop" and history[-2].data["expected"] is True
    # kill: a second container, SIGKILL, exit 137
    k = c.create(rootfs=up.rootfs, args=["sleep", "60"]).result["id"]
    c.start(k)
    c.kill(k, "KILL")
    assert c.wait(k).result["exit_code"] == 137
    with pytest.raises(InvalidArgument, match="signal"):
        c.kill(cid, "SIGNOPE")


def test_pause_unpause_exec(up: Engine) -> None:
    c = up.client()
    cid = c.create(rootfs=up.rootfs, args=["sleep", "60"]).result["id"]
    c.start(cid)
    c.pause(cid)
    assert c.inspect(cid)["state"] == "paused"
    with pytest.raises(InvalidState):
        c.exec(cid, ["true"])
    c.unpause(cid)
    reply = c.exec(cid, ["sh", "-c", "echo $X; exit 3"], env=["X=from-exec"])
    assert reply.result["exit_code"] == 3 and reply.result["output"] == "from-exec\n"
    history, _ = _history(c, cid)
    started = next(e for e in history if e.type == "container.exec_started")
    exited = next(e for e in history if e.type == "container.exec_exited")
    assert started.data["session_id"] == exited.data["session_id"]
    assert started.actor == exited.actor == c.ping()["identity"]


def test_remove_running_needs_force(up: Engine) -> None:
    c = up.client()
    cid = c.create(rootfs=up.rootfs, args=["sleep", "60"]).result["id"]
    c.start(cid)
    with pytest.raises(InvalidState, match="force"):
        c.remove(cid)
    c.remove(cid, force=True)
    assert cid not in {r["id"] for r in c.ps(all=True)}
    history, _ = _history_by_events(c, cid)
    assert _types(history)[-3:] == ["container.exited", "container.network_detached",
                                    "container.removed"]


def test_checkpoint_and_restore_through_the_bus(up: Engine) -> None:
    c = up.client()
    counter = "i=0; while true; do echo n=$i; i=$((i+1)); sleep 0.05; done"
    cid = c.create(rootfs=up.rootfs, args=["sh", "-c", counter]).result["id"]
    c.start(cid)
    wait_until(lambda: len(c.logs(cid)["lines"]) >= 3, 10, what="output")
    c.checkpoint(cid)
    state = c.inspect(cid)
    assert state["state"] == "exited" and state["exit_reason"] == "checkpoint"
    c.restore(cid)
    assert c.inspect(cid)["state"] == "running"

    def values() -> list[int]:
        return [int(line[3].split("=")[1]) for line in c.logs(cid)["lines"]]

    before = len(values())
    wait_until(lambda: len(values()) > before + 3, 10, what="output after restore")
    seq = values()
    assert seq == list(range(len(seq))), "the restored counter went on without restarting"


def test_retry_with_same_command_id_runs_once(up: Engine) -> None:
    c = up.client()
    cid = c.create(rootfs=up.rootfs, args=["sleep", "60"]).result["id"]
    command = c.command("container.start", cid, "local", {})
    first = c.request(command)
    second = c.request(command)
    assert first.ok and second.ok
    assert second.positions == first.positions
    history, _ = _history(c, cid)
    assert _types(history).count("container.started") == 1


def test_refusal_of_a_valid_command_is_recorded_apart(up: Engine) -> None:
    c = up.client()
    cid = c.create(rootfs=up.rootfs, args=["sleep", "60"]).result["id"]
    with pytest.raises(InvalidState):
        c.unpause(cid)
    history, _ = _history(c, cid)
    assert "command.refused" not in _types(history)
    events, _ = c.events()
    refused = [e for e in events if e.type == "command.refused"]
    assert [(e.data["container"], e.data["code"]) for e in refused] == [(cid, "invalid_state")]


def test_bad_input_writes_nothing(up: Engine) -> None:
    c = up.client()
    store = up.store()
    before = store.max_position()
    with pytest.raises(InvalidArgument, match="absolute"):
        c.create(rootfs="relative/path", args=["true"])
    with pytest.raises(InvalidArgument):
        c.create(rootfs=up.rootfs, args=["true"], name="bad/name")
    with pytest.raises(InvalidArgument, match="unknown run option"):
        c.create(rootfs=up.rootfs, args=["true"], privileged=True)
    assert store.max_position() == before
    store.close()


def test_subscription_sees_every_event_once(up: Engine) -> None:
    c = up.client()
    seen: list[EventMessage] = []
    sub = c.subscribe(from_position=1)
    done = threading.Event()

    def consume() -> None:
        while not done.is_set():
            e = sub.get(0.1)
            if e is not None:
                seen.append(e)

    t = threading.Thread(target=consume)
    t.start()
    try:
        for _ in range(3):
            cid = c.create(rootfs=up.rootfs, args=["true"], auto_remove=True).result["id"]
            c.start(cid)
            c.wait(cid)
        head = up.store().max_position()
        wait_until(lambda: seen and seen[-1].position >= head, 15, what="subscriber caught up")
    finally:
        done.set()
        t.join(5)
        sub.close()
    positions = [e.position for e in seen]
    assert positions == list(range(1, positions[-1] + 1))


def test_twenty_concurrent_run_rm(up: Engine) -> None:
    errors: list[BaseException] = []
    ids: list[str] = []

    def one() -> None:
        try:
            c = up.client()
            cid = c.create(
                rootfs=up.rootfs, args=["sh", "-c", "echo x"], auto_remove=True
            ).result["id"]
            ids.append(cid)
            c.start(cid)
            assert c.wait(cid, timeout=60).result["exit_code"] == 0
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    c = up.client()
    wait_until(lambda: not c.ps(all=True), 30, what="all removed")
    events, _ = c.events(0, 1000)
    for cid in ids:
        assert _types([e for e in events if e.stream == cid]) == [
            "container.created", "container.pid_received", "container.network_attached",
            "container.started", "container.exited", "container.network_detached",
            "container.removed",
        ]


def test_unknown_container_command_is_not_found(up: Engine) -> None:
    c = up.client()
    with pytest.raises(NotFound):
        c.start(uuid.uuid4().hex)


def test_wait_does_not_block_a_stop_of_the_same_container(up: Engine) -> None:
    c = up.client()
    cid = c.create(rootfs=up.rootfs, args=["sh", "-c", LOOP]).result["id"]
    c.start(cid)
    codes: list[int] = []
    waiter = threading.Thread(
        target=lambda: codes.append(up.client().wait(cid).result["exit_code"])
    )
    waiter.start()
    wait_until(lambda: c.logs(cid)["lines"], 10, what="output")
    c.stop(cid, timeout=5)
    waiter.join(15)
    assert codes == [0]


def test_logs_long_poll_returns_on_exit(up: Engine) -> None:
    import time

    c = up.client()
    cid = c.create(rootfs=up.rootfs, args=["sleep", "1"]).result["id"]
    c.start(cid)
    start = time.monotonic()
    chunk = c.logs(cid, offset=0, wait_ms=5000)
    assert chunk["state"] == "exited" and chunk["exit_code"] == 0
    assert time.monotonic() - start < 4


def test_a_command_by_name_is_one_round_trip_and_records_the_full_id(up: Engine) -> None:
    """`berth stop NAME`: the worker resolves the name; the client sends one command
    (no query.resolve first), and the log names the container by its full id."""
    c = up.client()
    cid = c.create(name="one-trip", rootfs=up.rootfs, args=["sleep", "30"]).result["id"]
    fresh = up.client()  # knows nothing of the container: no cached node
    sent: list[str] = []
    request = fresh.request

    def counting(command: Any, **kw: Any) -> Any:
        sent.append(command.type)
        return request(command, **kw)

    fresh.request = counting  # type: ignore[method-assign]
    fresh.start("one-trip")
    fresh.stop("one-trip", timeout=1)
    assert sent == ["container.start", "container.stop"]
    history, _ = _history(c, cid)
    assert _types(history)[-3:] == ["container.stop_requested", "container.exited",
                                    "container.network_detached"]
    assert all(e.stream == cid for e in history)
    with pytest.raises(NotFound):
        fresh.stop("no-such-name")


def test_the_client_checks_a_spec_at_its_edge_and_takes_the_cli_forms(up: Engine) -> None:
    """Regression: create(args="echo hi") ran `e`; memory="64m" raised a TypeError from
    deep inside; ports=["8080:80"] said "unknown protocol '0'"."""
    c = up.client()
    before = c.ps(all=True)
    with pytest.raises(InvalidArgument, match="args must be a list of strings"):
        c.create(rootfs=up.rootfs, args="echo hi")
    with pytest.raises(InvalidArgument, match="invalid size"):
        c.create(rootfs=up.rootfs, args=["true"], memory="lots")
    with pytest.raises(InvalidArgument, match="invalid run option pids_limit"):
        c.create(rootfs=up.rootfs, args=["true"], pids_limit="10")
    assert c.ps(all=True) == before  # nothing was sent, nothing created
    cid = c.create(rootfs=up.rootfs, args=("sleep", "30"), memory="64m",
                   env={"A": "1"}).result["id"]
    spec = c.inspect(cid)["spec"]
    assert spec["memory"] == 64 * 1024 * 1024 and spec["env"] == ["A=1"]
    assert spec["args"] == ["sleep", "30"]


def test_ports_in_the_cli_form_become_the_wire_form() -> None:
    from engine.containers.spec import spec_from_user

    data = spec_from_user({"rootfs": "/r", "args": ["true"],
                           "ports": ["8080:80", "127.0.0.1:53:53/udp"]})
    assert data["ports"] == [["", 8080, 80, "tcp"], ["127.0.0.1", 53, 53, "udp"]]
    with pytest.raises(InvalidArgument, match="invalid port mapping '8080'"):
        spec_from_user({"rootfs": "/r", "args": ["true"], "ports": ["8080"]})
