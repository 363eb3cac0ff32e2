"""Tables of the event store, as they are at the Alembic head.

This metadata is what the store's queries are written against; it never creates
anything. The schema is created and changed only by the revisions in ``migrations/``,
and a test checks that upgrading to head gives exactly these tables.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Dialect,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import TypeDecorator

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(value: datetime) -> int:
    """UTC microseconds since the epoch: exact, dialect-neutral and cheap to index."""
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


class EpochMicros(TypeDecorator[datetime]):
    """An aware UTC datetime stored as an integer.

    SQLite has no time type and SQLAlchemy's string form drops the offset; an integer
    round-trips exactly on both dialects, which rebuild-equals-incremental depends on.
    """

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> int | None:
        if value is None or isinstance(value, int):
            return value  # bulk writers pass micros already computed for the hash
        return to_micros(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return None if value is None else from_micros(value)


# BIGINT is not a rowid alias in SQLite; INTEGER PRIMARY KEY is, and is 64-bit anyway.
Position = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

events = Table(
    "events",
    metadata,
    Column("position", Position, primary_key=True, autoincrement=False),
    Column("stream", String(128), nullable=False),
    Column("stream_version", Integer, nullable=False),
    Column("type", String(64), nullable=False),
    Column("schema_version", SmallInteger, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("recorded_at", EpochMicros, nullable=False),
    Column("causation_id", String(64), nullable=False),
    Column("correlation_id", String(64), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("node", String(128), nullable=False),
    Column("prev_hash", LargeBinary(32), nullable=True),
    Column("hash", LargeBinary(32), nullable=True),
    # The writer's key id and Ed25519 signature of the hash (engine/audit/vouch.py);
    # NULL on rows written before revision 0005.
    Column("signer", String(64), nullable=True),
    Column("signature", LargeBinary, nullable=True),
    # On the last row of a transaction signed once (revision 0007): the position of
    # its first row; ``signature`` then signs the whole transaction. NULL elsewhere.
    Column("signed_from", BigInteger, nullable=True),
    UniqueConstraint("stream", "stream_version", name="uq_events_stream_version"),
    Index("ix_events_type_position", "type", "position"),
    Index("ix_events_recorded_at", "recorded_at"),
    # A command whose commands row is gone is found by its events (revision 0006).
    Index("ix_events_causation_id", "causation_id"),
)

containers = Table(
    "containers",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("state", String(16), nullable=False),
    Column("node", String(128), nullable=False),
    Column("bundle", Text, nullable=False),
    Column("rootfs", Text, nullable=False),
    Column("command", Text, nullable=False),
    Column("spec", LargeBinary, nullable=False),
    Column("pid", Integer, nullable=True),
    Column("conmon_pid", Integer, nullable=True),
    Column("exit_code", Integer, nullable=True),
    Column("exit_reason", String(16), nullable=True),
    Column("created_at", EpochMicros, nullable=False),
    Column("started_at", EpochMicros, nullable=True),
    Column("finished_at", EpochMicros, nullable=True),
    Column("restart_count", Integer, nullable=False),
    Column("paused", Boolean, nullable=False),
    Column("auto_remove", Boolean, nullable=False),
    Column("removed", Boolean, nullable=False),
    Column("checkpoint_path", Text, nullable=True),
    Column("exec_sessions", LargeBinary, nullable=False),
    Column("version", Integer, nullable=False),
    Column("last_position", BigInteger, nullable=False),
    # ps lists live containers newest first, optionally only running ones.
    Index("ix_containers_live", "removed", "state", "created_at"),
    Index("ix_containers_node", "node", "removed"),
    # Names are unique among containers that still exist; a removed one frees its name.
    Index(
        "ux_containers_live_name",
        "name",
        unique=True,
        sqlite_where=text("removed = 0"),
        postgresql_where=text("NOT removed"),
    ),
)

commands = Table(
    "commands",
    metadata,
    Column("command_id", String(64), primary_key=True),
    Column("command_type", String(64), nullable=False),
    Column("stream", String(128), nullable=False),
    Column("outcome", String(8), nullable=False),
    Column("error_code", String(64), nullable=True),
    Column("message", Text, nullable=True),
    Column("positions", LargeBinary, nullable=False),
    Column("recorded_at", EpochMicros, nullable=False),
    Column("signer", String(64), nullable=True),
    Column("signature", LargeBinary, nullable=True),
)

tree_heads = Table(
    "tree_heads",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tree_size", BigInteger, nullable=False),
    Column("root_hash", LargeBinary(32), nullable=False),
    Column("timestamp_us", BigInteger, nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("signature", LargeBinary, nullable=False),
    Column("node", String(128), nullable=False),
)
