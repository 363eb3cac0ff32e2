"""The wire protocol of the berth bus: the ONE place for framing and its constants.

Every frame on every bus socket is one msgpack map carrying the protocol version
(``v``) and a message kind (``kind``). Nothing past this module sees raw maps:
``decode`` turns a frame into a typed, frozen message or raises
:class:`engine.errors.ProtocolError` with one sentence saying what is wrong, and
the dataclasses validate themselves on construction, so an invalid message can be
neither received nor built.

Socket envelopes (kept here so the broker, the worker link and the client agree):

* client DEALER -> broker ROUTER (frontend): ``[payload]`` (a REQ-style
  ``[b"", payload]`` is accepted too and answered with the same envelope);
* broker ROUTER (backend) <-> worker DEALER: ``[payload]``;
* broker XPUB -> subscribers: ``[event type as bytes, payload]``.

What a reply's result holds for each query is not framing: see bus.results.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, TypeAlias

import msgpack  # type: ignore[import-untyped]

from engine.command_types import COMMAND_TYPES, CONTAINER_COMMANDS, CREATE, RUN
from engine.errors import HandedBack, Passive, ProtocolError, RateLimited, StoreError, Unavailable
from engine.ids import is_container_ref, is_node_name, is_uuid

PROTOCOL_VERSION: Final = 1
MAX_FRAME_SIZE: Final = 1024 * 1024
"""Largest frame accepted on any bus socket (bytes); bigger frames are refused."""
MAX_MESSAGE_SIZE: Final = 4 * MAX_FRAME_SIZE
"""Largest whole message (all its frames together, bytes) a bus socket reads; a
frame a bit over MAX_FRAME_SIZE still gets a clear refusal, anything bigger is
dropped unread. zmq's own MAXMSGSIZE caps single frames only."""
MAX_MESSAGE_FRAMES: Final = 4
"""Most frames one message may have (routing identity, REQ delimiter, payload)."""

MAX_ACTOR_LENGTH: Final = 256
MAX_WAIT: Final = 3600.0
"""Longest a publisher may ask the broker to hold its command for a worker (an hour)."""
MAX_STREAM_LENGTH: Final = 256
MAX_MESSAGE_LENGTH: Final = 4096
MAX_NESTING: Final = 32
MAX_CAPACITY: Final = 4096

KIND_COMMAND: Final = "command"
KIND_REPLY: Final = "reply"
KIND_EVENT: Final = "event"
KIND_READY: Final = "ready"
KIND_HEARTBEAT: Final = "heartbeat"
KIND_DISCONNECT: Final = "disconnect"
KINDS: Final = frozenset(
    {KIND_COMMAND, KIND_REPLY, KIND_EVENT, KIND_READY, KIND_HEARTBEAT, KIND_DISCONNECT}
)


