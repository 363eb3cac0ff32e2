"""Limits at the broker: per-peer rate, frame size, and garbage that harms no one else."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import zmq

from bus import keys
from bus.broker import Broker
from bus.client import Client
from bus.keys import ClientKeys
from bus.protocol import MAX_FRAME_SIZE, Reply, decode, encode
from bus.routing import MIN_QUEUE
from bus.security import RateLimit
from bus.worker_link import WorkerLink
from engine.errors import RateLimited
from tests.bus.helpers import Recorder, wait_until, worker_count
from tests.security.conftest import KeyStore

Connect = Callable[..., Client]
Attach = Callable[..., WorkerLink]


def _dealer(broker: Broker, curve: ClientKeys) -> zmq.Socket[bytes]:
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    keys.apply_client(sock, curve)
    sock.connect(broker.frontend_endpoint)
    return sock


def test_an_over_rate_client_is_refused_and_others_are_not(
        keystore: KeyStore, make_tcp_broker: Callable[..., Broker]) -> None:
    broker = make_tcp_broker(rate_limit=RateLimit(rate=5, burst=10))
    link = WorkerLink(broker.backend_endpoint, "n1", Recorder(), heartbeat_interval=0.1,
                      curve=keystore.peer("n1", keys.WORKERS))
    link.start()
    greedy_keys, polite_keys = (keystore.peer("greedy", keys.PUBLISHERS),
                                keystore.peer("polite", keys.PUBLISHERS))
    polite = Client(broker.frontend_endpoint, curve=polite_keys, timeout=2, retries=0)
    # (not by pinging: polling would spend polite's own small burst)
    wait_until(lambda: len(broker.router.workers) == 1, what="worker registered")
    greedy = _dealer(broker, greedy_keys)
    client = Client(broker.frontend_endpoint, curve=greedy_keys)
    try:
        # the greedy peer pipelines 60 commands at once: its burst passes, the rest is refused
        for _ in range(60):
            greedy.send(encode(client.command("query.ps")))
        codes: list[str | None] = []
        while len(codes) < 60 and greedy.poll(3000):
            msg = decode(greedy.recv())
            assert isinstance(msg, Reply)
            codes.append(msg.error_code)
        assert codes.count(None) >= 10 and codes.count("rate_limited") >= 40, codes
        # another key's bucket is untouched
        for _ in range(5):
            assert polite.send("query.ps").ok
        # and the library raises the typed error
        try:
            for _ in range(20):
                client.send("query.ps")
            raise AssertionError("the greedy client was never limited")
        except RateLimited as exc:
            assert "faster than the broker allows" in exc.message
        assert polite.ping()["rate_limited"] >= 40
    finally:
        greedy.close(linger=0)
        client.close()
        polite.close()
        link.stop(timeout=2)


def test_a_garbage_flood_does_not_harm_a_well_behaved_client(
        keystore: KeyStore, tcp_broker: Broker, connect: Connect, attach: Attach) -> None:
    recorder = Recorder()
    attach("n1", recorder, keystore.peer("n1", keys.WORKERS))
    flood_keys = keystore.peer("flood", keys.PUBLISHERS)
    polite = connect(keystore.peer("polite", keys.PUBLISHERS), timeout=2)
    wait_until(lambda: worker_count(polite, "n1") == 1, what="worker registered")

    stop = threading.Event()
    sent = [0]

    def flood() -> None:
        sock = _dealer(tcp_broker, flood_keys)
        junk = [os.urandom(64), b"\xc1" * 10, b"\x81\xa1v\x01", b"", os.urandom(2048)]
        try:
            while not stop.is_set():
                for frame in junk:
                    try:
                        sock.send(frame, zmq.NOBLOCK)
                        sock.send_multipart([b"a", b"b", b"c"], zmq.NOBLOCK)
                        sent[0] += 2
                    except zmq.Again:
                        pass
                while sock.poll(0):
                    sock.recv_multipart()  # drain the refusals
        finally:
            sock.close(linger=0)

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    try:
        wait_until(lambda: sent[0] > 500, what="the flood under way")
        for _ in range(30):
            assert polite.send("container.start", "web", "n1").ok
        stats = polite.ping()
        assert stats["malformed_frames"] + stats["rate_limited"] > 0
    finally:
        stop.set()
        thread.join(5)
    assert len(recorder.commands) == 30
    assert all(c.actor == "polite" for c in recorder.commands)


def test_oversized_frames_are_refused_and_huge_ones_cut_the_sender_off(
        keystore: KeyStore, tcp_broker: Broker, connect: Connect) -> None:
    sender_keys = keystore.peer("big", keys.PUBLISHERS)
    polite = connect(keystore.peer("polite", keys.PUBLISHERS))
    sock = _dealer(tcp_broker, sender_keys)
    try:
        sock.send(b"\x00" * (MAX_FRAME_SIZE + 1))  # over the limit: a clear refusal
        assert sock.poll(5000)
        reply = decode(sock.recv())
        assert isinstance(reply, Reply) and reply.error_code == "protocol_error"
        assert "exceeds" in (reply.message or "")
        sock.send(b"\x00" * (4 * MAX_FRAME_SIZE + 1))  # over MAXMSGSIZE: zmq drops the peer
        assert polite.ping()["broker"] is True
        assert not sock.poll(300)  # no reply to a frame zmq never delivered
    finally:
        sock.close(linger=0)


def test_one_sender_fills_only_its_share_of_a_worker_queue(
        keystore: KeyStore, make_tcp_broker: Callable[..., Broker]) -> None:
    """Past its share the sender is told the worker is busy (retry later); the
    worker is kept, and another sender's command still goes through."""
    broker = make_tcp_broker(rate_limit=None)
    recorder = Recorder()
    link = WorkerLink(broker.backend_endpoint, "n1", recorder, heartbeat_interval=0.1,
                      concurrency=1, curve=keystore.peer("n1", keys.WORKERS))
    link.start()
    greedy_keys = keystore.peer("greedy", keys.PUBLISHERS)
    greedy = _dealer(broker, greedy_keys)
    builder = Client(broker.frontend_endpoint, curve=greedy_keys)
    polite = Client(broker.frontend_endpoint, curve=keystore.peer("polite", keys.PUBLISHERS),
                    timeout=30, retries=0)
    share, extra = MIN_QUEUE // 2, 50
    answers: list[Reply] = []
    try:
        wait_until(lambda: len(broker.router.workers) == 1, what="worker registered")
        for _ in range(share + extra):  # each blocks in the worker until the gate opens
            greedy.send(encode(builder.command("container.start", "web", "n1", {"gate": "g"})))
        while len(answers) < extra and greedy.poll(10_000):
            reply = decode(greedy.recv())
            assert isinstance(reply, Reply)
            answers.append(reply)
        assert [(r.error_code, "busy" in (r.message or "")) for r in answers] == [
            ("rate_limited", True)] * extra
        done: list[Reply] = []
        thread = threading.Thread(target=lambda: done.append(polite.send("container.start",
                                                                         "db", "n1")))
        thread.start()
        wait_until(lambda: broker.stats["commands_routed"] == share + 1, 30,
                   what="the other sender's command routed")
        recorder.gate("g").set()
        thread.join(30)
        assert done and done[0].ok
        while len(answers) < share + extra and greedy.poll(10_000):
            reply = decode(greedy.recv())
            assert isinstance(reply, Reply)
            answers.append(reply)
        assert sum(1 for r in answers if r.ok) == share
        assert broker.stats["workers_lost"] == 0
    finally:
        recorder.gate("g").set()
        greedy.close(linger=0)
        builder.close()
        polite.close()
        link.stop(timeout=2)
