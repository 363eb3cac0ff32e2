"""Protocol fuzzing: every socket that takes frames, fed random and mutated ones.

Frames go over real zmq sockets into a real broker (its client frontend and its
worker backend) and into a real worker (the test plays the broker: it binds the
backend socket the worker connects to). Nothing may crash, nothing may be written
to the store (its head position stays put), every frame a client sends gets an
error reply (a worker answers every command it could decode), and a normal command
works afterwards. Examples are bounded so each test runs in seconds.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus.client import Client
from bus.protocol import Command, Ready, decode, encode, now_iso
from engine.command_types import COMMAND_TYPES
from engine.errors import ProtocolError
from tests.faults.cluster import Cluster
from tests.helpers import wait_until
from workers.worker import Worker, WorkerConfig

FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
REPLY_TIMEOUT_MS = 5000

_primitive = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1),
                       st.floats(allow_nan=True), st.text(max_size=20), st.binary(max_size=20))
_value = st.recursive(_primitive, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=10)
_FIELDS = ["v", "kind", "id", "type", "container", "node", "args", "actor", "correlation_id",
           "sent_at", "command_id", "ok", "error_code", "message", "positions", "result",
           "capacity", "position", "stream", "stream_version", "data", "recorded_at"]
_ARG_KEYS = ["rootfs", "args", "cmd", "env", "name", "timeout", "signal", "force", "all",
             "after", "limit", "wait_ms", "offset", "session_id", "at_position", "verify"]


@st.composite
def command_maps(draw: st.DrawFn) -> dict[str, Any]:
    """Maps close to a valid command: each field valid or random."""
    def maybe(valid: Any) -> Any:
        return valid if draw(st.integers(0, 4)) else draw(_value)

    kind = draw(st.sampled_from(["command", "reply", "event", "ready", "heartbeat", "disconnect"]))
    body: dict[str, Any] = {
        "v": maybe(1), "kind": maybe(kind), "id": maybe(str(draw(st.uuids()))),
        "type": maybe(draw(st.sampled_from(sorted(COMMAND_TYPES)))),
        "container": maybe(draw(st.sampled_from([None, uuid.uuid4().hex * 2, "web", "a"]))),
        "node": maybe(draw(st.sampled_from([None, "local", "elsewhere"]))),
        "args": maybe(draw(st.dictionaries(st.sampled_from(_ARG_KEYS) | st.text(max_size=6),
                                           _value, max_size=5))),
        "actor": maybe("fuzzer@test"), "correlation_id": maybe(str(draw(st.uuids()))),
        "sent_at": maybe(now_iso()),
    }
    extra = draw(st.dictionaries(st.sampled_from(_FIELDS), _value, max_size=2))
    body.update(extra)
    for key in draw(st.sets(st.sampled_from(list(body)), max_size=2)):
        body.pop(key, None)
    if isinstance(body.get("args"), dict):
        body["args"].pop("rootfs", None)  # never a valid create: nothing may be written
    return body


def _pack(value: Any) -> bytes:
    try:
        return bytes(msgpack.packb(value, use_bin_type=True))
    except (OverflowError, ValueError, TypeError):
        return b"\xc1"  # msgpack's "never used" byte


@st.composite
def mutated_commands(draw: st.DrawFn) -> bytes:
    """A valid query frame with a few bytes flipped, cut or inserted."""
    out = bytearray(_a_command(draw(st.sampled_from(["query.ps", "query.events", "query.inspect"])),
                               draw(st.sampled_from([None, "web"]))))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert"]))
        i = draw(st.integers(0, max(len(out) - 1, 0)))
        if op == "flip" and out:
            out[i] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del out[i:]
        else:
            out[i:i] = draw(st.binary(min_size=1, max_size=4))
    return bytes(out)


def _a_command(type: str = "query.ps", container: str | None = None) -> bytes:
    return encode(Command(str(uuid.uuid4()), type, container, "local", {}, "fuzzer@test",
                          str(uuid.uuid4()), now_iso()))


frames = st.one_of(
    st.binary(max_size=300),
    command_maps().map(_pack),
    st.dictionaries(st.text(max_size=8), _value, max_size=6).map(_pack),
    _value.map(_pack),
)


def _sound_command(frame: bytes) -> bool:
    try:
        return isinstance(decode(frame), Command)
    except ProtocolError:
        return False


def _recv(sock: zmq.Socket[bytes]) -> list[bytes] | None:
    if not sock.poll(REPLY_TIMEOUT_MS, zmq.POLLIN):
        return None
    return sock.recv_multipart()


def _normal_command_works(cluster: Cluster) -> None:
    with Client(cluster.endpoints.frontend, timeout=10, retries=1) as c:
        cid = c.create(rootfs=cluster.rootfs, args=["true"], node="local").result["id"]
        c.start(cid, node="local")
        assert c.wait(cid, timeout=20, node="local").result["exit_code"] == 0
        c.remove(cid, node="local")


@pytest.fixture
def served(cluster: Cluster) -> Iterator[Cluster]:
    cluster.start_broker_thread()
    cluster.start_worker("local")
    yield cluster


def test_broker_frontend_answers_every_frame_and_writes_nothing(served: Cluster) -> None:
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(served.endpoints.frontend)
    store = served.store()
    head = store.max_position()

    @FUZZ
    @given(frame=frames | mutated_commands())
    def fuzz(frame: bytes) -> None:
        sock.send(frame)
        got = _recv(sock)
        assert got is not None, f"no reply to {frame!r}"
        reply = decode(got[-1])
        if not _sound_command(frame):
            assert not getattr(reply, "ok", True), reply

    try:
        fuzz()
        assert store.max_position() == head, "a fuzzed frame wrote to the store"
        assert served.broker is not None and served.broker.health()["broker"]
    finally:
        sock.close()
        store.close()
    _normal_command_works(served)


def test_broker_backend_survives_any_frame(served: Cluster) -> None:
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(served.endpoints.backend)
    store = served.store()
    head = store.max_position()

    @FUZZ
    @given(frame=frames)
    def fuzz(frame: bytes) -> None:
        try:
            msg = decode(frame)
        except ProtocolError:
            msg = None
        if isinstance(msg, Ready) and msg.node == "local":
            return  # a fake worker for the real node would rightly get its commands
        sock.send(frame)

    try:
        fuzz()
        sock.send_multipart([b"two", b"frames"])
        # The broker read everything (it answers a ping after the fuzz frames).
        wait_until(lambda: served.health()["broker"], 10, what="broker answering")
        assert store.max_position() == head
    finally:
        sock.close()
        store.close()
    _normal_command_works(served)


def test_worker_answers_every_command_frame_and_writes_nothing(cluster: Cluster) -> None:
    """The test binds the worker endpoint itself and speaks to a real worker."""
    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    backend = f"ipc://{os.path.join(cluster.base, 'fake-broker.sock')}"
    router.bind(backend)
    node = cluster.node("local")
    worker = Worker(WorkerConfig(node="local", root=node.root, run=node.run,
                                 db_url=cluster.db_url, backend=backend,
                                 heartbeat_interval=5.0))  # no reconnect mid-fuzz under load
    store = cluster.store()
    try:
        worker.start()
        got = _recv(router)
        assert got is not None and isinstance(decode(got[1]), Ready)
        identity = got[0]
        head = store.max_position()

        def reply_to(command_id: str) -> Any:
            while True:
                frames_ = _recv(router)
                assert frames_ is not None, f"the worker did not answer {command_id}"
                msg = decode(frames_[1])
                if getattr(msg, "command_id", None) == command_id:
                    return msg

        @FUZZ
        @given(frame=frames | command_maps().map(_pack) | mutated_commands())
        def fuzz(frame: bytes) -> None:
            router.send_multipart([identity, frame])
            if _sound_command(frame):
                msg = decode(frame)
                assert isinstance(msg, Command)
                reply = reply_to(msg.id)
                if msg.type.startswith("container."):
                    assert not reply.ok, reply  # nothing exists to act on

        fuzz()
        router.send_multipart([identity, b"x", b"y"])
        ping = _a_command("query.ps")
        router.send_multipart([identity, ping])
        assert reply_to(str(decode(ping).id)).ok  # type: ignore[union-attr]
        assert store.max_position() == head, "a fuzzed command wrote to the store"
    finally:
        worker.close()
        router.close()
        store.close()
