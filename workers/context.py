"""What every handler of one worker shares: store, runtime, node, locks, publishing."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bus.protocol import Command, EventMessage
from engine import events as ev
from engine.errors import NotFound
from engine.projection import ContainerState
from engine.runtime import OCIRuntime
from engine.store import EventStore
from workers.locks import ContainerLocks
from workers.present import event_message

# Events no publisher asked for (an exit conmon reported, an auto-removal) get a
# deterministic command id derived from this namespace, so recording them twice
# (after a crash, or from two paths) is a no-op in the store.
SYSTEM_NAMESPACE = uuid.UUID("5f0c3d4e-6b1a-4c2e-9d7f-b3e1a2c4d5e6")


def system_command_id(*parts: object) -> str:
    return str(uuid.uuid5(SYSTEM_NAMESPACE, ":".join(str(p) for p in parts)))


@dataclass
class WorkerContext:
    store: EventStore
    runtime: OCIRuntime
    node: str
    publish: Callable[[EventMessage], None] = lambda _m: None
    locks: ContainerLocks = field(default_factory=ContainerLocks)
    changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def system_actor(self) -> str:
        return f"berth-worker@{self.node}"

    def container(self, container_id: str) -> ContainerState:
        """The container's current state; NotFound unless it lives on this node."""
        state = self.store.get_container(container_id)
        if state.node != self.node:
            raise NotFound(f"container {container_id} lives on node {state.node!r}, not {self.node!r}")
        return state

    def append(
        self,
        container_id: str,
        expected_version: int,
        events: Sequence[ev.Event],
        command: Command | None = None,
        *,
        command_id: str | None = None,
        command_type: str | None = None,
        step: str | None = None,
    ) -> list[ev.RecordedEvent]:
        """Append, then publish after the commit and wake anyone waiting on a change.

        A command that records in several steps (exec: started, then exited) passes
        ``step`` for all but its last append: that step gets an id derived from the
        command's, so each append stays idempotent on its own.
        """
        if command is not None:
            command_id = system_command_id(command.id, step) if step else command.id
            command_type = f"{command.type}:{step}" if step else command.type
        recorded = self.store.append(
            container_id,
            expected_version,
            events,
            command_id=command_id or system_command_id(container_id, expected_version),
            command_type=command_type or "system",
            correlation_id=command.correlation_id if command else "",
            actor=command.actor if command else self.system_actor,
            node=self.node,
        )
        self.announce(recorded)
        return recorded

    def announce(self, recorded: Sequence[ev.RecordedEvent]) -> None:
        for r in recorded:
            self.publish(event_message(r))
        with self.changed:
            self.changed.notify_all()
