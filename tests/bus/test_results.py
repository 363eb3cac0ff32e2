"""Query result shapes, pure: what workers build is what the client reads back."""

from __future__ import annotations

import pytest

from bus.protocol import EventMessage, now_iso
from bus.results import container_of, events_result, parse_events_result
from engine.errors import ProtocolError


def event(position: int, stream: str = "container-web", data: dict[str, object] | None = None,
          ) -> EventMessage:
    return EventMessage(position, stream, position, "container.created",
                        {"container_id": "web"} if data is None else data,
                        now_iso(), None, None, "root", None)


def test_events_result_round_trip() -> None:
    events = [event(i) for i in (1, 2)]
    parsed, head = parse_events_result(events_result(events, 7))
    assert parsed == events and head == 7


def test_container_of_prefers_the_data_then_the_stream() -> None:
    assert container_of(event(1)) == "web"
    assert container_of(event(1, "container-db", {})) == "db"
    assert container_of(event(1, "db", {})) == "db"


@pytest.mark.parametrize(("result", "words"), [
    ({"events": [{"position": 1}], "head": 1}, "missing fields"),
    ({"events": [1], "head": 1}, "not a map"),
    ({"events": {}, "head": 1}, "events list"),
    ({"events": [], "head": "1"}, "integer head"),
])
def test_a_malformed_result_is_refused_with_one_sentence(result: dict[str, object],
                                                         words: str) -> None:
    with pytest.raises(ProtocolError, match=words):
        parse_events_result(result)
