"""What every handler of one worker shares: store, runtime, node, locks, publishing."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bus.protocol import Command, EventMessage
from engine import events as ev
from engine.errors import NotFound
from engine.projection import ContainerState, apply
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
    # Called with every batch of committed events (the conmon watcher follows conmon
    # pids this way); an observer must not raise and must not block.
    observers: list[Callable[[Sequence[ev.RecordedEvent]], None]] = field(default_factory=list)
    _states: dict[str, ContainerState] = field(default_factory=dict)

    @property
    def system_actor(self) -> str:
        return f"berth-worker@{self.node}"

    def container(self, container_id: str) -> ContainerState:
        """The container's current state; NotFound unless it lives on this node.

        The worker is the only writer of its node's streams, so it keeps the states
        its own appends produced (folded with the same pure projection) instead of
        reading the read model back before every decision.
        """
        state = self._states.get(container_id)
        if state is None:
            state = self.store.get_container(container_id)
            if state.node != self.node:
                raise NotFound(f"container {container_id} lives on node {state.node!r}, not {self.node!r}")
            self._states[container_id] = state
        if state.removed:
            raise NotFound(f"no such container: {container_id}")
        return state

    def latest(self, container_id: str) -> ContainerState:
        """The newest state, removed containers included (for waits and replies)."""
        state = self._states.get(container_id)
        if state is not None:
            return state
        return self.store.get_container(container_id, include_removed=True)

    def forget(self, container_id: str) -> None:
        """Drop the kept state; the next read goes to the store."""
        self._states.pop(container_id, None)

    def _remember(self, container_id: str, expected_version: int, recorded: Sequence[ev.RecordedEvent]) -> None:
        if not recorded or recorded[0].metadata.stream_version != expected_version + 1:
            # A replayed outcome (the command was recorded before): the events are
            # not new, so folding them again would be wrong.
            self.forget(container_id)
            return
        state = self._states.get(container_id)
        for r in recorded:
            state = apply(state, r)
        if state is None:
            self.forget(container_id)
        else:
            self._states[container_id] = state

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
        try:
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
        except BaseException:
            self.forget(container_id)
            raise
        self._remember(container_id, expected_version, recorded)
        self.announce(recorded)
        return recorded

    def announce(self, recorded: Sequence[ev.RecordedEvent]) -> None:
        for r in recorded:
            self.publish(event_message(r))
        for observe in self.observers:
            observe(recorded)
        with self.changed:
            self.changed.notify_all()
