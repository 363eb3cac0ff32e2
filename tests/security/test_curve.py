"""CURVE on tcp: who the broker admits, as what, and what it refuses (and logs)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import zmq

from bus import keys
from bus.broker import Broker
from bus.client import Client
from bus.keys import ClientKeys
from bus.worker_link import WorkerLink
from engine.errors import InvalidArgument, PermissionDenied, Unavailable
from tests.bus.helpers import MemoryLog, Recorder, wait_until, worker_count
from tests.security.conftest import LOOPBACK, KeyStore

Connect = Callable[..., Client]
Attach = Callable[..., WorkerLink]


def _zap(broker: Broker) -> tuple[int, int]:
    zap = broker.admission.zap
    assert zap is not None
    return zap.accepted, zap.refused


def test_authorised_worker_and_client_work_and_the_actor_is_the_key_name(
        keystore: KeyStore, tcp_broker: Broker, connect: Connect, attach: Attach) -> None:
    recorder = Recorder()
    worker = attach("n1", recorder, keystore.peer("n1", keys.WORKERS))
    alice = connect(keystore.peer("alice", keys.PUBLISHERS), actor="mallory")
    wait_until(lambda: worker_count(alice, "n1") == 1, what="the worker registered over CURVE")
    assert worker.connected.is_set()
    reply = alice.send("container.start", "web", "n1")
    assert reply.ok and reply.result == {"worker": "worker", "node": "n1"}
    assert [c.actor for c in recorder.commands] == ["alice"]  # not the claimed "mallory"
    assert alice.ping()["curve"] is True
    assert alice.ping()["identity"] == "alice"


def test_unknown_client_key_is_refused_and_logged(
        keystore: KeyStore, tcp_broker: Broker, connect: Connect,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bus.security")
    stranger = keystore.peer("stranger")  # a valid pair nobody authorised
    client = connect(stranger, timeout=0.3)
    with pytest.raises(Unavailable, match="refuses this client's key"):
        client.ping()
    wait_until(lambda: _zap(tcp_broker)[1] >= 1, what="the ZAP refusal")
    refusals = [r.getMessage() for r in caplog.records if "refused a connection" in r.getMessage()]
    assert refusals, "the refusal was not logged"
    assert stranger.own.public.decode() in refusals[0]  # the key's z85
    assert "127.0.0.1" in refusals[0]  # the peer's address
    assert "berth.clients" in refusals[0]


def test_client_without_keys_gets_no_answer_and_a_hint(tcp_broker: Broker,
                                                       connect: Connect) -> None:
    client = connect(None, timeout=0.3)
    with pytest.raises(Unavailable, match="BERTH_KEY and BERTH_SERVER_KEY"):
        client.ping()


def test_unknown_worker_key_is_never_routed_to(
        keystore: KeyStore, tcp_broker: Broker, connect: Connect, attach: Attach) -> None:
    recorder = Recorder()
    attach("n1", recorder, keystore.peer("rogue"))  # unauthorised pair
    alice = connect(keystore.peer("alice", keys.PUBLISHERS))
    wait_until(lambda: _zap(tcp_broker)[1] >= 1, what="the worker's handshake refused")
    assert worker_count(alice) == 0
    with pytest.raises(Unavailable, match="no live worker"):
        alice.send("container.start", "web", "n1")
    assert recorder.started == []


def test_a_key_authorised_for_one_role_does_not_serve_the_other(
        keystore: KeyStore, tcp_broker: Broker, connect: Connect, attach: Attach) -> None:
    worker_key = keystore.peer("n1", keys.WORKERS)
    publisher_key = keystore.peer("alice", keys.PUBLISHERS)
    # a worker's key does not make a client...
    with pytest.raises(Unavailable):
        connect(worker_key, timeout=0.3).ping()
    # ...and a publisher's key does not make a worker
    recorder = Recorder()
    attach("n1", recorder, publisher_key)
    alice = connect(publisher_key)
    wait_until(lambda: _zap(tcp_broker)[1] >= 2, what="both cross-role handshakes refused")
    assert worker_count(alice) == 0
    # the same key under both roles works in each, under its own name
    attach("n1", recorder, worker_key)
    wait_until(lambda: worker_count(alice, "n1") == 1, what="the real worker registered")


def test_a_key_authorised_while_the_broker_runs_is_admitted(
        keystore: KeyStore, tcp_broker: Broker, connect: Connect) -> None:
    late = keystore.peer("late")
    with pytest.raises(Unavailable):
        connect(late, timeout=0.3).ping()
    keys.authorize(keystore.root / "peers" / "late" / "late.key", keys.PUBLISHERS)
    assert connect(late).ping()["broker"] is True


def test_tcp_without_keys_is_refused_with_a_clear_error(keystore: KeyStore) -> None:
    keystore.broker_secret.unlink()  # BERTH_ROOT points at the keystore: no default key
    with pytest.raises(InvalidArgument, match="needs CURVE keys.*berth keys generate broker"):
        Broker(LOOPBACK, LOOPBACK, LOOPBACK)


def test_tcp_with_default_keys_binds_curve(keystore: KeyStore) -> None:
    """With no security passed, the defaults under $BERTH_ROOT/keys are used."""
    broker = Broker(LOOPBACK, LOOPBACK, LOOPBACK)
    try:
        assert broker.security is not None
        assert broker.frontend_endpoint.startswith("tcp://127.0.0.1:")
        assert not broker.frontend_endpoint.endswith("*")
    finally:
        broker.close()


def test_writable_authorised_directory_is_refused(keystore: KeyStore) -> None:
    keystore.authorized(keys.WORKERS).chmod(0o777)
    with pytest.raises(PermissionDenied, match="only its owner may write"):
        keystore.security()


def test_a_command_id_is_bound_to_its_sender(
        keystore: KeyStore, tcp_broker: Broker, connect: Connect, attach: Attach) -> None:
    """A retry with the same id is absorbed only from the same identity: another
    peer cannot read someone else's reply by reusing its command id."""
    attach("n1", Recorder(), keystore.peer("n1", keys.WORKERS))
    alice = connect(keystore.peer("alice", keys.PUBLISHERS))
    bob = connect(keystore.peer("bob", keys.PUBLISHERS))
    wait_until(lambda: worker_count(alice, "n1") == 1, what="worker registered")
    command = alice.command("container.start", "web", "n1")
    assert alice.request(command).ok
    assert alice.request(command).ok  # alice's retry: the cached reply
    with pytest.raises(PermissionDenied, match="belongs to another sender"):
        bob.request(command)


