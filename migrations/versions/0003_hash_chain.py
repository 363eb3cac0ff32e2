"""The audit hash chain: prev_hash/hash on every event, existing rows backfilled.

Revision ID: 0003
Revises: 0002
Create Date: 2024-11-28

Rows written before this revision are chained here, in position order, so a log that
predates the chain verifies like one written after it. The backfill vouches for the
rows as they are at upgrade time, not for their earlier history.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from engine.audit.chain import GENESIS, link

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

PAGE = 5000


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("prev_hash", sa.LargeBinary(32), nullable=True))
        batch.add_column(sa.Column("hash", sa.LargeBinary(32), nullable=True))
    bind = op.get_bind()
    events = sa.table(
        "events", *(sa.column(name) for name in (
            "position", "stream", "stream_version", "type", "schema_version", "data",
            "recorded_at", "causation_id", "correlation_id", "actor", "node",
            "prev_hash", "hash")))
    prev = GENESIS
    cursor = -(2**62)
    while True:
        rows = bind.execute(sa.select(events).where(events.c.position > cursor)
                            .order_by(events.c.position).limit(PAGE)).all()
        updates = []
        for row in rows:
            digest = link(prev, row._mapping)
            updates.append({"p": row.position, "ph": prev, "h": digest})
            prev = digest
        if updates:
            bind.execute(events.update().where(events.c.position == sa.bindparam("p"))
                         .values(prev_hash=sa.bindparam("ph"),
                                 hash=sa.bindparam("h")), updates)
        if len(rows) < PAGE:
            break
        cursor = rows[-1].position


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_column("hash")
        batch.drop_column("prev_hash")
