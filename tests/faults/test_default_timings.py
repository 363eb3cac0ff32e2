"""The README's timings, with the real defaults (``berth broker`` and ``berth worker``
as they start without options): heartbeat loss after 1.5 s, a command accepted
just before its worker died waits for the worker to return (up to 30 s), and the
store is retried for up to 60 s.

The heartbeat loss runs for real (it is short). The 30 s and 60 s bounds are too
long to wait out in the suite: their values are checked where the code takes them
(the broker and store a default start builds), and the pending wait runs for real
with a worker that returns well within it; tests/faults/test_pg_outage.py runs the
store retry with a short BERTH_STORE_RETRY_SECONDS.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from bus.broker import Broker
from bus.endpoints import from_run_dir
from bus.protocol import Reply, decode, encode
from engine import command_types as t
from engine.errors import Unavailable
from engine.store.retry import RetryPolicy
from engine.store.store import EventStore
from tests.faults.cluster import Cluster
from tests.helpers import wait_until


def _serving(cluster: Cluster) -> bool:
    return any(w["node"] == "local" for w in cluster.health()["workers"])


def test_a_worker_killed_9_is_refused_as_unavailable_after_about_1_5_s(
        cluster: Cluster) -> None:
    cluster.start_broker_process()  # berth broker: default heartbeats
    cluster.start_worker("local")
    c = cluster.client(timeout=5, retries=0)
    cid = c.create(rootfs=cluster.rootfs, args=["sleep", "600"]).result["id"]
    worker = cluster.nodes["local"].proc
    assert worker is not None
    # Heartbeats come every 0.5 s, so the last one the broker saw is at most 0.5 s
    # old when the worker dies: it is dropped 1.0 to 1.5 s later, never sooner.
    os.kill(worker.pid, signal.SIGKILL)
    killed = time.monotonic()
    worker.wait(10)
    wait_until(lambda: not _serving(cluster), 30, interval=0.02, what="the worker dropped")
    dropped = time.monotonic() - killed
    assert dropped >= 1.0, f"the worker was dropped {dropped:.2f}s after its death"
    asked = time.monotonic()
    with pytest.raises(Unavailable, match="no live worker for node 'local'"):
        c.request(c.command(t.START, cid, "local"))
    waited = time.monotonic() - asked
    assert 4.0 <= waited < 5, f"held for the worker {waited:.2f}s: not until just before " \
        "the client's 5 s timeout"


def test_a_command_accepted_before_its_worker_died_waits_for_the_next_one(
        cluster: Cluster) -> None:
    cluster.start_broker_process()
    cluster.start_worker("local")
    c = cluster.client(timeout=60, retries=0)
    cid = c.create(rootfs=cluster.rootfs, args=["sleep", "600"]).result["id"]
    cluster.kill9(cluster.nodes["local"].proc)
    # Sent at once, before the broker can have missed a heartbeat: it goes to the
    # dead worker, then waits for the node's next worker instead of failing.
    start = c.command(t.START, cid, "local")
    sock = cluster.client(timeout=60, retries=0)._socket()
    sock.send(encode(start))  # once: this very send must be answered, not refused
    cluster.start_worker("local")
    assert sock.poll(60_000), "the command accepted before the worker died was never answered"
    reply = decode(sock.recv())
    assert isinstance(reply, Reply) and reply.command_id == start.id
    assert reply.ok, reply
    assert c.inspect(cid)["state"] == "running"


def test_the_long_defaults_are_the_ones_the_code_uses(short_tmp: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    endpoints = from_run_dir(short_tmp)
    broker = Broker(endpoints.frontend, endpoints.backend, endpoints.events)  # as berth broker
    try:
        assert broker.router.worker_timeout == 1.5
        assert broker.router.pending_timeout == 30.0
    finally:
        broker.close()
    monkeypatch.delenv("BERTH_STORE_RETRY_SECONDS", raising=False)
    with EventStore(f"sqlite:///{os.path.join(short_tmp, 'b.db')}") as store:
        assert store.retry_policy.deadline == 60.0
    monkeypatch.setenv("BERTH_STORE_RETRY_SECONDS", "7")
    assert RetryPolicy.from_env().deadline == 7.0