def _subscriber(broker: Broker, curve: ClientKeys) -> zmq.Socket[bytes]:
    sub: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    keys.apply_client(sub, curve)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(broker.events_endpoint)
    return sub


def test_the_event_feed_admits_only_authorised_subscribers(
        keystore: KeyStore, tcp_broker: Broker, connect: Connect, attach: Attach) -> None:
    log = MemoryLog()
    log.link = attach("n1", log, keystore.peer("n1", keys.WORKERS))
    alice_keys = keystore.peer("alice", keys.PUBLISHERS)
    alice = connect(alice_keys)
    wait_until(lambda: worker_count(alice, "n1") == 1, what="worker registered")
    refused_before = _zap(tcp_broker)[1]
    good, bad = _subscriber(tcp_broker, alice_keys), _subscriber(tcp_broker, keystore.peer("eve"))
    try:
        wait_until(lambda: _zap(tcp_broker)[1] > refused_before, what="eve's handshake refused")
        wait_until(lambda: alice.ping()["subscriptions"] >= 1, what="alice subscribed")
        log.append("container.created")
        assert good.poll(5000), "the authorised subscriber got no event"
        assert good.recv_multipart()[0] == b"container.created"
        assert not bad.poll(200)
        with alice.subscribe(from_position=1) as events:  # the catch-up subscription, too
            first = events.get(5)
            assert first is not None and first.type == "container.created"
    finally:
        good.close(linger=0)
        bad.close(linger=0)


def test_a_worker_key_serves_only_the_node_it_names(
        keystore: KeyStore, tcp_broker: Broker, attach: Attach,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bus.admission")
    attach("n2", Recorder(), keystore.peer("n1", keys.WORKERS))  # n1's key claiming n2
    wait_until(lambda: "may only serve node 'n1', not 'n2'" in caplog.text, 5,
               what="refusal logged")
    assert tcp_broker.stats["wrong_node"] >= 1
    assert not tcp_broker.router.workers
