"""Tree heads: the signed roots of the log's Merkle tree (RFC 9162), kept beside it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

A table rather than events: a head signs the log at a size, so as an event it would
change the very tree it signs (and wake subscribers and the read model for nothing).
A row here is trusted for its signature only, never for being in the database: an
attacker can delete heads but cannot forge one, and the operator keeps copies of
them outside (``berth audit checkpoint --out``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tree_heads",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tree_size", sa.BigInteger, nullable=False),
        sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("timestamp_us", sa.BigInteger, nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("signature", sa.LargeBinary, nullable=False),
        sa.Column("node", sa.String(128), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("tree_heads")
