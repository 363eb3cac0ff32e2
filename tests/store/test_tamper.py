"""An attacker who knows the hash-chain scheme, against the chain check.

test_audit.py edits rows the naive way. Here the attacker also uses ``audit.link`` to
give what they touched a correct hash: the chain must still break, and at the first
row whose link no longer holds. (What the chain alone cannot show, a rewrite of the
whole tail say, needs signed tree heads anchored outside the database.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from sqlalchemy import Connection, delete, update

from engine import events as ev
from engine.audit import chain as audit
from engine.store.mapper import pack
from engine.store.schema import events
from engine.store.store import EventStore
from tests.store.helpers import create, run

LAST = 7


def _log(store: EventStore) -> None:
    cid = create(store)                                                         # 1
    run(store, cid, 1, ev.PidReceived(10, 9), ev.Started())                     # 2, 3
    run(store, cid, 3, ev.Signalled(15), ev.Exited(143, None, True, "stop"))    # 4, 5
    run(store, cid, 5, ev.PidReceived(11, 8), ev.Started())                     # 6, 7
    assert store.max_position() == LAST
    assert store.verify_chain() is None


def _rows(conn: Connection) -> dict[int, dict[str, Any]]:
    """Every row by position, with ``recorded_at`` in the microseconds the hash covers."""
    return {int(r["position"]): dict(r) for r in audit.chain_rows(conn)}


def _write(conn: Connection, position: int, values: Mapping[str, Any]) -> None:
    conn.execute(update(events).where(events.c.position == position).values(**values))


def _rehash(conn: Connection, position: int, **changes: Any) -> bytes:
    """Change a row and give it the hash that fits its stored ``prev_hash``: the row
    checks out on its own. Returns the new hash."""
    row = _rows(conn)[position] | changes
    digest = audit.link(bytes(row["prev_hash"]), row)
    _write(conn, position, {**changes, "hash": digest})
    return digest


def test_an_edited_row_with_its_hash_recomputed_breaks_the_next_link(
        store: EventStore) -> None:
    """The row itself verifies; the next row still names its old hash."""
    _log(store)
    with store._engine.begin() as conn:
        _rehash(conn, 4, data=pack({"signal": 9}))
    assert store.verify_chain() == 5


def test_an_edited_actor_with_its_hash_recomputed_breaks_the_next_link(
        store: EventStore) -> None:
    _log(store)
    with store._engine.begin() as conn:
        _rehash(conn, 2, actor="mallory")
    assert store.verify_chain() == 3


def test_relinking_the_next_row_breaks_that_rows_own_hash(store: EventStore) -> None:
    """Also point the next row's ``prev_hash`` at the forgery: then that row's own
    hash, which covers its link, is wrong."""
    _log(store)
    with store._engine.begin() as conn:
        forged = _rehash(conn, 4, data=pack({"signal": 9}))
        _write(conn, 5, {"prev_hash": forged})
    assert store.verify_chain() == 5


def test_a_forged_link_is_checked_against_the_previous_row(store: EventStore) -> None:
    """Give a row any ``prev_hash`` and a hash that fits it: the row is consistent with
    itself, but not with the row before it."""
    _log(store)
    with store._engine.begin() as conn:
        _rehash(conn, 3, prev_hash=b"\x07" * 32)
    assert store.verify_chain() == 3


@pytest.mark.parametrize("column, value", [
    ("stream", "f" * 64), ("stream_version", 9), ("type", ev.CONTAINER_REMOVED),
    ("schema_version", 7), ("data", pack({"signal": 9})), ("recorded_at", 0),
    ("causation_id", "forged"), ("correlation_id", "forged"), ("actor", "mallory"),
    ("node", "elsewhere"),
])
def test_every_asserted_column_is_covered_by_the_hash(store: EventStore, column: str,
                                                       value: object) -> None:
    """An edit left without a new hash breaks the row itself, whichever column."""
    _log(store)
    with store._engine.begin() as conn:
        _write(conn, 4, {column: value})
    assert store.verify_chain() == 4


def test_a_deleted_middle_row(store: EventStore) -> None:
    _log(store)
    with store._engine.begin() as conn:
        conn.execute(delete(events).where(events.c.position == 4))
    assert store.verify_chain() == 4


def test_a_deleted_middle_row_with_the_tail_renumbered(store: EventStore) -> None:
    """Close the gap: the row moved into position 4 asserts another position and links
    to the deleted row's hash."""
    _log(store)
    with store._engine.begin() as conn:
        conn.execute(delete(events).where(events.c.position == 4))
        for position in range(5, LAST + 1):
            _write(conn, position, {"position": position - 1})
    assert store.verify_chain() == 4


def test_two_rows_swapped(store: EventStore) -> None:
    _log(store)
    with store._engine.begin() as conn:
        _write(conn, 4, {"position": -4})
        _write(conn, 5, {"position": 4})
        _write(conn, -4, {"position": 5})
    assert store.verify_chain() == 4


def test_two_rows_swapped_and_relinked(store: EventStore) -> None:
    """Swap rows 4 and 5 and rebuild both links and hashes so the pair verifies: the
    row after them still names the old row 5's hash."""
    _log(store)
    with store._engine.begin() as conn:
        rows = _rows(conn)
        _write(conn, 4, {"position": -4})
        _write(conn, 5, {"position": 4})
        _write(conn, -4, {"position": 5})
        prev = bytes(rows[3]["hash"])
        for position in (4, 5):
            prev = _rehash(conn, position, prev_hash=prev)
    assert store.verify_chain() == 6


def test_a_row_slipped_in_before_the_first(store: EventStore) -> None:
    """A row at position 0 linked from the genesis hash: the log must start at 1."""
    _log(store)
    with store._engine.begin() as conn:
        forged = _rows(conn)[1] | {"position": 0, "stream": "f" * 64,
                                   "prev_hash": audit.GENESIS}
        forged["hash"] = audit.link(audit.GENESIS, forged)
        conn.execute(events.insert().values(**forged))
    assert store.verify_chain() == 1
