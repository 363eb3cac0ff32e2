"""The names of the commands on the wire: one place, importable for nothing.

``engine.commands`` holds the typed commands and their parser; these names are kept
apart because the client and the bus framing need only them, and building the
command classes costs the CLI's start-up milliseconds it does not need.
"""

from __future__ import annotations

from typing import Final

CREATE: Final = "container.create"
START: Final = "container.start"
STOP: Final = "container.stop"
KILL: Final = "container.kill"
PAUSE: Final = "container.pause"
UNPAUSE: Final = "container.unpause"
EXEC: Final = "container.exec"
CHECKPOINT: Final = "container.checkpoint"
RESTORE: Final = "container.restore"
REMOVE: Final = "container.remove"
WAIT: Final = "container.wait"
# CLI verbs (podman's)
RENAME: Final = "container.rename"
COPY_IN: Final = "container.copy_in"

PS: Final = "query.ps"
INSPECT: Final = "query.inspect"
RESOLVE: Final = "query.resolve"
EVENTS: Final = "query.events"
HISTORY: Final = "query.history"
STATE: Final = "query.state"
LOGS: Final = "query.logs"
PING: Final = "query.ping"
# CLI verbs (podman's)
INFO: Final = "query.info"
COPY_OUT: Final = "query.copy_out"
COPY_CHUNK: Final = "container.copy_chunk"

REBUILD: Final = "admin.rebuild"
VERIFY_AUDIT: Final = "admin.verify_audit"
AUDIT_CHECKPOINT: Final = "audit.checkpoint"
AUDIT_PROVE: Final = "audit.prove"
AUDIT_CONSISTENCY: Final = "audit.consistency"
AUDIT_EXPORT: Final = "audit.export"

CHANGE_COMMANDS: Final = frozenset(
    {CREATE, START, STOP, KILL, PAUSE, UNPAUSE, EXEC, CHECKPOINT, RESTORE, REMOVE}
    | {RENAME, COPY_IN}
)
"""Commands that change a container: run once per command id, serialised per container."""
CONTAINER_COMMANDS: Final = CHANGE_COMMANDS | {WAIT} | {COPY_OUT, COPY_CHUNK}
"""COPY_OUT reads a container's files: not a query an auditor's key may send;
COPY_CHUNK stages a piece of a copy_in (nothing recorded until the copy_in)."""
QUERY_COMMANDS: Final = frozenset({PS, INSPECT, RESOLVE, EVENTS, HISTORY, STATE, LOGS, PING}
                                  | {INFO})
AUDIT_COMMANDS: Final = frozenset(
    {VERIFY_AUDIT, AUDIT_CHECKPOINT, AUDIT_PROVE, AUDIT_CONSISTENCY, AUDIT_EXPORT})
"""What an auditor's key may send besides queries: reads of the log and its proofs, and
a tree head on demand (which vouches for the log, and changes no container)."""
ADMIN_COMMANDS: Final = frozenset({REBUILD}) | AUDIT_COMMANDS
COMMAND_TYPES: Final = CONTAINER_COMMANDS | QUERY_COMMANDS | ADMIN_COMMANDS
