"""Tampering with stored rows is caught by the hash chain, at the right position."""

from __future__ import annotations

from sqlalchemy import BigInteger, select, text, type_coerce

from engine import events as ev
from engine.audit import chain as audit
from engine.store.mapper import pack
from engine.store.schema import events
from engine.store.store import EventStore
from tests.store.helpers import create, run


def _five(store: EventStore) -> str:
    cid = create(store)
    run(store, cid, 1, ev.PidReceived(10, 9), ev.Started())
    run(store, cid, 3, ev.Signalled(15), ev.Exited(143, None, True, "stop"))
    assert store.max_position() == 5
    assert store.verify_chain() is None
    return cid


def test_edited_row(store: EventStore) -> None:
    _five(store)
    with store._engine.begin() as conn:
        conn.execute(events.update().where(events.c.position == 4)
                     .values(data=pack({"signal": 9})))
    assert store.verify_chain() == 4


def test_edited_metadata(store: EventStore) -> None:
    _five(store)
    with store._engine.begin() as conn:
        conn.execute(text("UPDATE events SET actor = 'mallory' WHERE position = 2"))
    assert store.verify_chain() == 2


def test_deleted_row(store: EventStore) -> None:
    _five(store)
    with store._engine.begin() as conn:
        conn.execute(text("DELETE FROM events WHERE position = 3"))
    assert store.verify_chain() == 3


def test_inserted_row_with_a_valid_looking_link(store: EventStore) -> None:
    """Insert a forged event at position 3: renumber the tail, give the forgery a hash
    that correctly links to row 2. The old row 3 (now 4) no longer verifies."""
    _five(store)
    with store._engine.begin() as conn:
        for position in (5, 4, 3):
            conn.execute(text("UPDATE events SET position = position + 1 "
                              "WHERE position = :p"), {"p": position})
        prev = conn.execute(select(events.c.hash).where(events.c.position == 2)).scalar()
        at = conn.execute(select(type_coerce(events.c.recorded_at, BigInteger))
                          .where(events.c.position == 2)).scalar()
        forged = {"position": 3, "stream": "evil", "stream_version": 1,
                  "type": "container.removed", "schema_version": 1, "data": pack({}),
                  "recorded_at": at, "causation_id": "x", "correlation_id": "x",
                  "actor": "mallory", "node": "n"}
        forged["prev_hash"] = prev
        forged["hash"] = audit.link(prev, forged)
        conn.execute(events.insert().values(**forged))
    assert store.verify_chain() == 4


def test_appended_junk_and_head_anchor(store: EventStore) -> None:
    _five(store)
    position, digest = store.head()
    assert position == 5 and len(digest) == 64
    with store._engine.begin() as conn:
        conn.execute(text("DELETE FROM events WHERE position = 5"))
    # Dropping the tail keeps the chain valid: the anchored head is what shows it.
    assert store.verify_chain() is None
    assert store.head() != (position, digest)
    with store._engine.begin() as conn:
        conn.execute(events.insert().values(
            position=5, stream="evil", stream_version=1, type="container.removed",
            schema_version=1, data=pack({}), recorded_at=0, causation_id="x",
            correlation_id="x", actor="m", node="n", prev_hash=b"\0" * 32, hash=b"\1" * 32))
    assert store.verify_chain() == 5
