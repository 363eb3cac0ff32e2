"""The whole engine across "hosts": broker on loopback tcp with CURVE, a real worker
(store, runc, conmon) admitted by its key, a client admitted by another, and a real
busybox container; the audit log names the client's key, whatever it claimed."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from bus import keys
from bus.broker import Broker
from bus.client import Client
from engine.errors import BerthError
from engine.runtime import OCIRuntime
from tests.helpers import wait_until
from tests.security.conftest import LOOPBACK, KeyStore
from workers.worker import Worker, WorkerConfig


@pytest.fixture
def remote_engine(keystore: KeyStore, short_tmp: str) -> Iterator[tuple[Broker, Worker]]:
    broker = Broker(LOOPBACK, LOOPBACK, LOOPBACK, security=keystore.security(),
                    heartbeat_interval=0.2)
    broker.start()
    keystore.peer("node-a", keys.WORKERS)
    config = WorkerConfig(
        node="node-a", root=os.path.join(short_tmp, "root"), run=os.path.join(short_tmp, "run"),
        db_url=f"sqlite:///{short_tmp}/root/berth.db", backend=broker.backend_endpoint,
        heartbeat_interval=0.2, key_file=str(keystore.secret_file("node-a")),
        server_key_file=str(keystore.broker_public))
    worker = Worker(config)
    try:
        worker.start()
        wait_until(lambda: worker.link is not None and worker.link.connected.is_set(), 10,
                   what="worker connected")
        yield broker, worker
    finally:
        runtime = OCIRuntime(config.runtime_config())
        containers = os.path.join(config.root, "containers")
        for cid in os.listdir(containers) if os.path.isdir(containers) else []:
            try:
                runtime.delete(cid, force=True)
            except BerthError:
                pass
            runtime.cleanup(cid)
        worker.close()
        broker.stop()


def test_a_container_runs_over_curve_and_the_log_names_the_key(
        keystore: KeyStore, remote_engine: tuple[Broker, Worker], busybox_rootfs: str) -> None:
    broker, _worker = remote_engine
    alice_keys = keystore.peer("alice", keys.PUBLISHERS)
    with Client(broker.frontend_endpoint, events_endpoint=broker.events_endpoint,
                curve=alice_keys, actor="mallory", timeout=10) as client:
        wait_until(lambda: client.ping()["workers"], 10, what="worker registered over CURVE")
        created = client.create(rootfs=busybox_rootfs, args=["sh", "-c", "echo hi; exit 3"])
        cid = str(created.result["id"])
        assert created.result["node"] == "node-a"
        with client.subscribe(from_position=1, container=cid) as events:
            client.start(cid)
            assert client.wait(cid, timeout=30).result["exit_code"] == 3
            seen = []
            while not any(e.type == "container.exited" for e in seen):
                event = events.get(10)
                assert event is not None, f"no exited event; saw {[e.type for e in seen]}"
                seen.append(event)
        history, _ = client.events(0)
        ours = [e for e in history if e.correlation_id is not None]  # caused by our commands
        assert ours and {e.actor for e in ours} == {"alice"}
        assert all(e.actor != "mallory" for e in history)
        client.remove(cid, force=True)
