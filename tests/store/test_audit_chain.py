"""The audit chain's parts on their own: the canonical form, the walk over hand-built
rows, and the paged read of the log (SQLite; test_tamper.py covers both backends)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
from sqlalchemy import text

from engine import events as ev
from engine.audit import chain as audit
from engine.store.store import EventStore
from migrations.runner import upgrade
from tests.store.helpers import create, run


def _row(position: int, **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"position": position, "stream": "c1", "stream_version": position,
                           "type": "container.started", "schema_version": 1,
                           "data": b"\xff\x00", "recorded_at": 1_700_000_000_000_000 + position,
                           "causation_id": None, "correlation_id": None, "actor": "a",
                           "node": "n1"}
    row.update(changes)
    return row


def _chain(count: int) -> list[dict[str, Any]]:
    rows, prev = [], audit.GENESIS
    for position in range(1, count + 1):
        row = _row(position)
        row["prev_hash"], row["hash"] = prev, audit.link(prev, row)
        prev = row["hash"]
        rows.append(row)
    return rows


def test_the_canonical_form_keeps_bytes_apart_from_text() -> None:
    row = _row(1, data=memoryview(b"\xff\x00"))
    values = msgpack.unpackb(audit.canonical(row), raw=False)
    assert values == [1, "c1", 1, "container.started", 1, b"\xff\x00",
                      1_700_000_000_000_001, None, None, "a", "n1"]
    assert audit.canonical(_row(1, actor="a")) != audit.canonical(_row(1, actor="b"))


def test_an_intact_chain_has_no_break() -> None:
    assert audit.first_break(_chain(4)) is None
    assert audit.first_break([]) is None


@pytest.mark.parametrize("column, value", [
    ("prev_hash", None), ("prev_hash", b"\x01" * 32), ("hash", None), ("hash", b"\x02" * 32),
])
def test_a_broken_link_is_found_at_its_row(column: str, value: bytes | None) -> None:
    rows = _chain(4)
    rows[2][column] = value
    assert audit.first_break(rows) == 3


def test_a_wrong_prev_hash_is_found_even_when_the_hash_matches_the_true_chain() -> None:
    """The row's own hash is over the true predecessor; only its prev_hash lies."""
    rows = _chain(3)
    rows[1]["prev_hash"] = b"\x03" * 32
    assert audit.first_break(rows) == 2


def test_a_gap_is_found_at_the_missing_position() -> None:
    rows = _chain(4)
    del rows[1]
    assert audit.first_break(rows) == 2


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[EventStore]:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    store = EventStore(url)
    try:
        yield store
    finally:
        store.close()


def _five(store: EventStore) -> None:
    cid = create(store)
    run(store, cid, 1, ev.PidReceived(10, 9), ev.Started())
    run(store, cid, 3, ev.Signalled(15), ev.Exited(143, None, True, "stop"))


@pytest.mark.parametrize("page", [1, 2, 3, 5, 6])
def test_chain_rows_reads_every_row_once_in_order_whatever_the_page(
        sqlite_store: EventStore, page: int) -> None:
    _five(sqlite_store)
    with sqlite_store._engine.connect() as conn:
        rows = list(audit.chain_rows(conn, page=page))
    assert [r["position"] for r in rows] == [1, 2, 3, 4, 5]
    assert all(isinstance(r["recorded_at"], int) for r in rows)
    assert audit.first_break(rows) is None


def test_chain_rows_sees_a_row_forged_far_below_the_first(sqlite_store: EventStore) -> None:
    _five(sqlite_store)
    with sqlite_store._engine.begin() as conn:
        conn.execute(text("UPDATE events SET position = -1000 WHERE position = 5"))
        rows = list(audit.chain_rows(conn, page=2))
    assert [r["position"] for r in rows] == [-1000, 1, 2, 3, 4]
    assert audit.first_break(rows) == 1
