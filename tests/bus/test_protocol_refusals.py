"""Each wire defect refused with its own sentence: the sentence is what the sender sees,
so it names the field, the rule and (shortened) the value that broke it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest

from bus.protocol import (
    MAX_ACTOR_LENGTH,
    MAX_CAPACITY,
    MAX_FRAME_SIZE,
    MAX_MESSAGE_LENGTH,
    MAX_NESTING,
    MAX_STREAM_LENGTH,
    MAX_WAIT,
    PROTOCOL_VERSION,
    Command,
    Disconnect,
    EventMessage,
    Heartbeat,
    Ready,
    Reply,
    decode,
    encode,
    error_reply,
    event_fields,
    event_from_fields,
    now_iso,
    salvage_command_id,
)
from engine.errors import ProtocolError

ID = "0b6c8d6e-5f0c-4a1e-9d1b-3c0b8f6f2a11"
OTHER = "1c7d9e7f-6a1d-4b2f-8e2c-4d1c9a7a3b22"
WHEN = "2024-01-02T03:04:05+00:00"
LONG = "x" * 100
LONG_SHOWN = repr(LONG)[:77] + "..."


def command(**changes: Any) -> Command:
    fields: dict[str, Any] = {"id": ID, "type": "container.start", "container": "web",
                              "node": "n1", "args": {}, "actor": "root@host",
                              "correlation_id": OTHER, "sent_at": WHEN}
    fields.update(changes)
    return Command(**fields)


def reply(**changes: Any) -> Reply:
    fields: dict[str, Any] = {"command_id": ID, "ok": True}
    fields.update(changes)
    return Reply(**fields)


def event(**changes: Any) -> EventMessage:
    fields: dict[str, Any] = {"position": 1, "stream": "c1", "stream_version": 1,
                              "type": "container.started", "data": {}, "recorded_at": WHEN,
                              "command_id": ID, "correlation_id": OTHER, "actor": "root",
                              "node": "n1"}
    fields.update(changes)
    return EventMessage(**fields)


def frame(**body: Any) -> bytes:
    return bytes(msgpack.packb(body, use_bin_type=True))


def command_frame(**changes: Any) -> bytes:
    body = msgpack.unpackb(encode(command()))
    body.update(changes)
    return bytes(msgpack.packb(body, use_bin_type=True))


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


CASES: list[tuple[str, Callable[[], object], str]] = [
    # commands
    ("id", lambda: command(id="nope"),
     "command id must be a lowercase UUID string, got 'nope'."),
    ("id upper", lambda: command(id=ID.upper()),
     f"command id must be a lowercase UUID string, got {ID.upper()!r}."),
    ("type", lambda: command(type="container.fly"), "unknown command type 'container.fly'."),
    ("type not str", lambda: command(type=5), "unknown command type 5."),
    ("container", lambda: command(container="-x"),
     "invalid container reference '-x': use 1-64 characters from [a-zA-Z0-9_.-] starting "
     "with a letter or digit, or a 64-hex id."),
    ("long container", lambda: command(container=LONG),
     f"invalid container reference {LONG_SHOWN}: use 1-64 characters from [a-zA-Z0-9_.-] "
     "starting with a letter or digit, or a 64-hex id."),
    ("no container", lambda: command(container=None), "container.start needs a container."),
    ("node", lambda: command(node="-n"),
     "invalid node name '-n': use 1-63 characters from [a-zA-Z0-9_.-] starting with a "
     "letter or digit."),
    ("args", lambda: command(args=[]), "command args must be a map with string keys."),
    ("args keys", lambda: command(args={1: 2}), "command args must be a map with string keys."),
    ("args values", lambda: command(args={"a": {1, 2}}),
     "command args holds a value of type set, not a msgpack primitive."),
    ("args nested keys", lambda: command(args={"a": {"b": {3: 1}}}),
     "command args must be a map with string keys."),
    ("args nested value", lambda: command(args={"a": [[object()]]}),
     "command args holds a value of type object, not a msgpack primitive."),
    ("args deep list", lambda: command(args={"a": nested(MAX_NESTING)}),
     f"command args is nested deeper than {MAX_NESTING} levels."),
    ("args deep map", lambda: command(args={"a": {"b": nested(MAX_NESTING - 1)}}),
     f"command args is nested deeper than {MAX_NESTING} levels."),
    ("actor empty", lambda: command(actor=""),
     f"actor must be a non-empty string of at most {MAX_ACTOR_LENGTH} characters."),
    ("actor long", lambda: command(actor="a" * (MAX_ACTOR_LENGTH + 1)),
     f"actor must be a non-empty string of at most {MAX_ACTOR_LENGTH} characters."),
    ("actor type", lambda: command(actor=None),
     f"actor must be a non-empty string of at most {MAX_ACTOR_LENGTH} characters."),
    ("actor control", lambda: command(actor="a\nb"), "actor must not contain control characters."),
    ("actor del", lambda: command(actor="a\x7f"), "actor must not contain control characters."),
    ("correlation", lambda: command(correlation_id="c"),
     "correlation id must be a lowercase UUID string, got 'c'."),
    ("sent_at", lambda: command(sent_at="yesterday"),
     "sent_at must be an ISO 8601 time string, got 'yesterday'."),
    ("sent_at type", lambda: command(sent_at=5),
     "sent_at must be an ISO 8601 time string, got 5."),
    ("sent_at long", lambda: command(sent_at=WHEN + " " * 40),
     f"sent_at must be an ISO 8601 time string, got {WHEN + ' ' * 40!r}."),
    # replies
    ("ok", lambda: reply(ok=1), "reply ok must be a boolean."),
    ("reply id", lambda: reply(command_id="x"),
     "reply command id must be a lowercase UUID string, got 'x'."),
    ("reply empty id ok", lambda: reply(command_id=""),
     "reply command id must be a lowercase UUID string, got ''."),
    ("ok with code", lambda: reply(error_code="not_found"),
     "a successful reply must not carry an error code."),
    ("error without code", lambda: reply(ok=False),
     "an error reply must carry an error code like 'not_found'."),
    ("error bad code", lambda: reply(ok=False, error_code="Not Found"),
     "an error reply must carry an error code like 'not_found'."),
    ("message type", lambda: reply(message=5),
     f"reply message must be a string of at most {MAX_MESSAGE_LENGTH} characters."),
    ("message long", lambda: reply(message="m" * (MAX_MESSAGE_LENGTH + 1)),
     f"reply message must be a string of at most {MAX_MESSAGE_LENGTH} characters."),
    ("positions", lambda: reply(positions=[1]), "reply positions must be a list of integers."),
    ("position", lambda: reply(positions=(0,)),
     "an event position must be an integer of at least 1."),
    ("position bool", lambda: reply(positions=(True,)),
     "an event position must be an integer of at least 1."),
    ("result", lambda: reply(result=[]), "reply result must be a map with string keys."),
    # events
    ("event position", lambda: event(position=0),
     "event position must be an integer of at least 1."),
    ("event stream", lambda: event(stream="s" * (MAX_STREAM_LENGTH + 1)),
     f"event stream must be a non-empty string of at most {MAX_STREAM_LENGTH} characters."),
    ("event version", lambda: event(stream_version=0),
     "event stream version must be an integer of at least 1."),
    ("event type", lambda: event(type="Started"),
     "invalid event type 'Started': use [a-z][a-z0-9_.]*."),
    ("event type not str", lambda: event(type=None),
     "invalid event type None: use [a-z][a-z0-9_.]*."),
    ("event data", lambda: event(data=None), "event data must be a map with string keys."),
    ("recorded_at", lambda: event(recorded_at="then"),
     "recorded_at must be an ISO 8601 time string, got 'then'."),
    ("event command", lambda: event(command_id="c"),
     "event command id must be a lowercase UUID string, got 'c'."),
    ("event correlation", lambda: event(correlation_id="c"),
     "event correlation id must be a lowercase UUID string, got 'c'."),
    ("event actor", lambda: event(actor=""),
     f"event actor must be a non-empty string of at most {MAX_ACTOR_LENGTH} characters."),
    ("event node", lambda: event(node="-n"),
     "invalid node name '-n': use 1-63 characters from [a-zA-Z0-9_.-] starting with a "
     "letter or digit."),
    # workers
    ("ready node", lambda: Ready(None),  # type: ignore[arg-type]
     "invalid node name None: use 1-63 characters from [a-zA-Z0-9_.-] starting with a "
     "letter or digit."),
    ("ready capacity", lambda: Ready("n1", 0),
     f"worker capacity must be an integer of at least 1 and at most {MAX_CAPACITY}."),
    ("ready capacity high", lambda: Ready("n1", MAX_CAPACITY + 1),
     f"worker capacity must be an integer of at least 1 and at most {MAX_CAPACITY}."),
    ("heartbeat node", lambda: Heartbeat(None),  # type: ignore[arg-type]
     "invalid node name None: use 1-63 characters from [a-zA-Z0-9_.-] starting with a "
     "letter or digit."),
    # how long the publisher waits
    ("wait zero", lambda: command(wait=0),
     f"command wait must be a number of seconds in (0, {MAX_WAIT:g}], got 0."),
    ("wait negative", lambda: command(wait=-1.5),
     f"command wait must be a number of seconds in (0, {MAX_WAIT:g}], got -1.5."),
    ("wait NaN", lambda: command(wait=float("nan")),
     f"command wait must be a number of seconds in (0, {MAX_WAIT:g}], got nan."),
    ("wait too long", lambda: command(wait=MAX_WAIT + 0.5),
     f"command wait must be a number of seconds in (0, {MAX_WAIT:g}], got {MAX_WAIT + 0.5!r}."),
    ("wait bool", lambda: command(wait=True),
     f"command wait must be a number of seconds in (0, {MAX_WAIT:g}], got True."),
    ("wait text", lambda: command(wait="5"),
     f"command wait must be a number of seconds in (0, {MAX_WAIT:g}], got '5'."),
    # frames
    ("not bytes", lambda: decode("x"), "a frame must be bytes, got str."),  # type: ignore[arg-type]
    ("too big", lambda: decode(b"\x00" * (MAX_FRAME_SIZE + 1)),
     f"frame of {MAX_FRAME_SIZE + 1} bytes exceeds the {MAX_FRAME_SIZE}-byte limit."),
    ("garbage", lambda: decode(b"\xc1"), "frame is not a valid msgpack document."),
    ("ext", lambda: decode(msgpack.packb(msgpack.ExtType(5, b"x"))),
     "msgpack extension type 5 is not allowed on the bus."),
    ("not a map", lambda: decode(msgpack.packb([1])), "frame must be a msgpack map."),
    ("version", lambda: decode(frame(v=PROTOCOL_VERSION + 1, kind="ready")),
     f"unsupported protocol version {PROTOCOL_VERSION + 1} (expected {PROTOCOL_VERSION})."),
    ("version missing", lambda: decode(frame(kind="ready")),
     f"unsupported protocol version None (expected {PROTOCOL_VERSION})."),
    ("version float", lambda: decode(frame(v=float(PROTOCOL_VERSION), kind="ready")),
     f"unsupported protocol version {float(PROTOCOL_VERSION)} (expected {PROTOCOL_VERSION})."),
    ("kind", lambda: decode(frame(v=PROTOCOL_VERSION, kind="shout")),
     "unknown message kind 'shout'."),
    ("kind type", lambda: decode(frame(v=PROTOCOL_VERSION, kind=3)), "unknown message kind 3."),
    ("extra", lambda: decode(command_frame(zz=1, aa=2)), "command has unknown fields: aa, zz."),
    ("missing", lambda: decode(frame(v=PROTOCOL_VERSION, kind="command", id=ID)),
     "command is missing fields: type, container, node, args, actor, correlation_id, sent_at."),
    ("reply positions", lambda: decode(frame(
        v=PROTOCOL_VERSION, kind="reply", command_id=ID, ok=True, error_code=None,
        message=None, positions=5, result={})), "reply positions must be a list of integers."),
    ("reply id type", lambda: decode(frame(
        v=PROTOCOL_VERSION, kind="reply", command_id=None, ok=True, error_code=None,
        message=None, positions=[], result={})), "reply command id must be a string."),
    ("ready extra", lambda: decode(frame(v=PROTOCOL_VERSION, kind="ready", node="n1",
                                         capacity=1, x=1)), "ready has unknown fields: x."),
    ("heartbeat missing", lambda: decode(frame(v=PROTOCOL_VERSION, kind="heartbeat")),
     "heartbeat is missing fields: node."),
    ("disconnect extra", lambda: decode(frame(v=PROTOCOL_VERSION, kind="disconnect", node="n")),
     "disconnect has unknown fields: node."),
    ("event fields", lambda: event_from_fields({"position": 1}),
     "event is missing fields: stream, stream_version, type, data, recorded_at, command_id, "
     "correlation_id, actor, node."),
    ("encode", lambda: encode(object()),  # type: ignore[arg-type]
     "cannot encode a object."),
]


@pytest.mark.parametrize("build, sentence", [(b, s) for _, b, s in CASES],
                         ids=[name for name, _, _ in CASES])
def test_refused_with_its_sentence(build: Callable[[], object], sentence: str) -> None:
    with pytest.raises(ProtocolError) as err:
        build()
    assert str(err.value) == sentence


def test_a_frame_over_the_limit_is_not_encoded() -> None:
    big = command(args={"a": "x" * MAX_FRAME_SIZE})
    size = len(msgpack.packb({**msgpack.unpackb(encode(command())), "args": big.args},
                             use_bin_type=True))
    with pytest.raises(ProtocolError) as err:
        encode(big)
    assert str(err.value) == (
        f"command frame of {size} bytes exceeds the {MAX_FRAME_SIZE}-byte limit.")
    fits = command(args={"a": "x" * (MAX_FRAME_SIZE - 1000)})
    assert decode(encode(fits)) == fits


def test_the_longest_value_shown_whole() -> None:
    """Values up to 80 characters of repr are shown whole, longer ones cut to 80."""
    whole = "y" * 78  # repr: 80 characters
    with pytest.raises(ProtocolError) as err:
        command(id=whole)
    assert str(err.value) == f"command id must be a lowercase UUID string, got {whole!r}."
    cut = "y" * 79
    with pytest.raises(ProtocolError) as err:
        command(id=cut)
    assert str(err.value) == (
        f"command id must be a lowercase UUID string, got {repr(cut)[:77]}....")


def test_optional_fields_may_be_absent() -> None:
    assert command(node=None).node is None
    assert command(type="container.create", container=None).container is None
    assert event(command_id=None, correlation_id=None, node=None).node is None
    assert reply(message=None, positions=(1, 2)).positions == (1, 2)
    assert Ready("n1", MAX_CAPACITY).capacity == MAX_CAPACITY
    assert command(args={"a": nested(MAX_NESTING - 1)}).args["a"] == nested(MAX_NESTING - 1)
    assert command(actor="a" * MAX_ACTOR_LENGTH).actor == "a" * MAX_ACTOR_LENGTH
    assert command(wait=MAX_WAIT).wait == MAX_WAIT
    assert command(wait=0.001).wait == 0.001
    assert command(wait=7).wait == 7


def test_a_command_without_wait_is_read_as_from_an_older_publisher() -> None:
    body = msgpack.unpackb(encode(command(wait=3.0)))
    assert body["wait"] == 3.0
    del body["wait"]
    old = decode(msgpack.packb(body, use_bin_type=True))
    assert isinstance(old, Command) and old.wait is None
    waits = command(wait=2.5)
    assert decode(encode(waits)) == waits


def test_an_error_reply_to_an_unreadable_command() -> None:
    broken = error_reply("", "protocol_error", "m" * (MAX_MESSAGE_LENGTH + 10))
    assert broken.command_id == "" and broken.ok is False
    assert broken.error_code == "protocol_error"
    assert broken.message == "m" * MAX_MESSAGE_LENGTH
    assert decode(encode(broken)) == broken


def test_round_trips_of_every_kind() -> None:
    for msg in (command(), reply(positions=(3, 4), result={"a": [1, b"b"]}),
                reply(ok=False, error_code="not_found", message="gone"),
                event(data={"x": {"y": None}}), Ready("n1", 3), Heartbeat("n1"), Disconnect()):
        assert decode(encode(msg)) == msg
    assert event_from_fields(event_fields(event())) == event()


def test_salvage_command_id() -> None:
    assert salvage_command_id(command_frame(type="nope")) == ID
    assert salvage_command_id(frame(id="not-a-uuid")) == ""
    assert salvage_command_id(msgpack.packb([ID])) == ""
    assert salvage_command_id(b"\xc1") == ""
    assert salvage_command_id(msgpack.packb({1: 2, "id": ID}, strict_types=False)) == ID


def test_a_defect_the_checks_did_not_foresee_is_still_a_refusal() -> None:
    with pytest.raises(ProtocolError) as err:
        decode(frame(v=PROTOCOL_VERSION, kind="ready", node="n1", capacity=[1]))
    assert str(err.value) == "worker capacity must be an integer of at least 1 and at most 4096."


def test_is_container_command() -> None:
    assert command().is_container_command
    assert not command(type="query.ps", container=None).is_container_command


def test_a_timestamp_of_at_most_64_characters() -> None:
    longest = "2024-01-02T03:04:05." + "1" * 38 + "+00:00"
    assert len(longest) == 64
    assert command(sent_at=longest).sent_at == longest
    too_long = "2024-01-02T03:04:05." + "1" * 39 + "+00:00"
    with pytest.raises(ProtocolError) as err:
        command(sent_at=too_long)
    assert str(err.value) == f"sent_at must be an ISO 8601 time string, got {too_long!r}."


def test_now_iso_is_utc_with_its_offset() -> None:
    when = datetime.fromisoformat(now_iso())
    assert when.utcoffset() == timedelta(0)


def test_a_value_msgpack_cannot_hold_is_refused_at_encoding() -> None:
    with pytest.raises(ProtocolError) as err:
        encode(command(args={"a": 2**65}))
    assert str(err.value) == "cannot encode command: Integer value out of range."


def _args_for_frame_of(size: int) -> dict[str, Any]:
    """Args that make the command frame exactly ``size`` bytes (str32 header: the
    string's length does not change the header's)."""
    base = len(encode(command(args={"a": "x" * 70_000})))
    return {"a": "x" * (70_000 + size - base)}


def test_a_frame_of_exactly_the_limit_is_encoded_and_decoded() -> None:
    exact = command(args=_args_for_frame_of(MAX_FRAME_SIZE))
    data = encode(exact)
    assert len(data) == MAX_FRAME_SIZE
    assert decode(data) == exact
    with pytest.raises(ProtocolError) as err:
        encode(command(args=_args_for_frame_of(MAX_FRAME_SIZE + 1)))
    assert str(err.value) == (f"command frame of {MAX_FRAME_SIZE + 1} bytes exceeds the "
                              f"{MAX_FRAME_SIZE}-byte limit.")


def test_a_reply_with_an_unknown_field_names_its_kind() -> None:
    with pytest.raises(ProtocolError) as err:
        decode(frame(v=PROTOCOL_VERSION, kind="reply", command_id=ID, ok=True,
                     error_code=None, message=None, positions=[], result={}, extra=1))
    assert str(err.value) == "reply has unknown fields: extra."

