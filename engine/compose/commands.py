"""The stack commands (``stack.apply``, ``stack.remove``) and their parser: the typed
form of each, checked as a worker will carry it out (``engine.compose.checks``), with
nothing of the store, so parsing a stack command records and loads nothing."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.compose.checks import check_stack
from engine.compose.model import check_project, digest
from engine.errors import InvalidArgument

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
