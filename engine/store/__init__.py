"""berth's event store: an append-only log with a projected read model.

The public surface is re-exported here; the modules behind it are split by concern
(schema, mapper, recorder and its SQLite and PostgreSQL dialects, reader, read model,
audit, time travel). The schema itself belongs to the ``migrations`` package.
"""

from engine.store.recorder import AppendRequest, CommandOutcome
from engine.store.store import EventStore

__all__ = ["AppendRequest", "CommandOutcome", "EventStore"]
