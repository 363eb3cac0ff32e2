"""Alembic revisions of berth's event store. Run them with ``migrations.runner``."""
