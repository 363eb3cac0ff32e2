"""The parser of the network commands: the wire form of each into its typed command."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.commands import (
    NetworkCommand,
    NetworkCreate,
    NetworkInspect,
    NetworkRemove,
    Networks,
)
from engine.errors import InvalidArgument
from engine.networks.names import validate_name


def _network_name(args: Mapping[str, Any]) -> str:
    return validate_name(args.get("name"))


def _optional_text(args: Mapping[str, Any], key: str) -> str | None:
    value = args.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidArgument(f"invalid {key} {value!r}: must be a string")
    return value


def parse_network(command_type: str, _container: str | None, args: Mapping[str, Any]
                  ) -> NetworkCommand:
    """A network command; the name obeys engine.networks.names' one rule."""
    match command_type:
        case "network.create":
            return NetworkCreate(_network_name(args), _optional_text(args, "subnet"),
                                 _optional_text(args, "gateway"))
        case "network.remove":
            return NetworkRemove(_network_name(args))
        case "query.networks":
            return Networks()
        case _:  # query.network_inspect
            return NetworkInspect(_network_name(args))
