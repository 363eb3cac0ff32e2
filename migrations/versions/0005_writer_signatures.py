"""Writer signatures: every row a writer appends carries its Ed25519 signature.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

``signer`` (the key id) and ``signature`` on ``events`` and ``commands``
(engine/audit/vouch.py). Nullable, and not backfilled: no key can honestly vouch now
for rows written before, so they keep NULL and are covered by tree heads only
(``berth audit verify`` says which positions). Writers from here on fill both
(``signer = ''`` when they have no key); unsigned rows are accepted only before the
log's first signed row.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("events", "commands"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("signer", sa.String(64), nullable=True))
            batch.add_column(sa.Column("signature", sa.LargeBinary, nullable=True))


def downgrade() -> None:
    for table in ("events", "commands"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("signature")
            batch.drop_column("signer")
