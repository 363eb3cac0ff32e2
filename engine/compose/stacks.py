"""A stack's desired configuration recorded in the log: ``stack.apply`` and
``stack.remove``, each appended to the project's own stream ``stack:PROJECT`` (a
container's name never holds a colon), so ``berth history``/``events`` tell who changed
the stack and when; the containers' events carry the project in their labels."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine import events as ev
from engine.compose.checks import check_stack
from engine.compose.model import check_project, digest
from engine.errors import InvalidArgument
from engine.store.store import EventStore

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class StackApply:
    project: str
    digest: str
    config: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StackRemove:
    project: str
    volumes: bool = False


StackCommand = StackApply | StackRemove


def stream_of(project: str) -> str:
    return f"stack:{project}"


def _project(args: Mapping[str, Any]) -> str:
    return check_project(args.get("project"))


def parse_stack(command_type: str, args: Mapping[str, Any]) -> StackCommand:
    """The typed stack command; the digest must be the config's own, and the config a
    stack the engine would carry out (``engine.compose.checks``: every service's create
    as a worker parses it), so no stack it would refuse is ever recorded."""
    project = _project(args)
    if command_type == "stack.remove":
        return StackRemove(project, bool(args.get("volumes")))
    config, claimed = args.get("config"), args.get("digest")
    if not isinstance(config, dict) or config.get("name") != project:
        raise InvalidArgument("stack.apply needs the normalised stack of the project named")
    if not isinstance(claimed, str) or not _DIGEST_RE.fullmatch(claimed):
        raise InvalidArgument("stack.apply needs a sha256: digest")
    try:
        own = digest(config)
    except (TypeError, ValueError):  # bytes, a NaN: not what a normalised stack holds
        raise InvalidArgument("stack.apply: the configuration is not plain JSON data") from None
    if own != claimed:
        raise InvalidArgument("stack.apply: the digest is not the configuration's")
    check_stack(config)
    return StackApply(project, claimed, config)


def record(store: EventStore, command: StackCommand, *, command_id: str, command_type: str,
           correlation_id: str, actor: str, node: str,
           announce: Callable[[Sequence[ev.RecordedEvent]], None]
           ) -> tuple[list[ev.RecordedEvent], dict[str, Any]]:
    """Append the stack's event (a resent command id is answered with what it recorded
    then, by the store)."""
    event: ev.Event
    if isinstance(command, StackApply):
        event = ev.StackApplied(command.project, command.digest, command.config)
    else:
        event = ev.StackRemoved(command.project, command.volumes)
    recorded = store.append(stream_of(command.project), None, [event], command_id=command_id,
                            command_type=command_type, correlation_id=correlation_id,
                            actor=actor, node=node)
    announce(recorded)
    return recorded, {"project": command.project, "stream": stream_of(command.project)}
