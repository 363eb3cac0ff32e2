"""berth's event store: an append-only log with a projected read model.

The public surface is re-exported here; the modules behind it are split by concern
(schema, mapper, recorder and its SQLite and PostgreSQL dialects, reader, read model,
audit, time travel). The schema itself belongs to the ``migrations`` package.

The names are loaded when first asked for (PEP 562), not whenever a module of the
package is imported: the audit's modules read the tables (``engine.store.schema``) and
the recorder uses the audit, so an eager import of the recorder here made importing
``engine.audit.chain`` first fail half-way, on a circle.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.store.recorder import AppendRequest as AppendRequest
    from engine.store.recorder import CommandOutcome as CommandOutcome
    from engine.store.store import EventStore as EventStore

_HOME = {"AppendRequest": "recorder", "CommandOutcome": "recorder", "EventStore": "store"}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)  # on first use: see above
