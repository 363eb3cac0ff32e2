"""An index on ``events.causation_id``: a command id is looked up in the events too.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-09

A command id seen before is answered from its ``commands`` row and never run again.
If that row is gone (deleted by someone with write access to the database) the
events the command caused still name it: the store looks there before running a
command it has no row for, and refuses one whose events exist
(engine/store/recorder.py). That look-up is made for every new command, so it needs
this index.
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_events_causation_id", "events", ["causation_id"])


def downgrade() -> None:
    op.drop_index("ix_events_causation_id", table_name="events")
