"""The broker over real sockets: routing, refusals, liveness, re-dispatch, dedup."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from bus.broker import Broker
from bus.client import Client
from bus.endpoints import Endpoints
from bus.protocol import MAX_FRAME_SIZE, Command, EventMessage, Reply, decode, encode
from bus.worker_link import WorkerLink
from engine.errors import NotFound, Unavailable
from tests.bus.helpers import HEARTBEAT, MemoryLog, Recorder, wait_until, worker_count


class Raw:
    """A bare DEALER on the frontend, to send frames no Client would."""

    def __init__(self, endpoint: str) -> None:
        self.sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)

    def send(self, *frames: bytes) -> None:
        self.sock.send_multipart(list(frames))

    def reply(self, timeout: float = 3.0) -> Reply:
        assert self.sock.poll(int(timeout * 1000)), "no reply"
        msg = decode(self.sock.recv_multipart()[-1])
        assert isinstance(msg, Reply)
        return msg

    def close(self) -> None:
        self.sock.close(linger=0)


@pytest.fixture
def raw(endpoints: Endpoints) -> Iterator[Callable[[], Raw]]:
    made: list[Raw] = []

    def make() -> Raw:
        made.append(Raw(endpoints.frontend))
        return made[-1]

    yield make
    for r in made:
        r.close()


def test_ping_is_answered_by_the_broker_without_workers(broker: Broker, client: Client) -> None:
    health = client.ping()
    assert health["broker"] is True and health["workers"] == []


def test_round_trip_and_routing_by_node(broker: Broker, client: Client,
                                        make_worker: Callable[..., WorkerLink]) -> None:
    a, b = Recorder("a"), Recorder("b")
    make_worker("a", a)
    make_worker("b", b)
    for _ in range(3):
        assert client.send("container.start", "web", "b").result["worker"] == "b"
        assert client.send("container.start", "web", "a").result["worker"] == "a"
    assert len(a.commands) == len(b.commands) == 3


def test_unknown_node_is_refused_at_once(broker: Broker, client: Client,
                                         make_worker: Callable[..., WorkerLink]) -> None:
    make_worker("a", Recorder())
    started = time.monotonic()
    with pytest.raises(Unavailable, match="no live worker for node 'b'"):
        client.send("container.start", "web", "b")
    assert time.monotonic() - started < 1.0


class Owner(Recorder):
    """A worker of a cluster where "web" lives on node b: other nodes redirect."""

    def __call__(self, command: Command) -> Reply:
        if self.name != "b":
            self.commands.append(command)
            return Reply(command.id, False, "wrong_node", "container web lives on node 'b'",
                         result={"node": "b"})
        return super().__call__(command)


def test_a_container_command_without_node_is_redirected_to_its_node(
        broker: Broker, client: Client, make_worker: Callable[..., WorkerLink]) -> None:
    """The worker resolves the reference; a worker of another node answers wrong_node
    and the client sends the command where the container lives, once."""
    a, b = Owner("a"), Owner("b")
    make_worker("a", a)
    make_worker("b", b)
    for _ in range(4):  # whichever worker the broker picks, the command lands on b
        assert client.start("web").result["worker"] == "b"
    assert len(b.commands) == 4 and all(cmd.container == "web" for cmd in b.commands)
    assert len(a.commands) <= 1  # after one redirect the client knows web's node


def test_create_goes_to_the_least_loaded_worker(broker: Broker, make_client: Callable[..., Client],
                                                make_worker: Callable[..., WorkerLink]) -> None:
    busy, idle = Recorder("busy"), Recorder("idle")
    make_worker("a", busy)
    blocked = make_client(timeout=5)
    done: list[Reply] = []
    thread = threading.Thread(target=lambda: done.append(blocked.send("query.ps", gate="g")))
    thread.start()
    wait_until(lambda: busy.started, what="the busy worker took the query")
    make_worker("b", idle)
    creator = make_client()
    for _ in range(3):
        assert creator.send("container.create", None).result["worker"] == "idle"
    busy.gate("g").set()
    thread.join(5)
    assert done and done[0].result["worker"] == "busy"


def test_error_replies_become_typed_errors(broker: Broker, client: Client,
                                           make_worker: Callable[..., WorkerLink]) -> None:
    make_worker("a", Recorder())
    with pytest.raises(NotFound, match="no such container web"):
        client.send("container.start", "web", "a", fail="not_found")
    reply = client.request(client.command("container.start", "web", "a", {"crash": True}),
                           check=False)
    assert reply.error_code == "internal" and "RuntimeError: handler bug" in (reply.message or "")
    assert client.send("container.start", "web", "a").ok  # the worker is still there


def test_a_retried_id_runs_the_handler_once(broker: Broker, make_client: Callable[..., Client],
                                            make_worker: Callable[..., WorkerLink]) -> None:
    rec = Recorder()
    make_worker("a", rec)
    # The second socket sends once and never retries: only the broker's answer to
    # the absorbed retry can reach it (a retry would find the cached reply instead).
    first, second = make_client(), make_client(retries=0, timeout=8.0)
    cmd = first.command("container.start", "web", "a", {"gate": "g"})
    replies: list[Reply] = []
    thread = threading.Thread(target=lambda: replies.append(first.request(cmd)))
    thread.start()
    wait_until(lambda: rec.started, what="handler started")
    # the same id from another socket while outstanding: absorbed, answered once done
    resend = threading.Thread(target=lambda: replies.append(second.request(cmd)))
    resend.start()
    wait_until(lambda: broker.stats["retries_absorbed"] == 1, what="retry absorbed")
    rec.gate("g").set()
    thread.join(5)
    resend.join(10)
    assert len(replies) == 2, "the retry from the new socket was never answered"
    # and after the reply: answered from the broker's cache
    replies.append(make_client().request(cmd))
    assert len(replies) == 3 and all(r == replies[0] for r in replies)
    assert rec.count(cmd.id) == 1


def test_a_not_now_answer_is_not_replayed_to_a_resend(
        broker: Broker, make_client: Callable[..., Client],
        make_worker: Callable[..., WorkerLink]) -> None:
    """An ``unavailable`` answer says nothing about what the command did: the resend of
    the same id reaches the worker again (which, in the engine, replays what the store
    holds for it) instead of getting the cached refusal back."""
    rec = Recorder()
    make_worker("a", rec)
    publisher = make_client(retries=0)
    cmd = publisher.command("container.start", "web", "a", {"unavailable_once": True})
    with pytest.raises(Unavailable, match="stopped before this command finished"):
        publisher.request(cmd)
    assert make_client(retries=0).request(cmd).ok
    assert rec.started.count(cmd.id) == 2 and rec.count(cmd.id) == 1
    # an answer that says what happened is still replayed from the cache
    assert make_client(retries=0).request(cmd).ok and rec.started.count(cmd.id) == 2


def test_bad_frames_get_clear_replies_and_the_broker_stays_up(
        broker: Broker, client: Client, raw: Callable[[], Raw]) -> None:
    r = raw()
    r.send(b"\xc1 not msgpack")
    assert r.reply().error_code == "protocol_error"
    r.send(b"one", b"two", b"three")
    assert "exactly one frame" in (r.reply().message or "")
    r.send(bytes(MAX_FRAME_SIZE + 10))
    assert "exceeds" in (r.reply().message or "")
    r.send(encode(Reply("0b6c8d6e-5f0c-4a1e-9d1b-3c0b8f6f2a11", True)))
    assert "accepts commands" in (r.reply().message or "")
    bad = client.command("container.start", "web", "a")
    import msgpack  # type: ignore[import-untyped]
    body = msgpack.unpackb(encode(bad))
    body["type"] = "container.explode"
    r.send(b"", msgpack.packb(body))  # REQ-style envelope, invalid command type
    reply = r.reply()
    assert reply.command_id == bad.id and "unknown command type" in (reply.message or "")
    r.send(bytes(5 * MAX_FRAME_SIZE))  # beyond MAXMSGSIZE: zmq drops the peer, no crash
    assert client.ping()["malformed_frames"] == 5


def test_garbage_from_workers_is_dropped(broker: Broker, client: Client,
                                         endpoints: Endpoints) -> None:
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoints.backend)
    try:
        sock.send(b"\x00garbage")
        sock.send_multipart([b"a", b"b"])
        sock.send(bytes(MAX_FRAME_SIZE + 1))
        sock.send(encode(client.command("query.ps")))  # a command from a worker makes no sense
        wait_until(lambda: client.ping()["malformed_frames"] == 4, what="frames counted")
        assert client.ping()["workers"] == []
    finally:
        sock.close(linger=0)


def test_a_command_waits_for_a_lost_worker_s_node_then_times_out(
        make_broker: Callable[..., Broker], make_client: Callable[..., Client],
        make_worker: Callable[..., WorkerLink]) -> None:
    broker = make_broker(pending_timeout=0.5)
    rec = Recorder()
    link = make_worker("a", rec)
    client = make_client(timeout=5, retries=0)
    errors: list[Exception] = []

    def send() -> None:
        try:
            client.send("container.start", "web", "a", gate="never")
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            errors.append(exc)

    thread = threading.Thread(target=send)
    thread.start()
    wait_until(lambda: rec.started, what="handler started")
    link.stop(disconnect=False)  # dies silently
    thread.join(5)
    assert isinstance(errors[0], Unavailable) and "waited" in str(errors[0])
    assert broker.stats["workers_lost"] == 1
    rec.gate("never").set()


def test_a_waiting_command_goes_to_a_worker_that_appears(
        broker: Broker, make_client: Callable[..., Client],
        make_worker: Callable[..., WorkerLink]) -> None:
    first = Recorder("first")
    link = make_worker("a", first)
    client = make_client(timeout=5, retries=0)
    replies: list[Reply] = []
    thread = threading.Thread(target=lambda: replies.append(
        client.send("container.start", "web", "a", gate="never")))
    thread.start()
    wait_until(lambda: first.started, what="handler started")
    link.stop(disconnect=False)
    wait_until(lambda: broker.stats["workers_lost"] == 1, what="worker dropped")
    second = Recorder("second")
    second.gate("never").set()
    make_worker("a", second)
    thread.join(5)
    assert replies[0].result["worker"] == "second"
    first.gate("never").set()


def test_a_fresh_command_for_a_restarting_worker_s_node_waits_for_it(
        broker: Broker, make_client: Callable[..., Client],
        make_worker: Callable[..., WorkerLink]) -> None:
    """A rolling restart: the node's worker is gone when the command arrives; the
    command waits for the next worker of that node instead of being refused."""
    link = make_worker("a", Recorder("old"))
    link.stop()
    wait_until(lambda: not broker.router.workers, what="worker gone")
    client = make_client(timeout=10, retries=0)
    replies: list[Reply] = []
    thread = threading.Thread(target=lambda: replies.append(
        client.send("container.start", "web", "a")))
    thread.start()
    wait_until(lambda: broker.stats["held_for_worker"] == 1, what="command held")
    make_worker("a", Recorder("new"))
    thread.join(10)
    assert replies and replies[0].result["worker"] == "new"


def test_before_any_worker_connects_a_command_waits_for_the_first(
        broker: Broker, make_client: Callable[..., Client],
        make_worker: Callable[..., WorkerLink]) -> None:
    """Right after the broker and the workers start, whichever comes up first."""
    client = make_client(timeout=10, retries=0)
    replies: list[Reply] = []
    thread = threading.Thread(target=lambda: replies.append(
        client.send("container.start", "web", "b")))
    thread.start()
    wait_until(lambda: broker.stats["held_for_worker"] == 1, what="command held")
    make_worker("b", Recorder("b"))
    thread.join(10)
    assert replies and replies[0].result["worker"] == "b"


def test_a_held_command_is_refused_just_before_its_publisher_gives_up(
        broker: Broker, make_client: Callable[..., Client],
        make_worker: Callable[..., WorkerLink]) -> None:
    make_worker("a", Recorder()).stop()
    wait_until(lambda: not broker.router.workers, what="worker gone")
    client = make_client(timeout=2, retries=0)
    started = time.monotonic()
    with pytest.raises(Unavailable, match=r"no live worker for node 'a' \(waited for one\)"):
        client.send("container.start", "web", "a")
    waited = time.monotonic() - started
    assert 1.5 <= waited < 2.0, f"answered after {waited:.2f}s"


def test_held_commands_are_bounded(
        make_broker: Callable[..., Broker], make_client: Callable[..., Client]) -> None:
    broker = make_broker()
    broker.router.max_waiting = 2
    clients = [make_client(timeout=3, retries=0) for _ in range(3)]
    threads = [threading.Thread(target=lambda c=c: _swallow(lambda: c.send(
        "container.start", "web", "a"))) for c in clients[:2]]
    for thread in threads:
        thread.start()
    wait_until(lambda: broker.stats["held_for_worker"] == 2, what="two commands held")
    started = time.monotonic()
    with pytest.raises(Unavailable, match="no live worker for node 'a'$"):
        clients[2].send("container.start", "web", "a")
    assert time.monotonic() - started < 1.0
    for thread in threads:
        thread.join(5)


def test_a_stopping_worker_hands_new_commands_back_to_its_successor(
        broker: Broker, make_client: Callable[..., Client],
        make_worker: Callable[..., WorkerLink]) -> None:
    """A rolling restart fails nothing: commands that reach the old worker while it
    drains go to the new one, and the command it was running finishes there."""
    old = Recorder("old")
    link = make_worker("a", old)
    client = make_client(timeout=10, retries=0)
    replies: list[Reply] = []
    running = threading.Thread(target=lambda: replies.append(
        client.send("container.start", "web", "a", gate="slow")))
    running.start()
    wait_until(lambda: old.started, what="the slow command runs")
    link.close_intake()  # what SIGTERM does first
    late = make_client(timeout=10, retries=0)
    handed: list[Reply] = []
    sent = threading.Thread(target=lambda: handed.append(
        late.send("container.start", "db", "a")))
    sent.start()
    wait_until(lambda: broker.stats["handed_back"] == 1, what="the new command handed back")
    new = Recorder("new")
    make_worker("a", new)
    sent.join(10)
    assert handed and handed[0].ok and handed[0].result["worker"] == "new"
    old.gate("slow").set()
    running.join(10)
    assert replies and replies[0].result["worker"] == "old"
    assert [c.container for c in new.commands] == ["db"]
    assert broker.stats["errors"] == 0


def test_a_stopping_worker_hands_back_what_it_accepted_but_had_not_started(
        broker: Broker, make_client: Callable[..., Client],
        make_worker: Callable[..., WorkerLink]) -> None:
    """Commands queued at the worker behind a running one (here: the same
    container's next command) are not run by a worker that is leaving: they go
    back to the broker and run on its successor, and the drain waits only for the
    running command. Before, the drain ran the whole queue one by one (a stop
    can take its container's timeout each), past the drain deadline."""
    old = Recorder("old")
    link = make_worker("a", old)
    replies: dict[str, Reply] = {}

    def send(name: str, **args: Any) -> threading.Thread:
        client = make_client(timeout=10, retries=0)
        thread = threading.Thread(target=lambda: replies.__setitem__(
            name, client.send("container.stop", "web", "a", **args)))
        thread.start()
        return thread

    running = send("running", gate="slow")
    wait_until(lambda: old.started, what="the slow command runs")
    queued = send("queued")
    wait_until(lambda: link.stats["commands"] == 2, what="the second one queued behind it")
    link.close_intake()  # what SIGTERM does first
    wait_until(lambda: broker.stats["handed_back"] == 1, what="the queued command handed back")
    new = Recorder("new")
    make_worker("a", new)
    queued.join(10)
    assert replies["queued"].ok and replies["queued"].result["worker"] == "new"
    old.gate("slow").set()
    running.join(10)
    assert replies["running"].result["worker"] == "old"
    assert len(old.started) == 1 and len(new.commands) == 1
    assert link.stats["handed_back"] == 1 and broker.stats["errors"] == 0


def _swallow(call: Callable[[], object]) -> None:
    with contextlib.suppress(Unavailable):
        call()


def test_killed_worker_s_command_is_redispatched_on_its_node(
        broker: Broker, make_client: Callable[..., Client],
        make_worker: Callable[..., WorkerLink], endpoints: Endpoints) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent)] + sys.path))
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "worker_proc.py"), endpoints.backend, "a",
         str(HEARTBEAT)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        probe = make_client()
        wait_until(lambda: worker_count(probe, "a") == 1, what="process worker registered")
        client = make_client(timeout=5, retries=0)
        replies: list[Reply] = []
        thread = threading.Thread(target=lambda: replies.append(
            client.send("container.start", "web", "a")))
        thread.start()
        line = proc.stdout.readline().strip()
        assert line.startswith("got ")
        survivor = Recorder("survivor")
        make_worker("a", survivor)
        proc.send_signal(signal.SIGKILL)
        thread.join(5)
        assert replies and replies[0].result["worker"] == "survivor"
        assert survivor.commands[0].id == line.split()[1]
        assert broker.stats["redispatched"] == 1
    finally:
        proc.kill()
        proc.wait()


