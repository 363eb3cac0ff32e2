"""The README's key and limit claims, each on a real broker: a key removed from an
authorised directory stops working at the next connection; ``BERTH_AUTHORIZED_*``
move the authorised directories; the default rate limit is 1000 commands a second
with a burst of 2000."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq

from bus import keys
from bus.broker import Broker
from bus.client import Client
from bus.endpoints import from_run_dir
from bus.protocol import Reply, decode, encode
from bus.security import DEFAULT_BURST, DEFAULT_RATE, RateLimit
from bus.worker_link import WorkerLink
from engine.command_types import PING
from engine.errors import RateLimited, Unavailable
from tests.bus.helpers import HEARTBEAT, Recorder, wait_until, worker_count
from tests.security.conftest import LOOPBACK, KeyStore

Connect = Callable[..., Client]


def test_a_removed_key_is_refused_at_the_next_connection(
        keystore: KeyStore, tcp_broker: Broker, connect: Connect) -> None:
    alice = keystore.peer("alice", keys.PUBLISHERS)
    assert connect(alice).ping()["identity"] == "alice"
    (keystore.authorized(keys.PUBLISHERS) / "alice.key").unlink()
    with pytest.raises(Unavailable, match="refuses this client's key"):
        connect(alice, timeout=0.5).ping()  # a new client: a new connection
    bob = keystore.peer("bob", keys.PUBLISHERS)  # the others are unaffected
    assert connect(bob).ping()["identity"] == "bob"


@pytest.fixture
def moved_dirs(keystore: KeyStore, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Authorised directories outside $BERTH_ROOT/keys, named by the environment."""
    moved = {}
    for role, var in keys.ENV_AUTHORIZED.items():
        path = keystore.root / "elsewhere" / role
        keys.ensure_private_dir(path)
        monkeypatch.setenv(var, str(path))
        moved[role] = path
    return moved


def test_berth_authorized_variables_move_the_directories(
        keystore: KeyStore, moved_dirs: dict[str, Path]) -> None:
    # Keys in the default directories no longer count; keys in the named ones do.
    default_only = keystore.peer("stale")
    default_worker = keystore.peer("n-stale")
    for name, role in (("stale", keys.PUBLISHERS), ("n-stale", keys.WORKERS)):
        keys.authorize(keystore.root / "peers" / name / f"{name}.key", role,
                       directory=keystore.authorized(role))
    alice = keystore.peer("alice")
    keys.authorize(keystore.root / "peers" / "alice" / "alice.key", keys.PUBLISHERS,
                   directory=moved_dirs[keys.PUBLISHERS])
    n1 = keystore.peer("n1")
    keys.authorize(keystore.root / "peers" / "n1" / "n1.key", keys.WORKERS,
                   directory=moved_dirs[keys.WORKERS])
    # No security given: the broker loads it from the environment, as berth broker does.
    broker = Broker(LOOPBACK, LOOPBACK, LOOPBACK, heartbeat_interval=HEARTBEAT)
    broker.start()
    links = [WorkerLink(broker.backend_endpoint, name, Recorder(), curve=curve,
                        heartbeat_interval=HEARTBEAT)
             for name, curve in (("n1", n1), ("n-stale", default_worker))]
    clients = [Client(broker.frontend_endpoint, curve=curve, timeout=1.0, retries=0)
               for curve in (alice, default_only)]
    try:
        for link in links:
            link.start()
        assert clients[0].ping()["identity"] == "alice"
        with pytest.raises(Unavailable):
            clients[1].ping()
        wait_until(lambda: worker_count(clients[0], "n1") == 1, what="n1 admitted")
        assert worker_count(clients[0], "n-stale") == 0
        security = broker.admission.security
        assert security is not None
        assert {security.directory(d) for d in ("berth.workers", "berth.clients")} == {
            moved_dirs[keys.WORKERS], moved_dirs[keys.PUBLISHERS]}
    finally:
        for c in clients:
            c.close()
        for link in links:
            link.stop(timeout=2)
        broker.stop()


# -- the default rate limit -----------------------------------------------------------


@pytest.fixture
def ipc_broker(short_tmp: str) -> Iterator[Broker]:
    """A broker with the default rate limit (one bucket for this process's uid)."""
    endpoints = from_run_dir(short_tmp)
    broker = Broker(endpoints.frontend, endpoints.backend, endpoints.events)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def _flood(broker: Broker, n: int) -> tuple[list[Reply], float]:
    """Send ``n`` pings back to back on one connection, then read every answer;
    also how long that took (an upper bound of the time the broker spent on them)."""
    client = Client(broker.frontend_endpoint)  # builds the commands; never connects
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.connect(broker.frontend_endpoint)
    try:
        frames = [encode(client.command(PING))
                  for _ in range(n)]
        began = time.monotonic()
        for frame in frames:
            sock.send(frame)
        replies: list[Reply] = []
        while len(replies) < n:
            assert sock.poll(60_000), f"{n - len(replies)} of {n} pings never answered"
            msg = decode(sock.recv())
            assert isinstance(msg, Reply)
            replies.append(msg)
        return replies, time.monotonic() - began
    finally:
        sock.close()


def test_a_burst_under_2000_is_admitted_whole(ipc_broker: Broker) -> None:
    """The default limit (a broker given none) lets a fresh peer send 1900 at once."""
    replies, _ = _flood(ipc_broker, 1900)
    assert [r for r in replies if not r.ok] == []


def test_a_burst_far_over_2000_is_limited_to_the_burst_plus_1000_a_second(
        ipc_broker: Broker) -> None:
    assert RateLimit() == RateLimit(1000.0, 2000) == RateLimit(DEFAULT_RATE, DEFAULT_BURST)
    replies, elapsed = _flood(ipc_broker, 6000)
    refused = [r for r in replies if not r.ok]
    admitted = len(replies) - len(refused)
    # The bucket starts full (2000) and refills at 1000/s while the broker reads:
    # however slow this machine is, no more than that was admitted, and no fewer
    # than the burst. Sending 6000 takes the broker far less than 4 s, so some were
    # refused, each with the rate_limited code.
    assert DEFAULT_BURST <= admitted <= DEFAULT_BURST + DEFAULT_RATE * elapsed + 1
    assert refused, "6000 commands at once were all admitted"
    assert {r.error_code for r in refused} == {RateLimited.code}
