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
# run --rm in one round trip: create, start, wait and remove carried out by the worker,
# each step recorded as its own command (engine.commands.Run, workers/runs.py)
RUN: Final = "container.run"
# health checks: one probe now (routed to the container's node; records only a change)
HEALTHCHECK: Final = "container.healthcheck"
# updates: resources through runc update, the restart policy (engine.containers.decide._update)
UPDATE: Final = "container.update"
# live usage: reads answered by the container's node, never recorded (workers/usage.py)
TOP: Final = "container.top"
STATS: Final = "container.stats"
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
# stdio streams over tcp: where a node's stream socket is, and its CURVE key
STREAM: Final = "query.stream"

REBUILD: Final = "admin.rebuild"
VERIFY_AUDIT: Final = "admin.verify_audit"
AUDIT_CHECKPOINT: Final = "audit.checkpoint"
AUDIT_PROVE: Final = "audit.prove"
AUDIT_CONSISTENCY: Final = "audit.consistency"
AUDIT_EXPORT: Final = "audit.export"

# volumes
VOLUME_CREATE: Final = "volume.create"
VOLUME_REMOVE: Final = "volume.remove"
VOLUME_PRUNE: Final = "volume.prune"
VOLUME_LS: Final = "volume.ls"
VOLUME_INSPECT: Final = "volume.inspect"
VOLUME_COMMANDS: Final = frozenset(
    {VOLUME_CREATE, VOLUME_REMOVE, VOLUME_PRUNE, VOLUME_LS, VOLUME_INSPECT})
"""Commands about named volumes: no container, answered by the node that keeps them."""
# images: the node's image store (engine.images)
IMAGE_PULL: Final = "image.pull"
IMAGE_LIST: Final = "image.list"
IMAGE_INSPECT: Final = "image.inspect"
IMAGE_REMOVE: Final = "image.remove"
IMAGE_LOAD: Final = "image.load"
IMAGE_IMPORT: Final = "image.import"
IMAGE_SAVE: Final = "image.save"
IMAGE_PUSH: Final = "image.push"
IMAGE_TAG: Final = "image.tag"
IMAGE_PRUNE: Final = "image.prune"
IMAGE_COMMANDS: Final = frozenset({IMAGE_PULL, IMAGE_LIST, IMAGE_INSPECT, IMAGE_REMOVE,
                                   IMAGE_LOAD, IMAGE_IMPORT, IMAGE_SAVE, IMAGE_PUSH,
                                   IMAGE_TAG, IMAGE_PRUNE})
# networks
NETWORK_CREATE: Final = "network.create"
NETWORK_REMOVE: Final = "network.remove"
NETWORKS: Final = "query.networks"
NETWORK_INSPECT: Final = "query.network_inspect"
NETWORK_COMMANDS: Final = frozenset({NETWORK_CREATE, NETWORK_REMOVE})

CHANGE_COMMANDS: Final = frozenset(
    {CREATE, START, STOP, KILL, PAUSE, UNPAUSE, EXEC, CHECKPOINT, RESTORE, REMOVE, UPDATE}
    | {RENAME, COPY_IN}
)
"""Commands that change a container: run once per command id, serialised per container."""
CONTAINER_COMMANDS: Final = (CHANGE_COMMANDS | {WAIT, HEALTHCHECK, TOP, STATS, RUN}
                             | {COPY_OUT, COPY_CHUNK})
"""COPY_OUT reads a container's files: not a query an auditor's key may send;
COPY_CHUNK stages a piece of a copy_in (nothing recorded until the copy_in)."""
QUERY_COMMANDS: Final = frozenset({PS, INSPECT, RESOLVE, EVENTS, HISTORY, STATE, LOGS, PING,
                                   NETWORKS, NETWORK_INSPECT} | {INFO} | {STREAM})
AUDIT_COMMANDS: Final = frozenset(
    {VERIFY_AUDIT, AUDIT_CHECKPOINT, AUDIT_PROVE, AUDIT_CONSISTENCY, AUDIT_EXPORT})
"""What an auditor's key may send besides queries: reads of the log and its proofs, and
a tree head on demand (which vouches for the log, and changes no container)."""
ADMIN_COMMANDS: Final = frozenset({REBUILD}) | AUDIT_COMMANDS
# compose: a stack's desired configuration recorded in "stack:PROJECT" (engine.compose)
STACK_APPLY: Final = "stack.apply"
STACK_REMOVE: Final = "stack.remove"
STACK_COMMANDS: Final = frozenset({STACK_APPLY, STACK_REMOVE})
COMMAND_TYPES: Final = (CONTAINER_COMMANDS | QUERY_COMMANDS | ADMIN_COMMANDS | VOLUME_COMMANDS
                       | IMAGE_COMMANDS | NETWORK_COMMANDS | STACK_COMMANDS)
