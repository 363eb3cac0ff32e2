"""The parser of the volume commands: the wire form of each into its typed command."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.arguments import _flag, _strings
from engine.commands import (
    VolumeCommand,
    VolumeCreate,
    VolumeInspect,
    VolumeLs,
    VolumePrune,
    VolumeRemove,
)
from engine.containers.mountspec import validate_volume_name
from engine.errors import InvalidArgument
from engine.volumes.rules import check_labels


def parse_volume(command_type: str, _container: str | None, args: Mapping[str, Any]
                 ) -> VolumeCommand:
    """A volume command; the names obey engine.containers.mountspec's one rule."""
    match command_type:
        case "volume.create":
            return VolumeCreate(validate_volume_name(args.get("name")),
                                check_labels(args.get("labels") or {}))
        case "volume.remove":
            names = _strings(args, "names")
            if not names:
                raise InvalidArgument("volume rm needs at least one volume name")
            return VolumeRemove(tuple(validate_volume_name(n) for n in names),
                                _flag(args, "force"))
        case "volume.prune":
            return VolumePrune()
        case "volume.ls":
            return VolumeLs()
        case _:  # volume.inspect
            return VolumeInspect(validate_volume_name(args.get("name")))
