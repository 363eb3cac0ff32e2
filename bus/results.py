"""What the result map of a query reply holds, and how events are read back from it.

Framing (bus.protocol) checks that a reply's result is a map of msgpack
primitives; what the map means for each query is agreed here, between the
workers that build it and the client that reads it:

* ``query.resolve`` -> ``{"id": str, "node": str, "name": str | None}``;
* ``query.ps`` -> ``{"containers": [map, ...]}``;
* ``query.events`` (args ``after``: exclusive position, ``limit`` >= 1) and
  ``query.history`` -> ``{"events": [event map, ...], "head": last committed
  position}``, built with :func:`events_result` and read with
  :func:`parse_events_result`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from bus.protocol import EventMessage, JSONish, event_fields, event_from_fields
from engine.errors import ProtocolError

CONTAINER_STREAM_PREFIX: Final = "container-"


def container_of(event: EventMessage) -> str:
    """The container an event is about: ``data["container_id"]`` if present, else its
    stream (a container's stream is named by its id, optionally ``container-<id>``)."""
    value = event.data.get("container_id")
    if isinstance(value, str):
        return value
    if event.stream.startswith(CONTAINER_STREAM_PREFIX):
        return event.stream[len(CONTAINER_STREAM_PREFIX) :]
    return event.stream


def events_result(events: Sequence[EventMessage], head: int) -> dict[str, JSONish]:
    """The result map of a ``query.events`` reply (used by the worker's handler)."""
    return {"events": [event_fields(event) for event in events], "head": head}


def parse_events_result(result: Mapping[str, JSONish]) -> tuple[list[EventMessage], int]:
    """Read a ``query.events`` result back into typed events and the head position."""
    raw = result.get("events")
    head = result.get("head", 0)
    if not isinstance(raw, list) or type(head) is not int:
        raise ProtocolError("query.events result must hold an events list and an integer head.")
    events = []
    for item in raw:
        if not isinstance(item, dict):
            raise ProtocolError("query.events result holds an event that is not a map.")
        events.append(event_from_fields(item))
    return events, head
