"""A subset of Go's text/template, as podman's ``--format`` uses it.

Enough for what people type at podman: ``{{.ID}}``, ``{{.Names}}``, nested fields
(``{{.Spec.Args}}``), ``{{json .}}`` and ``{{json .Field}}``, ``{{upper .X}}``,
``{{lower .X}}``, ``{{truncate .X N}}``, literal text with ``\\t`` and ``\\n``
escapes, and the ``table`` prefix (a header row, columns aligned). Anything else
(``range``, ``if``, pipelines) is refused with one sentence rather than printed
wrongly. Pure: no I/O, tested on its own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from berth.cli.table import table_lines
from engine.errors import InvalidArgument

_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.DOTALL)
_FIELD = re.compile(r"^\.([A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*)?$")
_FUNCS = ("json", "upper", "lower", "truncate")

HEADERS: dict[str, str] = {"ID": "CONTAINER ID", "Names": "NAMES", "Name": "NAME",
                           "CreatedAt": "CREATED AT", "RunningFor": "CREATED",
                           "ExitCode": "EXIT CODE"}
"""Column headers of the ``table`` form where podman's differ from the upper-cased field."""


@dataclass(frozen=True, slots=True)
class _Action:
    func: str | None
    path: tuple[str, ...]
    arg: int | None = None

    @property
    def header(self) -> str:
        if not self.path:
            return "" if self.func is None else self.func.upper()
        last = self.path[-1]
        return HEADERS.get(last, re.sub(r"(?<=[a-z])(?=[A-Z])", " ", last).upper())


@dataclass(frozen=True, slots=True)
class Template:
    parts: tuple[str | _Action, ...]
    table: bool

    def render(self, value: Any) -> str:
        return "".join(p if isinstance(p, str) else _evaluate(p, value) for p in self.parts)

    def header(self) -> str:
        return "".join(p if isinstance(p, str) else p.header for p in self.parts)

    def render_all(self, values: Sequence[Any]) -> list[str]:
        """Every value's line; with ``table``, a header first and the columns (split
        by tabs) padded to one width, as Go's tabwriter does for podman."""
        lines = [self.render(v) for v in values]
        if not self.table:
            return lines
        return table_lines([line.split("\t") for line in [self.header(), *lines]])


def parse(text: str) -> Template:
    """``text`` as a template; a ``table`` prefix asks for a header and aligned columns."""
    table = False
    stripped = text.lstrip()
    if stripped == "table" or stripped.startswith("table "):
        table, text = True, stripped[len("table"):].lstrip(" ")
    text = text.replace("\\t", "\t").replace("\\n", "\n")
    parts: list[str | _Action] = []
    end = 0
    for match in _ACTION.finditer(text):
        parts.append(text[end:match.start()])
        parts.append(_action(match.group(1), text))
        end = match.end()
    rest = text[end:]
    if "{{" in rest or "}}" in rest:
        raise InvalidArgument(f"invalid template {text!r}: unbalanced braces")
    parts.append(rest)
    return Template(tuple(p for p in parts if p != ""), table)


def _action(body: str, text: str) -> _Action:
    words = body.split()
    if not words:
        raise InvalidArgument(f"invalid template {text!r}: an empty action {{{{}}}}")
    func: str | None = None
    arg: int | None = None
    if not words[0].startswith("."):
        func = words[0]
        if func not in _FUNCS:
            raise InvalidArgument(f"template function {func!r} is not supported: use a field "
                                  f"(.Name) or one of {', '.join(_FUNCS)}")
        words = words[1:]
        if func == "truncate":
            if len(words) != 2 or not words[1].isdigit():
                raise InvalidArgument(f"invalid template {text!r}: use {{{{truncate .Field N}}}}")
            arg, words = int(words[1]), words[:1]
    if len(words) != 1 or not _FIELD.fullmatch(words[0]):
        raise InvalidArgument(f"invalid template action {{{{{body}}}}}: use {{{{.Field}}}}, "
                              "{{json .}} or {{json .Field}}")
    path = tuple(p for p in words[0].split(".") if p)
    return _Action(func, path, arg)


class Both(str):
    """A value that prints as a string and has fields too: berth's ``{{.State}}`` is
    the state's word, Docker's ``{{.State.Status}}`` a field of a struct; both work."""

    fields: Mapping[str, Any]

    def __new__(cls, text: str, fields: Mapping[str, Any]) -> Both:
        made = super().__new__(cls, text)
        made.fields = fields
        return made


def _lookup(value: Any, path: tuple[str, ...]) -> Any:
    """The top level is a struct to Go (an unknown field is an error: a typo is not
    printed as nothing); below it, maps (labels, event data) give ``<no value>``."""
    for depth, name in enumerate(path):
        if isinstance(value, Both):
            value = value.fields
        if isinstance(value, Mapping) and name in value:
            value = value[name]
        elif isinstance(value, Mapping) and _snake(name) in value:
            value = value[_snake(name)]
        elif depth > 0 and isinstance(value, Mapping):
            return None
        else:
            raise InvalidArgument(f"template: can't evaluate field {name}")
    return value


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _evaluate(action: _Action, value: Any) -> str:
    found = _lookup(value, action.path)
    if action.func == "json":
        return json.dumps(found, sort_keys=True, default=str)
    text = _go_string(found)
    if action.func == "upper":
        return text.upper()
    if action.func == "lower":
        return text.lower()
    if action.func == "truncate" and action.arg is not None:
        return text[:action.arg]
    return text


def _go_string(value: Any) -> str:
    """How Go's template prints a value: lists as ``[a b]``, nil as ``<no value>``."""
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(_go_string(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{k}:{_go_string(v)}" for k, v in sorted(value.items())) + "]"
    return str(value)
