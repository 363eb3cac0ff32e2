"""Client: Lazy Pirate retries, typed refusals, resolve and its node cache."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq

from bus.broker import Broker
from bus.client import Client
from bus.protocol import Command, Reply, decode, encode
from bus.worker_link import WorkerLink
from engine.errors import Timeout, Unavailable
from tests.bus.helpers import Recorder, wait_until

FULL_ID = "ab" * 32


def test_no_engine_on_ipc_is_reported_at_once(run_dir: Path) -> None:
    client = Client(f"ipc://{run_dir}/absent/bus.sock", timeout=5)
    started = time.monotonic()
    with pytest.raises(Unavailable, match="berth engine is not running at ipc://"):
        client.ping()
    assert time.monotonic() - started < 0.5
    client.close()


def test_no_engine_on_tcp_after_retries() -> None:
    probe: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.ROUTER)
    port = probe.bind_to_random_port("tcp://127.0.0.1")
    probe.close(linger=0)  # a port nobody listens on
    client = Client(f"tcp://127.0.0.1:{port}", timeout=0.2, retries=1)
    with pytest.raises(Unavailable, match="not running"):
        client.send("query.ps")
    client.close()


def test_lazy_pirate_resends_the_same_id_on_a_new_socket() -> None:
    """A broker that loses the first try: the client reconnects and resends the same
    id, and ignores a stray reply to another command on the way."""
    router: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    client = Client(f"tcp://127.0.0.1:{port}", timeout=0.3, retries=2)
    result: list[Reply] = []
    thread = threading.Thread(target=lambda: result.append(client.send("query.ps")))
    thread.start()
    try:
        assert router.poll(5000)
        first_identity, first = router.recv_multipart()  # dropped on the floor
        assert router.poll(5000)
        second_identity, second = router.recv_multipart()
        command = decode(second)
        assert second == first and second_identity != first_identity
        assert isinstance(command, Command)
        stray = Reply("0b6c8d6e-5f0c-4a1e-9d1b-3c0b8f6f2a11", True)
        router.send_multipart([second_identity, encode(stray)])
        router.send_multipart([second_identity, encode(Reply(command.id, True, result={"x": 1}))])
        thread.join(5)
        assert result and result[0].result == {"x": 1}
    finally:
        client.close()
        router.close(linger=0)


def test_a_slow_command_raises_timeout_not_unavailable(
        broker: Broker, make_client: Callable[..., Client],
        make_worker: Callable[..., WorkerLink]) -> None:
    rec = Recorder()
    make_worker("a", rec)
    client = make_client(timeout=0.2, retries=1)
    with pytest.raises(Timeout, match="engine is running"):
        client.send("container.start", "web", "a", gate="g")
    rec.gate("g").set()
    wait_until(lambda: rec.commands, what="handler finished")
    assert len(rec.started) == 1  # the retry was absorbed by the broker


def test_a_container_command_is_one_round_trip(
        broker: Broker, client: Client, make_worker: Callable[..., WorkerLink]) -> None:
    """The reference travels as given and the worker resolves it: no query.resolve
    before the command, and an explicit node is used as given."""
    seen: list[Command] = []

    def handler(command: Command) -> Reply:
        seen.append(command)
        return Reply(command.id, True,
                     result={"container": command.container, "node": command.node})

    make_worker("a", handler)
    assert client.start("web").result == {"container": "web", "node": None}
    assert client.stop(FULL_ID, timeout=1).ok
    assert client.kill("web", "SIGTERM").ok
    assert client.pause("web", node="a").result == {"container": "web", "node": "a"}
    assert [c.type for c in seen] == ["container.start", "container.stop", "container.kill",
                                      "container.pause"]


def test_wait_outlasts_the_reply_timeout_while_the_engine_lives(
        broker: Broker, make_client: Callable[..., Client],
        make_worker: Callable[..., WorkerLink]) -> None:
    rec = Recorder()

    def handler(command: Command) -> Reply:
        if command.type == "container.wait":
            rec.gate("exit").wait(10)
            return Reply(command.id, True, result={"exit_code": 3})
        return rec(command)

    make_worker("a", handler)
    client = make_client(timeout=0.2, retries=0)
    replies: list[Reply] = []
    thread = threading.Thread(target=lambda: replies.append(client.wait("web", node="a")))
    thread.start()
    wait_until(lambda: broker.stats["retries_absorbed"] >= 2, what="the wait resent twice")
    rec.gate("exit").set()
    thread.join(10)
    assert replies[0].result == {"exit_code": 3}
    assert broker.stats["commands_routed"] == 1
