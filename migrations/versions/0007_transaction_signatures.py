"""One writer signature per transaction: ``events.signed_from``.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08

A writer used to sign every row it appended (revision 0005), which halved batched
appends and made ``berth audit verify`` spend most of its time checking signatures.
It now signs once per transaction, over the chain hash of the transaction's last
row, which binds every row before it (engine/audit/vouch.py). That signature is
stored once, in the ``signature`` column of the transaction's last event row, and
this column holds the position of the transaction's first row on that row only (it
is signed too, so a signature cannot be stretched over rows it never covered).

Nothing is rewritten: rows signed one by one before keep NULL here and are checked
as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("signed_from", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_column("signed_from")
