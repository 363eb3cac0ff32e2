"""The one parser of wire commands: a table from each command type to its feature's
parser, and the kernel's own queries (the log, a past state, the node).

A command arrives on the wire as a type string, an optional container reference and
a map of arguments. ``parse`` is the one place that turns that into a typed, frozen
command (``engine.commands`` and each feature's ``commands``), with one set of
validation rules: every edge (the worker's dispatch, the client, tests) shares them, so
a bad argument gets the same one-sentence refusal wherever it enters, and nothing past
here sees a loose dict.

Each feature parses its own commands (``engine.containers.parsing``,
``engine.volumes.parsing``, ``engine.networks.parsing``, ``engine.audit.parsing``,
``engine.images.commands``, ``engine.compose.commands``); this module only knows which
is whose, so the typed commands, the run spec and the events never import a parser,
and a parser never imports the store or the runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final, TypeAlias

from engine import command_types as t
from engine.arguments import _flag, _integer
from engine.audit.parsing import parse_audit
from engine.commands import (
    Command,
    Events,
    Info,
    Ping,
    Rebuild,
    StateAt,
    StreamLocation,
)
from engine.compose.commands import parse_stack
from engine.containers.parsing import parse_container
from engine.errors import InvalidArgument
from engine.events import datetime_from_data
from engine.images.commands import parse_image
from engine.networks.parsing import parse_network
from engine.volumes.parsing import parse_volume

Parser: TypeAlias = Callable[[str, str | None, Mapping[str, Any]], Command]
MAX_EVENTS_PAGE: Final = 1000


def _time(args: Mapping[str, Any], key: str) -> datetime | None:
    value = args.get(key)
    return None if value is None else datetime_from_data(value)


def _events(args: Mapping[str, Any]) -> Events:
    types = args.get("types")
    if types is not None and (not isinstance(types, list)
                              or not all(isinstance(t, str) for t in types)):
        raise InvalidArgument("event type filter must be a list of strings")
    container = args.get("container")
    if container is not None and not isinstance(container, str):
        raise InvalidArgument("the container filter must be a container reference")
    return Events(_integer(args, "after", 0), _integer(args, "limit", 500, minimum=1,
                                                         maximum=MAX_EVENTS_PAGE),
                  None if types is None else tuple(types), container,
                  _time(args, "since"), _time(args, "until"))


def _state_at(ref: str | None, args: Mapping[str, Any]) -> StateAt:
    position = None if args.get("at_position") is None else _integer(args, "at_position", 0)
    return StateAt(ref, position, _time(args, "at_time"))


def _kernel(command_type: str, container: str | None, args: Mapping[str, Any]) -> Command:
    """The queries of the log and the node, which belong to no feature."""
    match command_type:
        case "query.events":
            return _events(args)
        case "query.state":
            return _state_at(container, args)
        case "query.ping":
            return Ping()
        case "query.info":
            return Info()
        case "query.stream":
            return StreamLocation()
        case _:  # admin.rebuild
            return Rebuild(_flag(args, "verify"), _flag(args, "force"))


def _image(command_type: str, _container: str | None, args: Mapping[str, Any]) -> Command:
    return parse_image(command_type, args)  # type: ignore[return-value]


def _stack(command_type: str, _container: str | None, args: Mapping[str, Any]) -> Command:
    return parse_stack(command_type, args)  # type: ignore[return-value]


KERNEL_COMMANDS: Final = frozenset({t.EVENTS, t.STATE, t.PING, t.INFO, t.STREAM, t.REBUILD})
CONTAINER_PARSED: Final = t.CONTAINER_COMMANDS | {t.PS, t.INSPECT, t.RESOLVE,
                                                  t.HISTORY, t.LOGS}
NETWORK_PARSED: Final = t.NETWORK_COMMANDS | {t.NETWORKS, t.NETWORK_INSPECT}

PARSERS: Final[Mapping[str, Parser]] = {
    **dict.fromkeys(KERNEL_COMMANDS, _kernel),
    **dict.fromkeys(CONTAINER_PARSED, parse_container),
    **dict.fromkeys(t.VOLUME_COMMANDS, parse_volume),
    **dict.fromkeys(NETWORK_PARSED, parse_network),
    **dict.fromkeys(t.AUDIT_COMMANDS, parse_audit),
    **dict.fromkeys(t.IMAGE_COMMANDS, _image),
    **dict.fromkeys(t.STACK_COMMANDS, _stack),
}
"""Each command type to its feature's parser: every type of ``COMMAND_TYPES`` once
(``tests/engine/test_commands.py`` checks it)."""


def parse(command_type: str, container: str | None, args: Mapping[str, Any]) -> Command:
    """The typed command for a wire command; InvalidArgument with one sentence if not.

    ``container`` is the reference as the publisher gave it (an id, a prefix or a
    name); resolving it is the service's job.
    """
    parser = PARSERS.get(command_type)
    if parser is None:
        raise InvalidArgument(f"unknown command type {command_type!r}")
    return parser(command_type, container, args)
