"""The shared rules for the arguments of a wire command: numbers, flags, strings.

Every feature's parser (``engine.parsing``'s table names them) reads its arguments
with these, so a bad value gets the same one sentence whichever command carries it.
Kept apart from the typed commands and the parsers so that a feature's parser and the
client (``check_timeout``) reach them without loading any feature.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from engine.errors import InvalidArgument

MAX_STOP_TIMEOUT: Final = 365 * 24 * 3600.0


def _number(args: Mapping[str, Any], key: str, default: float, *, minimum: float = 0,
            maximum: float = math.inf) -> float:
    value = args.get(key, default)
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value)
            or value < minimum or value > maximum):
        upper = "" if maximum == math.inf else f" and <= {maximum:g}"
        raise InvalidArgument(f"invalid {key} {value!r}: must be a number >= {minimum:g}{upper}")
    return float(value)


def check_timeout(value: object, key: str = "timeout") -> float:
    """A finite number of seconds, 0 up to a year: what stop and wait accept."""
    return _number({key: value}, key, 0, maximum=MAX_STOP_TIMEOUT)


def _integer(args: Mapping[str, Any], key: str, default: int, *, minimum: int = 0,
             maximum: int | None = None) -> int:
    value = args.get(key, default)
    if (isinstance(value, bool) or not isinstance(value, int) or value < minimum
            or (maximum is not None and value > maximum)):
        raise InvalidArgument(f"invalid {key} {value!r}")
    return value


def _flag(args: Mapping[str, Any], key: str) -> bool:
    value = args.get(key, False)
    if not isinstance(value, bool):
        raise InvalidArgument(f"invalid {key} {value!r}: must be true or false")
    return value


def _strings(args: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = args.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"invalid {key}: must be a list of strings")
    return tuple(value)


def _text(args: Mapping[str, Any], key: str) -> str:
    value = args.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(f"invalid {key} {value!r}: must be a string")
    return value


def _container(command_type: str, container: str | None) -> str:
    if not container:
        raise InvalidArgument(f"{command_type} needs a container")
    return container