# Id, container and node rules are engine.ids's; the error type and wording are the bus's.
_CODE_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_EVENT_TYPE_RE = re.compile(r"^[a-z][a-z0-9_.]{0,127}$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

JSONish: TypeAlias = Any
"""A msgpack primitive: None, bool, int, float, str, bytes, list or str-keyed map."""


# --------------------------------------------------------------------------- checks


def _fail(sentence: str) -> ProtocolError:
    return ProtocolError(sentence)


def _uuid(value: object, what: str) -> str:
    if not is_uuid(value):
        raise _fail(f"{what} must be a lowercase UUID string, got {_show(value)}.")
    return value


def _container(value: object) -> str | None:
    if value is None:
        return None
    if not is_container_ref(value):
        raise _fail(
            f"invalid container reference {_show(value)}: use 1-64 characters from "
            "[a-zA-Z0-9_.-] starting with a letter or digit, or a 64-hex id."
        )
    return value


def _node(value: object, *, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not is_node_name(value):
        raise _fail(
            f"invalid node name {_show(value)}: use 1-63 characters from [a-zA-Z0-9_.-] "
            "starting with a letter or digit."
        )
    return value


def _text(value: object, what: str, limit: int, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or len(value) > limit:
        raise _fail(f"{what} must be a non-empty string of at most {limit} characters.")
    if _CONTROL_RE.search(value):
        raise _fail(f"{what} must not contain control characters.")
    return value


def _wait(value: object) -> float | None:
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not 0 < value <= MAX_WAIT):  # NaN fails both comparisons
        raise _fail(f"command wait must be a number of seconds in (0, {MAX_WAIT:g}], "
                    f"got {_show(value)}.")
    return float(value)


def _timestamp(value: object, what: str) -> str:
    if not isinstance(value, str) or len(value) > 64:
        raise _fail(f"{what} must be an ISO 8601 time string, got {_show(value)}.")
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise _fail(f"{what} must be an ISO 8601 time string, got {_show(value)}.") from None
    return value


def _int(value: object, what: str, minimum: int, maximum: int | None = None) -> int:
    if type(value) is not int or value < minimum or (maximum is not None and value > maximum):
        upper = "" if maximum is None else f" and at most {maximum}"
        raise _fail(f"{what} must be an integer of at least {minimum}{upper}.")
    return value


def _primitive(value: object, where: str, depth: int) -> None:
    if depth > MAX_NESTING:
        raise _fail(f"{where} is nested deeper than {MAX_NESTING} levels.")
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return
    if isinstance(value, list):
        for item in value:
            _primitive(item, where, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise _fail(f"{where} must be a map with string keys.")
            _primitive(item, where, depth + 1)
        return
    raise _fail(f"{where} holds a value of type {type(value).__name__}, not a msgpack primitive.")


def _map(value: object, what: str) -> dict[str, JSONish]:
    if not isinstance(value, dict):
        raise _fail(f"{what} must be a map with string keys.")
    _primitive(value, what, 0)
    return value


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def now_iso() -> str:
    """The current UTC time as the ISO 8601 string used on the wire."""
    return datetime.now(UTC).isoformat()


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class Command:
    """A request to do something (``container.*``, ``admin.*``) or to read (``query.*``).

    ``node`` names the host whose worker must run it; the client resolves it for
    existing containers, so the broker keeps no container state.
    """

    id: str
    type: str
    container: str | None
    node: str | None
    args: dict[str, JSONish]
    actor: str
    correlation_id: str
    sent_at: str
    wait: float | None = None
    """How long the publisher waits for the answer, in seconds. A command for a node
    whose worker is away (restarting, upgraded) is held that long for it, as a queue
    would, and only then answered ``unavailable``; None: the broker's own limit."""

    def __post_init__(self) -> None:
        _uuid(self.id, "command id")
        if not isinstance(self.type, str) or self.type not in COMMAND_TYPES:
            raise _fail(f"unknown command type {_show(self.type)}.")
        _container(self.container)
        if (self.container is None and self.type in CONTAINER_COMMANDS
                and self.type not in (CREATE, RUN)):
            raise _fail(f"{self.type} needs a container.")
        _node(self.node)
        _map(self.args, "command args")
        _text(self.actor, "actor", MAX_ACTOR_LENGTH)
        _uuid(self.correlation_id, "correlation id")
        _timestamp(self.sent_at, "sent_at")
        _wait(self.wait)

    @property
    def is_container_command(self) -> bool:
        return self.type in CONTAINER_COMMANDS


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to one command; an error carries a stable code from engine.errors.

    ``command_id`` is empty only in the error reply to a frame so broken that its
    command id could not be read.
    """

    command_id: str
    ok: bool
    error_code: str | None = None
    message: str | None = None
    positions: tuple[int, ...] = ()
    result: dict[str, JSONish] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if type(self.ok) is not bool:
            raise _fail("reply ok must be a boolean.")
        if self.command_id != "" or self.ok:
            _uuid(self.command_id, "reply command id")
        if self.ok:
            if self.error_code is not None:
                raise _fail("a successful reply must not carry an error code.")
        elif not isinstance(self.error_code, str) or not _CODE_RE.match(self.error_code):
            raise _fail("an error reply must carry an error code like 'not_found'.")
        if self.message is not None and (
            not isinstance(self.message, str) or len(self.message) > MAX_MESSAGE_LENGTH
        ):
            raise _fail(
                f"reply message must be a string of at most {MAX_MESSAGE_LENGTH} characters.")
        if not isinstance(self.positions, tuple):
            raise _fail("reply positions must be a list of integers.")
        for position in self.positions:
            _int(position, "an event position", 1)
        _map(self.result, "reply result")


@dataclass(frozen=True, slots=True)
class EventMessage:
    """An event as published on the bus after its commit, with its global position.

    ``command_id``/``correlation_id`` are None for events no command caused (an
    exit seen by the exit monitor, for example).
    """

    position: int
    stream: str
    stream_version: int
    type: str
    data: dict[str, JSONish]
    recorded_at: str
    command_id: str | None
    correlation_id: str | None
    actor: str
    node: str | None

    def __post_init__(self) -> None:
        _int(self.position, "event position", 1)
        _text(self.stream, "event stream", MAX_STREAM_LENGTH)
        _int(self.stream_version, "event stream version", 1)
        if not isinstance(self.type, str) or not _EVENT_TYPE_RE.match(self.type):
            raise _fail(f"invalid event type {_show(self.type)}: use [a-z][a-z0-9_.]*.")
        _map(self.data, "event data")
        _timestamp(self.recorded_at, "recorded_at")
        if self.command_id is not None:
            _uuid(self.command_id, "event command id")
        if self.correlation_id is not None:
            _uuid(self.correlation_id, "event correlation id")
        _text(self.actor, "event actor", MAX_ACTOR_LENGTH)
        _node(self.node)


@dataclass(frozen=True, slots=True)
class Ready:
    """A worker announces itself and how many commands it runs at once."""

    node: str
    capacity: int = 1

    def __post_init__(self) -> None:
        _node(self.node, required=True)
        _int(self.capacity, "worker capacity", 1, MAX_CAPACITY)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Liveness in both directions between the broker and a worker."""

    node: str

    def __post_init__(self) -> None:
        _node(self.node, required=True)


@dataclass(frozen=True, slots=True)
class Disconnect:
    """A worker leaves cleanly (or the broker tells a worker to reconnect)."""


Message: TypeAlias = Command | Reply | EventMessage | Ready | Heartbeat | Disconnect


# --------------------------------------------------------------------------- framing


def event_fields(event: EventMessage) -> dict[str, JSONish]:
    """An event as the map of fields its frame carries (without ``v``/``kind``)."""
    return {
        "position": event.position,
        "stream": event.stream,
        "stream_version": event.stream_version,
        "type": event.type,
        "data": event.data,
        "recorded_at": event.recorded_at,
        "command_id": event.command_id,
        "correlation_id": event.correlation_id,
        "actor": event.actor,
        "node": event.node,
    }


def _fields(msg: Message) -> tuple[str, dict[str, JSONish]]:
    if isinstance(msg, Command):
        return KIND_COMMAND, {
            "id": msg.id,
            "type": msg.type,
            "container": msg.container,
            "node": msg.node,
            "args": msg.args,
            "actor": msg.actor,
            "correlation_id": msg.correlation_id,
            "sent_at": msg.sent_at,
            "wait": msg.wait,
        }
    if isinstance(msg, Reply):
        return KIND_REPLY, {
            "command_id": msg.command_id,
            "ok": msg.ok,
            "error_code": msg.error_code,
            "message": msg.message,
            "positions": list(msg.positions),
            "result": msg.result,
        }
    if isinstance(msg, EventMessage):
        return KIND_EVENT, event_fields(msg)
    if isinstance(msg, Ready):
        return KIND_READY, {"node": msg.node, "capacity": msg.capacity}
    if isinstance(msg, Heartbeat):
        return KIND_HEARTBEAT, {"node": msg.node}
    if isinstance(msg, Disconnect):
        return KIND_DISCONNECT, {}
    raise _fail(f"cannot encode a {type(msg).__name__}.")


def encode(msg: Message) -> bytes:
    """Encode one message as one frame; refuses frames over MAX_FRAME_SIZE."""
    kind, body = _fields(msg)
    body["v"] = PROTOCOL_VERSION
    body["kind"] = kind
    try:
        frame: bytes = msgpack.packb(body, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise _fail(f"cannot encode {kind}: {exc}.") from None
    if len(frame) > MAX_FRAME_SIZE:
        raise _fail(f"{kind} frame of {len(frame)} bytes exceeds the {MAX_FRAME_SIZE}-byte limit.")
    return frame


def _refuse_ext(code: int, data: bytes) -> object:
    raise _fail(f"msgpack extension type {code} is not allowed on the bus.")


def _unpack(frame: object) -> dict[str, JSONish]:
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise _fail(f"a frame must be bytes, got {type(frame).__name__}.")
    if len(frame) > MAX_FRAME_SIZE:
        raise _fail(f"frame of {len(frame)} bytes exceeds the {MAX_FRAME_SIZE}-byte limit.")
    try:
        body = msgpack.unpackb(
            frame, raw=False, strict_map_key=True, ext_hook=_refuse_ext, use_list=True
        )
    except ProtocolError:
        raise
    except Exception:  # noqa: BLE001 - msgpack raises many types on garbage; all mean the same
        raise _fail("frame is not a valid msgpack document.") from None
    if not isinstance(body, dict):
        raise _fail("frame must be a msgpack map.")
    version = body.get("v")
    if version != PROTOCOL_VERSION or type(version) is not int:
        raise _fail(f"unsupported protocol version {_show(version)} (expected {PROTOCOL_VERSION}).")
    kind = body.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise _fail(f"unknown message kind {_show(kind)}.")
    return body


def _take(body: Mapping[str, JSONish], names: Sequence[str], kind: str,
          optional: Sequence[str] = ()) -> dict[str, JSONish]:
    """The named fields of a message; ``optional`` ones may be absent (a publisher
    from before they existed), any other missing or unknown field is refused."""
    extra = set(body) - set(names) - set(optional) - {"v", "kind"}
    if extra:
        raise _fail(f"{kind} has unknown fields: {', '.join(sorted(map(str, extra)))}.")
    missing = [name for name in names if name not in body]
    if missing:
        raise _fail(f"{kind} is missing fields: {', '.join(missing)}.")
    fields = {name: body[name] for name in names}
    fields.update((name, body[name]) for name in optional if name in body)
    return fields


_COMMAND_NAMES: Final = (
    "id", "type", "container", "node", "args", "actor", "correlation_id", "sent_at")
_COMMAND_OPTIONAL: Final = ("wait",)
_REPLY_NAMES: Final = ("command_id", "ok", "error_code", "message", "positions", "result")
_EVENT_NAMES: Final = (
    "position",
    "stream",
    "stream_version",
    "type",
    "data",
    "recorded_at",
    "command_id",
    "correlation_id",
    "actor",
    "node",
)


def event_from_fields(body: Mapping[str, JSONish]) -> EventMessage:
    """The event a map of fields describes (as :func:`event_fields` makes them);
    unknown or missing fields raise ProtocolError."""
    return EventMessage(**_take(body, _EVENT_NAMES, KIND_EVENT))


def decode(frame: bytes) -> Message:
    """Decode and validate one frame; any defect raises ProtocolError, nothing else."""
    body = _unpack(frame)
    kind = body["kind"]
    try:
        if kind == KIND_COMMAND:
            return Command(**_take(body, _COMMAND_NAMES, kind, _COMMAND_OPTIONAL))
        if kind == KIND_REPLY:
            fields = _take(body, _REPLY_NAMES, kind)
            if not isinstance(fields["positions"], list):
                raise _fail("reply positions must be a list of integers.")
            fields["positions"] = tuple(fields["positions"])
            if not isinstance(fields["command_id"], str):
                raise _fail("reply command id must be a string.")
            return Reply(**fields)
        if kind == KIND_EVENT:
            return event_from_fields(body)
        if kind == KIND_READY:
            return Ready(**_take(body, ("node", "capacity"), kind))
        if kind == KIND_HEARTBEAT:
            return Heartbeat(**_take(body, ("node",), kind))
        _take(body, (), kind)
        return Disconnect()
    except ProtocolError:
        raise
    except Exception as exc:  # noqa: BLE001 - a defect the checks did not foresee: still a refusal
        raise _fail(f"invalid {kind}: {exc}.") from None


def salvage_command_id(frame: bytes) -> str:
    """The command id of a frame that failed to decode, if it can be read; else ''.

    Lets the broker address an error reply to the command a client is waiting for
    even when the rest of the command is invalid.
    """
    try:
        body = msgpack.unpackb(frame, raw=False, strict_map_key=False, ext_hook=_refuse_ext)
    except Exception:  # noqa: BLE001 - unreadable: no id to salvage
        return ""
    if isinstance(body, dict):
        value = body.get("id")
        if is_uuid(value):
            return value
    return ""


NOT_NOW_CODES: Final = frozenset({Unavailable.code, HandedBack.code, Passive.code,
                                   StoreError.code, RateLimited.code})
"""Error codes that say "not now" rather than what a command did. Neither the broker
nor a worker keeps such an answer for resends of the command id: the resend must run
again (a worker replays whatever outcome the store holds for the id), or a worker cut
off by its drain deadline answers every later resend "unavailable"."""


def remembered(reply: Reply) -> bool:
    """Whether a reply is the answer to keep for resends of its command id."""
    return reply.ok or reply.error_code not in NOT_NOW_CODES


def error_reply(command_id: str, code: str, message: str) -> Reply:
    """An error reply with a stable code (see engine.errors)."""
    return Reply(command_id=command_id, ok=False, error_code=code,
                 message=message[:MAX_MESSAGE_LENGTH])