def test_worker_reconnects_to_a_restarted_broker(
        make_broker: Callable[..., Broker], make_client: Callable[..., Client],
        make_worker: Callable[..., WorkerLink]) -> None:
    # Both brokers and the link come from fixtures: stopped at teardown even when an
    # assertion fails halfway (stopping the first broker twice is harmless).
    first = make_broker()
    link = make_worker("a", Recorder(), reconnect_max=0.4)
    client = make_client()
    assert worker_count(client) == 1
    first.stop()
    wait_until(lambda: link.stats["reconnects"] >= 1, what="worker noticed the silence")
    make_broker()
    client.close()
    wait_until(lambda: worker_count(client) == 1, what="worker back on the new broker")
    assert client.send("container.start", "web", "a").ok


def test_events_fan_out_by_type_topic(broker: Broker, endpoints: Endpoints,
                                      make_worker: Callable[..., WorkerLink]) -> None:

    log = MemoryLog()
    log.link = make_worker("n1", log)
    sub: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"container.started")
    sub.connect(endpoints.events)
    try:
        def published() -> Any:
            log.append("container.created")
            log.append("container.started")
            return sub.poll(20)

        wait_until(published, what="subscription live")
        topic, payload = sub.recv_multipart()
        assert topic == b"container.started"
        msg = decode(payload)
        assert isinstance(msg, EventMessage) and msg.type == "container.started"
    finally:
        sub.close(linger=0)
