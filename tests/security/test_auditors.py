"""The read-only role: a CURVE key in the authorised auditors' directory may query and
read the audit log, never change a container (real broker, real CURVE, real worker
link)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bus import keys
from bus.broker import Broker
from bus.client import Client
from bus.worker_link import WorkerLink
from engine import command_types as t
from engine.errors import PermissionDenied
from tests.bus.helpers import Recorder, wait_until, worker_count
from tests.security.conftest import KeyStore

Connect = Callable[..., Client]
Attach = Callable[..., WorkerLink]


def test_an_auditor_key_reads_but_cannot_command(
        keystore: KeyStore, tcp_broker: Broker, connect: Connect, attach: Attach) -> None:
    recorder = Recorder()
    attach("n1", recorder, keystore.peer("n1", keys.WORKERS))
    eve = connect(keystore.peer("eve", keys.AUDITORS))
    wait_until(lambda: worker_count(eve, "n1") == 1, what="the worker registered")
    assert eve.ping()["identity"] == "auditor:eve"
    for query in (t.PS, t.VERIFY_AUDIT, t.AUDIT_PROVE, t.AUDIT_CHECKPOINT):
        assert eve.send(query, node="n1").ok
    for change in sorted(t.CHANGE_COMMANDS | {t.REBUILD}):
        with pytest.raises(PermissionDenied, match="auditor:eve is read-only"):
            eve.send(change, "web", "n1")
    assert [c.type for c in recorder.commands] == [
        t.PS, t.VERIFY_AUDIT, t.AUDIT_PROVE, t.AUDIT_CHECKPOINT]  # nothing else arrived
    assert all(c.actor == "auditor:eve" for c in recorder.commands)
    assert tcp_broker.stats["read_only_refused"] == len(t.CHANGE_COMMANDS) + 1


def test_a_publisher_key_is_not_read_only(
        keystore: KeyStore, tcp_broker: Broker, connect: Connect, attach: Attach) -> None:
    recorder = Recorder()
    attach("n1", recorder, keystore.peer("n1", keys.WORKERS))
    alice = connect(keystore.peer("alice", keys.PUBLISHERS))
    wait_until(lambda: worker_count(alice, "n1") == 1, what="the worker registered")
    assert alice.send(t.START, "web", "n1").ok


def test_an_auditor_key_cannot_serve_as_a_worker(
        keystore: KeyStore, tcp_broker: Broker, connect: Connect, attach: Attach) -> None:
    alice = connect(keystore.peer("alice", keys.PUBLISHERS))
    attach("n1", Recorder(), keystore.peer("n1", keys.AUDITORS))
    zap = tcp_broker.admission.zap
    assert zap is not None
    wait_until(lambda: zap.refused >= 1, what="the auditor's worker handshake refused")
    assert worker_count(alice) == 0
