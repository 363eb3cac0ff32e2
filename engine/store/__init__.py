"""berth's event store: an append-only log with a projected read model.

The public surface is re-exported here; the modules behind it are split by concern
(schema, mapper, recorder, reader, read model, audit, time travel, migrate).
"""

from engine.store.recorder import AppendRequest, CommandOutcome
from engine.store.store import EventStore, open_store

__all__ = ["AppendRequest", "CommandOutcome", "EventStore", "open_store"]
