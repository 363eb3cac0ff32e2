"""The wire protocol, pure: round trips, and every defect refused as ProtocolError."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus.protocol import (
    MAX_FRAME_SIZE,
    NOT_NOW_CODES,
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
    now_iso,
    remembered,
    salvage_command_id,
)
from engine.command_types import COMMAND_TYPES
from engine.errors import InvalidArgument, ProtocolError
from engine.ids import new_uuid
from tests.budget import examples

ID = "0b6c8d6e-5f0c-4a1e-9d1b-3c0b8f6f2a11"


def command(**changes: Any) -> Command:
    fields: dict[str, Any] = {"id": ID, "type": "container.start", "container": "web",
                              "node": "n1", "args": {}, "actor": "root@host",
                              "correlation_id": ID, "sent_at": now_iso()}
    fields.update(changes)
    return Command(**fields)


def raw(**changes: Any) -> bytes:
    body = msgpack.unpackb(encode(command()))
    body.update(changes)
    for key in [k for k, v in changes.items() if v is _DROP]:
        del body[key]
    return bytes(msgpack.packb(body))


_DROP = object()

primitives = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(st.characters(blacklist_categories=["Cs"]), max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text("abcxyz_", max_size=8), inner, max_size=4),
    max_leaves=12,
)
names = st.from_regex(r"\A[a-zA-Z0-9][a-zA-Z0-9_.-]{0,40}\Z")
uuids = st.uuids().map(str)


@given(
    id=uuids, type=st.sampled_from(sorted(COMMAND_TYPES)), container=names, node=st.none() | names,
    args=st.dictionaries(st.text(max_size=10), primitives, max_size=5),
    actor=st.text(st.characters(min_codepoint=32, blacklist_characters="\x7f",
                                blacklist_categories=["Cs"]), min_size=1, max_size=50),
)
@settings(max_examples=examples(60))
def test_command_round_trip(id: str, type: str, container: str, node: str | None,
                            args: dict[str, Any], actor: str) -> None:
    msg = Command(id, type, container, node, args, actor, id, now_iso())
    assert decode(encode(msg)) == msg


@given(position=st.integers(1, 2**62), version=st.integers(1, 2**31),
       type=st.from_regex(r"\A[a-z][a-z0-9_.]{0,30}\Z"),
       data=st.dictionaries(st.text(max_size=8), primitives),
       command_id=st.none() | uuids)
@settings(max_examples=examples(60))
def test_event_round_trip(position: int, version: int, type: str, data: dict[str, Any],
                          command_id: str | None) -> None:
    msg = EventMessage(position, "container-web", version, type, data, now_iso(), command_id,
                       command_id, "root", "n1")
    assert decode(encode(msg)) == msg


@pytest.mark.parametrize("msg", [
    Reply(ID, True, positions=(1, 2, 3), result={"id": "x", "nested": {"a": [1, b"b", None]}}),
    error_reply(ID, "not_found", "no such container"),
    error_reply("", "protocol_error", "frame is not msgpack"),
    Ready("node-1", 8),
    Heartbeat("n1"),
    Disconnect(),
])
def test_other_messages_round_trip(msg: Any) -> None:
    assert decode(encode(msg)) == msg


@given(st.binary(max_size=300))
def test_garbage_bytes_raise_protocol_error_only(frame: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode(frame)


@settings(max_examples=examples(150))
@given(st.dictionaries(st.sampled_from(["v", "kind", "id", "type", "container", "node", "args",
                                        "actor", "correlation_id", "sent_at", "command_id", "ok",
                                        "positions", "result", "error_code", "message"]),
                       primitives | st.sampled_from(["command", "reply", 1, ID, "query.ps"])))
def test_random_maps_are_decoded_or_refused(body: dict[str, Any]) -> None:
    frame = msgpack.packb(body)
    with contextlib.suppress(ProtocolError):
        decode(frame)


@pytest.mark.parametrize(("frame", "words"), [
    (raw(v=2), "protocol version"),
    (raw(v=_DROP), "protocol version"),
    (raw(kind="shout"), "message kind"),
    (raw(id="not-a-uuid"), "command id"),
    (raw(id=ID.upper()), "command id"),
    (raw(type="container.explode"), "unknown command type"),
    (raw(container="../etc"), "container reference"),
    (raw(container="a" * 65), "container reference"),
    (raw(container=None), "needs a container"),
    (raw(node="bad node"), "node name"),
    (raw(actor=""), "actor"),
    (raw(actor="x" * 257), "actor"),
    (raw(actor="a\nb"), "control characters"),
    (raw(args=[1, 2]), "args"),
    (raw(args={1: 2}), "not a valid msgpack"),  # strict_map_key refuses int keys
    (raw(args={"t": msgpack.Timestamp(1)}), "not a msgpack primitive"),
    (raw(args={"t": msgpack.ExtType(5, b"x")}), "extension type"),
    (raw(sent_at="yesterday"), "sent_at"),
    (raw(extra=1), "unknown fields"),
    (raw(actor=_DROP), "missing fields"),
    (b"\x93\x01\x02\x03", "must be a msgpack map"),
    (b"\xc1", "not a valid msgpack"),
    (bytes(MAX_FRAME_SIZE + 1), "exceeds"),
])
def test_defects_are_refused_with_one_sentence(frame: bytes, words: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode(frame)
    assert words in str(info.value)
    assert isinstance(info.value, InvalidArgument) and info.value.code == "protocol_error"


def test_reply_rules() -> None:
    with pytest.raises(ProtocolError, match="error code"):
        Reply(ID, False)
    with pytest.raises(ProtocolError, match="must not carry"):
        Reply(ID, True, error_code="not_found")
    with pytest.raises(ProtocolError, match="position"):
        Reply(ID, True, positions=(True,))
    with pytest.raises(ProtocolError, match="position"):
        Reply(ID, True, positions=(0,))
    with pytest.raises(ProtocolError, match="UUID"):
        Reply("", True)


def test_encode_refuses_oversized_frames() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        encode(command(args={"blob": b"x" * MAX_FRAME_SIZE}))


def test_a_64_hex_id_is_a_valid_container() -> None:
    assert command(container="ab" * 32).container == "ab" * 32


def test_salvage_reads_the_id_of_an_invalid_command() -> None:
    assert salvage_command_id(raw(type="container.explode")) == ID
    assert salvage_command_id(b"\xc1garbage") == ""


def test_version_constant_is_on_the_wire() -> None:
    assert msgpack.unpackb(encode(Heartbeat("n1")))["v"] == PROTOCOL_VERSION


def test_command_ids_from_uuid4_are_valid() -> None:
    assert command(id=str(uuid.uuid4())).id


def test_new_uuid_is_a_version_4_uuid_the_bus_accepts() -> None:
    ids = {new_uuid() for _ in range(200)}
    assert len(ids) == 200
    for value in ids:
        assert str(uuid.UUID(value)) == value and uuid.UUID(value).version == 4
        assert command(id=value, correlation_id=value).id == value


def test_only_answers_that_say_what_happened_are_kept_for_resends() -> None:
    CID = "0b7c3f0e-2a1d-4c55-9a3e-6f1f0c9d2b11"  # noqa: N806
    assert remembered(Reply(CID, True, result={"x": 1}))
    assert remembered(error_reply(CID, "not_found", "no such container web"))
    assert remembered(error_reply(CID, "internal", "a bug"))
    for code in ("unavailable", "handed_back", "passive", "store_unavailable", "rate_limited"):
        assert code in NOT_NOW_CODES
        assert not remembered(error_reply(CID, code, "not now"))
