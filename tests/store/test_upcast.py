"""Old payload versions are upcast on read: the log is never rewritten."""

from __future__ import annotations

import pytest
from sqlalchemy import BigInteger, select, type_coerce

from engine import events as ev
from engine.audit import chain as audit
from engine.errors import StoreError
from engine.store.mapper import pack
from engine.store.schema import events
from engine.store.store import EventStore
from migrations.runner import upgrade
from tests.store.helpers import create, run


def _raw_append(store: EventStore, stream: str, version: int, event_type: str,
                schema_version: int, data: dict[str, object]) -> None:
    """Insert a row as an older berth would have, chained so the audit still holds."""
    with store._engine.begin() as conn:  # raw on purpose: no current code wrote this
        head = conn.execute(select(events.c.position, events.c.hash,
                                   type_coerce(events.c.recorded_at, BigInteger))
                            .order_by(events.c.position.desc()).limit(1)).one()
        row = {"position": head[0] + 1, "stream": stream, "stream_version": version,
               "type": event_type, "schema_version": schema_version, "data": pack(data),
               "recorded_at": head[2] + 1, "causation_id": "old", "correlation_id": "",
               "actor": "berth-0.0", "node": "n1"}
        conn.execute(events.insert().values(**row, prev_hash=head[1],
                                            hash=audit.link(head[1], row)))


def test_exited_v1_reads_back_as_v2(store: EventStore) -> None:
    cid = create(store)
    run(store, cid, 1, ev.PidReceived(10, 9), ev.Started())
    _raw_append(store, cid, 4, ev.CONTAINER_EXITED, 1, {"exit_code": 2})
    last = store.read_stream(cid)[-1]
    assert last.event == ev.Exited(exit_code=2, finished_at=None, expected=False,
                                   reason="unknown")
    assert store.verify_chain() is None
    store.rebuild_read_model()  # the raw row bypassed the read model; the log rules
    state = store.get_container(cid)
    assert (state.state, state.exit_code, state.exit_reason) == ("exited", 2, "unknown")
    assert state.finished_at == last.metadata.recorded_at


def test_newer_payload_than_this_code_is_refused(store: EventStore) -> None:
    cid = create(store)
    _raw_append(store, cid, 2, ev.CONTAINER_EXITED, 9, {"exit_code": 2})
    with pytest.raises(StoreError, match="v9 was written by a newer berth") as refused:
        store.read_stream(cid)
    assert refused.type is StoreError  # not StoreUnreachable: retrying cannot help


def test_unknown_revision_is_a_store_error(db_url: str) -> None:
    with pytest.raises(StoreError, match="9999") as refused:
        upgrade(db_url, "9999")
    assert refused.type is StoreError
