"""A Compose file's text read into plain data, bounded before anything is built.

The safe loader builds no object from a tag; on top of it, the parser's event stream
(which keeps its own stack and does not recurse) is read first to refuse a file nested
deeper than a loader can recurse, or whose aliases stand for more values than memory
holds, and the data is then searched for a number no one could print. A refusal is one
sentence naming the file, and a line and column at most: it never quotes the file.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from engine.errors import InvalidArgument

MAX_FILE_BYTES = 1024 * 1024
"""A Compose file is a few KiB; a bigger one is a mistake (or a YAML bomb's start)."""
MAX_DEPTH = 64
"""Collections nested in one another: a Compose file needs about eight levels. Deeper
is refused before the file is loaded (a loader recurses once per level)."""
MAX_NODES = 200_000
"""Scalars and collections of the file, each alias counted as what it stands for: a
few aliases to aliases (a "billion laughs") stand for more than memory holds."""
MAX_DIGITS = 18
"""The longest integer taken (a replica count, a pids limit, a size in bytes)."""

def load(text: bytes, *, where: str) -> dict[str, Any]:
    """The file's YAML (safe loader: no tags building objects), size-capped, its depth
    and its size with aliases expanded bounded before it is built (``_check_shape``);
    a refusal is one sentence that never quotes the file."""
    import yaml  # only the compose commands need it

    if len(text) > MAX_FILE_BYTES:
        raise InvalidArgument(f"{where}: compose file is larger than {MAX_FILE_BYTES} bytes")
    if b"\0" in text:
        raise InvalidArgument(f"{where}: compose file holds a NUL byte")
    try:
        source = text.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument(f"{where}: compose file is not UTF-8") from None
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built with it
    try:
        _check_shape(yaml.parse(source, Loader=loader), where)
        data = yaml.load(source, Loader=loader)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as exc:
        raise InvalidArgument(_yaml_error(exc, where)) from None
    except (ValueError, OverflowError):  # int() past its digits, a date past the calendar
        raise InvalidArgument(f"{where}: not valid YAML: a number or a date in it is out "
                              "of range") from None
    _check_numbers(data, where)
    if not isinstance(data, dict):
        raise InvalidArgument(f"{where}: a compose file is a mapping with 'services'")
    return data


def _too_deep(where: str) -> InvalidArgument:
    return InvalidArgument(f"{where}: compose file nests deeper than {MAX_DEPTH} levels")


def _check_shape(events: Iterable[Any], where: str) -> None:
    """The parser's events (a stream: the parser keeps its own stack, it does not
    recurse) before anything is built: at most ``MAX_DEPTH`` levels, at most
    ``MAX_NODES`` nodes with each alias counted as the node it names, no alias to a
    node that contains it (a structure that contains itself)."""
    import yaml  # only the compose commands need it

    depth = total = 0
    sizes: dict[str, int] = {}
    opened: list[tuple[str | None, int]] = []  # each open collection: (anchor, total)
    for event in events:
        if isinstance(event, yaml.AliasEvent):
            if any(anchor == event.anchor for anchor, _ in opened):
                raise InvalidArgument(f"{where}: an alias in the compose file names a node "
                                      "that contains it")
            total += sizes.get(event.anchor or "", 1)  # an unknown one: the loader refuses it
        elif isinstance(event, yaml.ScalarEvent):
            total += 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        elif isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            total += 1
            depth += 1
            if depth > MAX_DEPTH:
                raise _too_deep(where)
            opened.append((event.anchor, total))
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1
            anchor, first = opened.pop()
            if anchor is not None:
                sizes[anchor] = total - first + 1
        if total > MAX_NODES:
            raise InvalidArgument(f"{where}: compose file has more than {MAX_NODES} values "
                                  "(its aliases expanded)")


_YAML_PROBLEMS = {"ScannerError": "a token cannot be read",
                  "ParserError": "its structure is broken",
                  "ComposerError": "an anchor or alias is wrong",
                  "ConstructorError": "a tag or value cannot be built"}


def _yaml_error(exc: Exception, where: str) -> str:
    """The loader's error as one sentence: what kind, and where (the loader's own text
    quotes the file, this does not)."""
    if "nesting depth" in str(getattr(exc, "problem", "") or ""):  # libyaml's own cap
        return str(_too_deep(where))
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    kind = _YAML_PROBLEMS.get(type(exc).__name__, "syntax error")
    return f"{where}: not valid YAML{at}: {kind}"


def _check_numbers(data: Any, where: str) -> None:
    """No integer of more than ``MAX_DIGITS`` digits anywhere (a hexadecimal one of
    thousands could be built, and not printed: ``int`` to ``str`` has a limit)."""
    todo = [data]
    while todo:  # bounded: _check_shape counted every node, aliases expanded
        item = todo.pop()
        if isinstance(item, dict):
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, (list, set)):
            todo.extend(item)
        elif isinstance(item, int) and not isinstance(item, bool) and \
                abs(item) >= 10 ** MAX_DIGITS:
            raise InvalidArgument(f"{where}: a number in the compose file has more than "
                                  f"{MAX_DIGITS} digits")
