"""docs/events.md against the event catalogue (``engine.events.EVENT_TYPES``): every
event type has a section, every field of its payload is in a table of that section,
and the page documents no type and no field the engine does not write.

A section may name several types (``### `stack.applied`, `stack.removed```) with one
table for all of them; its fields must then each belong to one of those types.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from engine.events import EVENT_TYPES

DOC = Path(__file__).resolve().parents[1] / "docs" / "events.md"
_TYPE = re.compile(r"`([a-z_]+\.[a-z_]+)`")
_FIELD = re.compile(r"^\| `([a-z0-9_]+)` \|", re.M)


def sections(text: str) -> list[tuple[tuple[str, ...], set[str]]]:
    """(the event types a heading names, the fields its tables list), for each heading
    after '## Event types' down to the next '## ' heading."""
    start = text.index("\n## Event types")
    end = text.find("\n## ", start + 1)
    parts = re.split(r"^(#{3,} .*)$", text[start:end if end != -1 else None], flags=re.M)
    return [(tuple(_TYPE.findall(head)), set(_FIELD.findall(body)))
            for head, body in zip(parts[1::2], parts[2::2], strict=True)]


def payload_fields(event_type: str) -> set[str]:
    """The keys of the event's ``data``: its dataclass fields (every ``to_data`` keeps
    their names)."""
    return {f.name for f in dataclasses.fields(EVENT_TYPES[event_type])}  # type: ignore[arg-type]


def problems(text: str) -> list[str]:
    found = sections(text)
    documented: dict[str, set[str]] = {}
    wrong = []
    for types, fields in found:
        for event_type in types:
            if event_type not in EVENT_TYPES:
                wrong.append(f"{event_type}: documented, but the engine has no such event")
            documented.setdefault(event_type, set()).update(fields)
        known = set().union(*(payload_fields(t) for t in types if t in EVENT_TYPES))
        if types and fields - known:
            wrong.append(f"{', '.join(types)}: the table lists {sorted(fields - known)}, "
                         "which no event of the section carries")
    for event_type in sorted(EVENT_TYPES):
        if event_type not in documented:
            wrong.append(f"{event_type}: no section")
        elif missing := payload_fields(event_type) - documented[event_type]:
            wrong.append(f"{event_type}: {sorted(missing)} not in its section's table")
    return wrong


def test_every_event_and_field_is_documented_and_nothing_else() -> None:
    assert problems(DOC.read_text()) == []


def test_the_check_sees_a_missing_type_a_missing_field_and_a_stale_one() -> None:
    text = DOC.read_text()
    assert sections(text)  # the headings were found at all
    dropped = text.replace("| `conmon_pid` | int | the conmon supervising it |\n", "")
    assert problems(dropped) == ["container.pid_received: ['conmon_pid'] not in its "
                                 "section's table"]
    renamed = text.replace("### `container.renamed`", "### `container.renamed_ever`")
    assert "container.renamed: no section" in problems(renamed)
    assert "container.renamed_ever: documented, but the engine has no such event" in problems(
        renamed)
    stale = text.replace("| `pid` | int | the container's init process (host pid) |",
                         "| `pid` | int | the container's init process (host pid) |\n"
                         "| `pgid` | int | gone |")
    assert problems(stale) == ["container.pid_received: the table lists ['pgid'], which no "
                               "event of the section carries"]
