"""A stack's desired configuration recorded in the log: ``stack.apply`` and
``stack.remove``, each appended to the project's own stream ``stack:PROJECT`` (a
container's name never holds a colon), so ``berth history``/``events`` tell who changed
the stack and when; the containers' events carry the project in their labels."""

from __future__ import annotations

from typing import Any

from engine import events as ev
from engine.commands import Causation
from engine.compose.commands import StackApply, StackCommand
from engine.store.caused import CausedWrites


def stream_of(project: str) -> str:
    return f"stack:{project}"


def record(writes: CausedWrites, command: StackCommand, causation: Causation
           ) -> tuple[list[ev.RecordedEvent], dict[str, Any]]:
    """Append the stack's event (a resent command id is answered with what it recorded
    then, by the store)."""
    event: ev.Event
    if isinstance(command, StackApply):
        event = ev.StackApplied(command.project, command.digest, command.config)
    else:
        event = ev.StackRemoved(command.project, command.volumes)
    recorded = writes.append(stream_of(command.project), None, [event], causation)
    return recorded, {"project": command.project, "stream": stream_of(command.project)}
