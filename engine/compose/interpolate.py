"""Variables in a Compose file, as the Compose specification's ``interpolation.md``
says: ``$VAR`` and ``${VAR}``, ``${VAR:-default}`` / ``${VAR-default}`` (unset or
empty / unset), ``${VAR:?message}`` / ``${VAR?message}`` (an error), ``${VAR:+alt}``
/ ``${VAR+alt}`` (the alternative when set), nested in defaults and alternatives, and
``$$`` for a literal ``$``. Applied to every string value of the file (not to keys),
before files are merged, as docker compose does.

A refusal names the variable and where it is in the file, never a value: a
variable's value may be a password (from ``.env`` or the shell), and neither the
value nor the text around it is quoted. Pure: the environment is a mapping given.

``.env`` files are read by ``parse_dotenv``: ``KEY=VALUE`` lines, ``export``
allowed before the key, values in single quotes kept as written, in double quotes
with ``\\n``, ``\\t``, ``\\"`` and ``\\\\`` escapes, unquoted ones cut at `` #`` and
trimmed, as docker compose's dotenv reader takes them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from engine.errors import InvalidArgument

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOTENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
MAX_RESULT = 1024 * 1024
"""A value after interpolation at most: a default nested in a default cannot grow a
string without bound, but many references to one long variable could."""
MAX_NESTING = 16
"""Defaults within defaults: ``${A:-${B:-${C}}}`` is 2 deep; 16 is plenty."""


class _Parser:
    """One string's interpolation: a scan with an index, nested braces by recursion
    bounded by ``MAX_NESTING``."""

    def __init__(self, text: str, env: Mapping[str, str], where: str) -> None:
        self.text, self.env, self.where, self.i = text, env, where, 0

    def run(self) -> str:
        return self._until(None, 0)  # a '}' at the top level is text

    def _bad(self, why: str) -> InvalidArgument:
        return InvalidArgument(f"{self.where}: invalid interpolation: {why}")

    def _until(self, stop: str | None, depth: int) -> str:
        """Text up to ``stop`` (a closing brace of a nested default) or the end."""
        parts: list[str] = []
        size = 0
        text = self.text
        while self.i < len(text):
            c = text[self.i]
            if stop is not None and c == stop:
                return "".join(parts)
            if c != "$":
                j = self.i + 1
                while j < len(text) and text[j] != "$" and (stop is None or text[j] != stop):
                    j += 1
                piece = text[self.i:j]
                self.i = j
            else:
                piece = self._dollar(depth)
            parts.append(piece)
            size += len(piece)
            if size > MAX_RESULT:
                raise InvalidArgument(f"{self.where}: longer than {MAX_RESULT} characters "
                                      "once interpolated")
        if stop is not None:
            raise self._bad("a '${' is not closed by '}'")
        return "".join(parts)

    def _dollar(self, depth: int) -> str:
        text = self.text
        self.i += 1  # the '$'
        if self.i >= len(text):
            return "$"  # a '$' at the end is itself, as docker compose keeps it
        c = text[self.i]
        if c == "$":
            self.i += 1
            return "$"
        if c != "{":
            m = _NAME.match(text, self.i)
            if not m:
                return "$"  # '$' before a non-name ('$1', '$ ') is itself
            self.i = m.end()
            return self.env.get(m.group(), "")
        self.i += 1  # the '{'
        m = _NAME.match(text, self.i)
        if not m:
            raise self._bad("'${' must be followed by a variable name")
        name = m.group()
        self.i = m.end()
        if self.i >= len(text):
            raise self._bad(f"'${{{name}' is not closed by '}}'")
        if text[self.i] == "}":
            self.i += 1
            return self.env.get(name, "")
        for op in (":-", ":?", ":+", "-", "?", "+"):
            if text.startswith(op, self.i):
                break
        else:
            raise self._bad(f"unexpected character after '${{{name}': use ${{{name}}}, "
                            f"${{{name}:-default}}, ${{{name}:?message}} or ${{{name}:+alt}}")
        self.i += len(op)
        if depth >= MAX_NESTING:
            raise self._bad(f"defaults nested more than {MAX_NESTING} deep")
        inner = self._until("}", depth + 1)
        self.i += 1  # the '}'
        value = self.env.get(name)
        unset_or_empty = not value
        missing = unset_or_empty if op.startswith(":") else value is None
        if op.endswith("-"):
            return inner if missing else str(value)
        if op.endswith("+"):
            return "" if missing else inner
        if missing:  # '?': the author's message (their text, not a value) is kept
            state = "unset or empty" if op.startswith(":") else "unset"
            message = f": {inner}" if inner else ""
            raise InvalidArgument(f"{self.where}: required variable {name} is {state}"
                                  f"{message[:200]}")
        return str(value)


def interpolate_text(text: str, env: Mapping[str, str], where: str) -> str:
    """One value of the file, interpolated."""
    if "$" not in text:
        return text
    return _Parser(text, env, where).run()


def interpolate(data: Any, env: Mapping[str, str], where: str = "") -> Any:
    """The file's data with every string value interpolated; keys as they are. The
    walk keeps its own stack (a file is at most ``source.MAX_DEPTH`` deep anyway)."""
    if isinstance(data, str):
        return interpolate_text(data, env, where or "value")
    if isinstance(data, dict):
        return {k: interpolate(v, env, f"{where}.{k}" if where else str(k))
                for k, v in data.items()}
    if isinstance(data, list):
        return [interpolate(v, env, f"{where}[{n}]") for n, v in enumerate(data)]
    return data


def parse_dotenv(text: str, name: str) -> dict[str, str]:
    """A ``.env`` file's variables (see the module's docstring). A malformed line is
    refused by its number alone: the line may hold a secret."""
    out: dict[str, str] = {}
    lines = text.splitlines()
    n = 0
    while n < len(lines):
        raw = lines[n]
        n += 1
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export ") or line.startswith("export\t"):
            line = line[7:].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not _DOTENV_KEY.fullmatch(key):
            raise InvalidArgument(f"invalid line {n} in env file {name}: use KEY=VALUE")
        if not sep:  # a bare KEY: no value in this file
            continue
        value = value.lstrip()
        if value[:1] in ("'", '"'):
            quote = value[0]
            body = value[1:]
            while quote not in _unescaped(body, quote) and n < len(lines):
                body += "\n" + lines[n]  # a quoted value may span lines
                n += 1
            end = _closing(body, quote)
            if end < 0:
                raise InvalidArgument(f"invalid line {n} in env file {name}: a quote is "
                                      "not closed")
            body = body[:end]
            if quote == '"':
                body = re.sub(r'\\([nt"\\$])', lambda m: {"n": "\n", "t": "\t"}.get(
                    m.group(1), m.group(1)), body)
            out[key] = body
        else:
            cut = re.search(r"\s#", value)
            out[key] = (value[:cut.start()] if cut else value).strip()
    return out


def _unescaped(body: str, quote: str) -> str:
    """``body`` with escaped characters dropped (to find a closing double quote)."""
    return re.sub(r"\\.", "", body) if quote == '"' else body


def _closing(body: str, quote: str) -> int:
    i = 0
    while i < len(body):
        if quote == '"' and body[i] == "\\":
            i += 2
            continue
        if body[i] == quote:
            return i
        i += 1
    return -1
