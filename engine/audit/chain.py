"""The tamper-evident hash chain over the log.

Each row stores ``hash = sha256(prev_hash || canonical(row))`` where ``prev_hash`` is
the hash of the row at the previous position. Editing a row breaks its own hash,
deleting one leaves a gap in the positions, and inserting one (which needs renumbering
the rows after it, positions being contiguous) breaks the hashes of those rows.

The chain is unkeyed: someone who can rewrite the whole tail and recompute every hash
is not detected. Anchor ``head()`` somewhere else (a signed note, another system's log)
to close that hole.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import msgpack  # type: ignore[import-untyped]
from sqlalchemy import BigInteger, Connection, RowMapping, select, type_coerce

from engine.store.schema import events

GENESIS = b"\x00" * 32


# The columns an event row asserts, in canonical order (also the recorder's insert order).
CONTENT = ("position", "stream", "stream_version", "type", "schema_version", "data",
           "recorded_at", "causation_id", "correlation_id", "actor", "node")
_DATA = CONTENT.index("data")


def canonical_values(values: Sequence[Any]) -> bytes:
    """A stable byte form of everything an event row asserts, from its CONTENT values;
    ``recorded_at`` is epoch microseconds so no driver's datetime handling enters."""
    items = list(values)
    items[_DATA] = bytes(items[_DATA])  # drivers may hand back memoryview
    packed: bytes = msgpack.packb(items, use_bin_type=True)
    return packed


def canonical(row: Mapping[str, Any] | RowMapping) -> bytes:
    return canonical_values([row[name] for name in CONTENT])


def link(prev_hash: bytes, row: Mapping[str, Any] | RowMapping) -> bytes:
    return hashlib.sha256(prev_hash + canonical(row)).digest()


def link_values(prev_hash: bytes, values: Sequence[Any]) -> bytes:
    return hashlib.sha256(prev_hash + canonical_values(values)).digest()


def first_break(rows: Iterable[Mapping[str, Any] | RowMapping]) -> int | None:
    """Walk rows in position order; return the first position where the chain breaks.

    Rows map ``prev_hash``, ``hash`` and the canonical columns. A missing position is
    reported as that position; a bad link or a bad hash as the row's own position.
    """
    expected_position = 1
    prev = GENESIS
    for row in rows:
        position = int(row["position"])
        if position != expected_position:
            return expected_position
        stored = row["hash"]
        prev_stored = row["prev_hash"]
        if (prev_stored is None or bytes(prev_stored) != prev or stored is None
                or link(prev, row) != bytes(stored)):
            return position
        prev = bytes(stored)
        expected_position += 1
    return None


CHAIN_COLUMNS = (
    events.c.position, events.c.stream, events.c.stream_version, events.c.type,
    events.c.schema_version, events.c.data,
    type_coerce(events.c.recorded_at, BigInteger).label("recorded_at"),
    events.c.causation_id, events.c.correlation_id, events.c.actor, events.c.node,
    events.c.prev_hash, events.c.hash,
)
"""An event row as the chain hashes it, with its hash columns (one list for every
reader of the chain)."""


def chain_rows(conn: Connection, page: int = 5000) -> Iterator[RowMapping]:
    """Every event row with its hash columns, in position order, a page at a time."""
    columns = CHAIN_COLUMNS
    cursor = -(2**62)  # a forged row at position 0 or below must be seen too
    while True:
        rows = conn.execute(select(*columns).where(events.c.position > cursor)
                            .order_by(events.c.position).limit(page)).all()
        for row in rows:
            yield row._mapping
        if len(rows) < page:
            return
        cursor = int(rows[-1].position)
