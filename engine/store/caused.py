"""What a command caused, recorded one way by every feature's service.

A service hands each append the ``Causation`` it was given (the command's id, type,
correlation and actor) and its node, looks a resent command id up before acting, and
tells its observers after the commit. Written once here, so no service can record an
event under another command's id or forget the actor on one path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.commands import Causation
    from engine.events import Event, RecordedEvent
    from engine.store.recorder import CommandOutcome
    from engine.store.store import EventStore

Announce = Callable[[Sequence["RecordedEvent"]], None]


def _nobody(_recorded: Sequence[RecordedEvent]) -> None:
    """The announcer of a service whose events go out some other way (or not at all)."""


@dataclass(frozen=True, slots=True)
class CausedWrites:
    """The appends of one service on one node, and the outcomes of its commands."""

    store: EventStore
    node: str
    announce: Announce = _nobody

    def done(self, causation: Causation) -> CommandOutcome | None:
        """What the command recorded when it was carried out before (a resend), or None."""
        return self.store.outcome(causation.command_id)

    def append(self, stream: str, expected_version: int | None, events: Sequence[Event],
               causation: Causation, *, command_id: str | None = None,
               announce: bool = True) -> list[RecordedEvent]:
        """Append ``events`` under ``causation`` (``command_id``: a step of it, derived
        from its id), then announce them unless the caller does it itself."""
        recorded = self.store.append(
            stream, expected_version, events,
            command_id=causation.command_id if command_id is None else command_id,
            command_type=causation.command_type, correlation_id=causation.correlation_id,
            actor=causation.actor, node=self.node)
        if announce:
            self.announce(recorded)
        return recorded
