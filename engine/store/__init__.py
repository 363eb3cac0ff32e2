"""berth's event store: an append-only log with a projected read model.

The public surface is re-exported here; the modules behind it are split by concern
(schema, mapper, recorder and its SQLite and PostgreSQL dialects, reader, read model,
audit, time travel). The schema itself belongs to the ``migrations`` package.

The re-exports are resolved on first use, not when the package is imported: the
audit modules import ``engine.store.schema`` (which runs this file) and the recorder
imports the audit modules, so an eager import here made ``import
engine.audit.transparency`` before ``engine.store`` fail on a partial module (the
worker's start-up order did exactly that: ``berth up`` could not start).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.store.recorder import AppendRequest, CommandOutcome
    from engine.store.store import EventStore

__all__ = ["AppendRequest", "CommandOutcome", "EventStore"]


def __getattr__(name: str) -> Any:
    if name in ("AppendRequest", "CommandOutcome"):
        from engine.store import recorder

        return getattr(recorder, name)
    if name == "EventStore":
        from engine.store.store import EventStore

        return EventStore
    raise AttributeError(f"module 'engine.store' has no attribute {name!r}")
