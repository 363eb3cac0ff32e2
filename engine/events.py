"""Typed events: the facts berth records about containers.

Pure domain code, no I/O. Every event is an immutable dataclass with a class-level
``type`` (its topic on the bus and in the log) and ``schema_version``. Stored rows and
wire frames carry ``to_data()`` dicts of msgpack-able primitives; ``from_data()`` is the
only way back, so a payload is validated once, where it enters the domain. Old payload
versions are upcast by the store's mapper before ``from_data`` sees them, which is why
``from_data`` only knows the current version.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Self

# The run spec lives with its validation in engine.containers.spec; re-exported as part of the
# created event's vocabulary.
from engine.containers.spec import PortMapping as PortMapping  # noqa: PLC0414 (explicit re-export)
from engine.containers.spec import RunSpec as RunSpec  # noqa: PLC0414
from engine.errors import InvalidArgument

# Topics. Constants, so a typo is a NameError and not a silently unknown event.
CONTAINER_CREATED = "container.created"
CONTAINER_PID_RECEIVED = "container.pid_received"
CONTAINER_STARTED = "container.started"
CONTAINER_SIGNALLED = "container.signalled"
CONTAINER_STOP_REQUESTED = "container.stop_requested"
CONTAINER_EXITED = "container.exited"
CONTAINER_PAUSED = "container.paused"
CONTAINER_UNPAUSED = "container.unpaused"
CONTAINER_EXEC_STARTED = "container.exec_started"
CONTAINER_EXEC_EXITED = "container.exec_exited"
CONTAINER_EXEC_REQUESTED = "container.exec_requested"
CONTAINER_CHECKPOINT_REQUESTED = "container.checkpoint_requested"
CONTAINER_CHECKPOINTED = "container.checkpointed"
CONTAINER_RESTORED = "container.restored"
CONTAINER_REMOVED = "container.removed"
# CLI verbs (podman's)
CONTAINER_RENAMED = "container.renamed"
CONTAINER_COPIED_IN = "container.copied_in"
CONTAINER_COPY_FINISHED = "container.copy_finished"
COMMAND_FAILED = "command.failed"
COMMAND_REFUSED = "command.refused"
# restart policies, health checks, updates (engine.restarts.rules, engine.health.rules)
CONTAINER_RESTARTING = "container.restarting"
CONTAINER_HEALTH_STATUS = "container.health_status"
CONTAINER_UPDATED = "container.updated"
# networks
NETWORK_CREATED = "network.created"
NETWORK_REMOVED = "network.removed"
CONTAINER_NETWORK_ATTACHED = "container.network_attached"
CONTAINER_NETWORK_DETACHED = "container.network_detached"
REFUSALS_STREAM = "berth:refused"
"""The stream of ``command.refused``: no container's (a name cannot hold a colon), so
a refusal never takes a version of the container it names."""
# images: each image's events on the stream "image:" + its id (a container name
# cannot hold a colon).
IMAGE_PULLED = "image.pulled"
IMAGE_LOADED = "image.loaded"
IMAGE_TAGGED = "image.tagged"
IMAGE_REMOVED = "image.removed"
IMAGE_STREAM_PREFIX = "image:"

# Why a container exited. "stop" and "checkpoint" were asked for (expected=True);
# "exit" and "crash" are the process's own doing; "conmon_lost" when its conmon died
# without leaving an exit status (the worker then kills what conmon supervised);
# "unknown" when the exit was found after the fact with nothing to say why.
EXIT_REASONS = frozenset({"stop", "checkpoint", "exit", "crash", "conmon_lost", "unknown"})

def _bad(event_type: str, detail: str) -> InvalidArgument:
    return InvalidArgument(f"invalid {event_type} payload: {detail}")


def datetime_to_data(value: datetime) -> str:
    """Encode an aware datetime as ISO 8601 UTC; naive datetimes are refused, not guessed."""
    if value.tzinfo is None:
        raise InvalidArgument("naive datetime: berth records times in UTC only")
    return value.astimezone(UTC).isoformat()


def datetime_from_data(value: object) -> datetime:
    if not isinstance(value, str):
        raise InvalidArgument(f"expected an ISO 8601 time, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidArgument(f"bad ISO 8601 time {value!r}") from exc
    if parsed.tzinfo is None:
        raise InvalidArgument(f"time {value!r} has no UTC offset")
    return parsed.astimezone(UTC)


class Event:
    """Base of all events. Subclasses are frozen slotted dataclasses.

    The default codec maps slot names to values, which is right for events whose
    fields are all primitives; events with nested or tuple fields override it.
    """

    __slots__ = ()
    type: ClassVar[str]
    schema_version: ClassVar[int] = 1

    def to_data(self) -> dict[str, Any]:
        names: tuple[str, ...] = self.__slots__
        return {name: getattr(self, name) for name in names}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Self:
        try:
            return cls(**data)
        except TypeError as exc:
            raise _bad(cls.type, str(exc)) from exc


@dataclass(frozen=True, slots=True)
class ContainerCreated(Event):
    type: ClassVar[str] = CONTAINER_CREATED
    name: str
    node: str
    bundle: str
    spec: RunSpec

    def to_data(self) -> dict[str, Any]:
        return {"name": self.name, "node": self.node, "bundle": self.bundle,
                "spec": self.spec.to_data()}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Self:
        try:
            return cls(name=data["name"], node=data["node"], bundle=data["bundle"],
                       spec=RunSpec.from_data(data["spec"]))
        except KeyError as exc:
            raise _bad(cls.type, f"missing {exc}") from exc


@dataclass(frozen=True, slots=True)
class PidReceived(Event):
    type: ClassVar[str] = CONTAINER_PID_RECEIVED
    pid: int
    conmon_pid: int


@dataclass(frozen=True, slots=True)
class Started(Event):
    type: ClassVar[str] = CONTAINER_STARTED


@dataclass(frozen=True, slots=True)
class Signalled(Event):
    type: ClassVar[str] = CONTAINER_SIGNALLED
    signal: int


@dataclass(frozen=True, slots=True)
class StopRequested(Event):
    type: ClassVar[str] = CONTAINER_STOP_REQUESTED
    timeout: int


@dataclass(frozen=True, slots=True)
class Exited(Event):
    """The main process ended. v2 added ``expected``/``reason``; v1 rows are upcast.

    ``finished_at`` is the time from the exit file when there was one; None when the
    exit was inferred, in which case readers use the event's recorded time.
    """

    type: ClassVar[str] = CONTAINER_EXITED
    schema_version: ClassVar[int] = 2
    exit_code: int
    finished_at: datetime | None = None
    expected: bool = False
    reason: str = "unknown"

    def __post_init__(self) -> None:
        if self.reason not in EXIT_REASONS:
            raise _bad(self.type, f"unknown exit reason {self.reason!r}")

    def to_data(self) -> dict[str, Any]:
        return {
            "exit_code": self.exit_code,
            "finished_at": None if self.finished_at is None
            else datetime_to_data(self.finished_at),
            "expected": self.expected,
            "reason": self.reason,
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Self:
        try:
            finished = data.get("finished_at")
            return cls(exit_code=data["exit_code"],
                       finished_at=None if finished is None else datetime_from_data(finished),
                       expected=data["expected"], reason=data["reason"])
        except KeyError as exc:
            raise _bad(cls.type, f"missing {exc}") from exc


@dataclass(frozen=True, slots=True)
class Paused(Event):
    type: ClassVar[str] = CONTAINER_PAUSED


@dataclass(frozen=True, slots=True)
class Unpaused(Event):
    type: ClassVar[str] = CONTAINER_UNPAUSED


@dataclass(frozen=True, slots=True)
class ExecStarted(Event):
    type: ClassVar[str] = CONTAINER_EXEC_STARTED
    session_id: str
    command: tuple[str, ...]
    pid: int

    def to_data(self) -> dict[str, Any]:
        return {"session_id": self.session_id, "command": list(self.command), "pid": self.pid}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Self:
        try:
            return cls(session_id=data["session_id"], command=tuple(data["command"]),
                       pid=data["pid"])
        except KeyError as exc:
            raise _bad(cls.type, f"missing {exc}") from exc


@dataclass(frozen=True, slots=True)
class ExecRequested(Event):
    """Intent: an exec session is about to be started. Recorded before its process can
    exist, so a worker that dies while starting it leaves a session the next worker
    finds and settles from what is on disk, instead of a process nobody recorded."""

    type: ClassVar[str] = CONTAINER_EXEC_REQUESTED
    session_id: str
    command: tuple[str, ...]

    def to_data(self) -> dict[str, Any]:
        return {"session_id": self.session_id, "command": list(self.command)}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Self:
        try:
            return cls(session_id=data["session_id"], command=tuple(data["command"]))
        except KeyError as exc:
            raise _bad(cls.type, f"missing {exc}") from exc


@dataclass(frozen=True, slots=True)
class ExecExited(Event):
    type: ClassVar[str] = CONTAINER_EXEC_EXITED
    session_id: str
    exit_code: int


@dataclass(frozen=True, slots=True)
class CheckpointRequested(Event):
    """Intent: CRIU is about to dump the container into ``image_path`` (a directory of
    its own). A worker that dies during the dump leaves this behind, and the next one
    decides from the image and the container what happened (``decide.settle_checkpoint``)."""

    type: ClassVar[str] = CONTAINER_CHECKPOINT_REQUESTED
    image_path: str
    leave_running: bool
    tcp_established: bool


@dataclass(frozen=True, slots=True)
class Checkpointed(Event):
    """A CRIU image was written. The run state changes only through the ``exited``
    event (reason "checkpoint") that follows when the container did not keep running."""

    type: ClassVar[str] = CONTAINER_CHECKPOINTED
    image_path: str
    leave_running: bool
    tcp_established: bool


@dataclass(frozen=True, slots=True)
class Restored(Event):
    type: ClassVar[str] = CONTAINER_RESTORED
    pid: int
    conmon_pid: int | None = None


@dataclass(frozen=True, slots=True)
class Removed(Event):
    type: ClassVar[str] = CONTAINER_REMOVED


@dataclass(frozen=True, slots=True)
class Renamed(Event):
    """The container's name from now on (the old one is free again)."""

    type: ClassVar[str] = CONTAINER_RENAMED
    name: str


@dataclass(frozen=True, slots=True)
class CopiedIn(Event):
    """Files about to be written into the container's root filesystem (the intent,
    recorded before the write): where, how many bytes of tar, and their SHA-256."""

    type: ClassVar[str] = CONTAINER_COPIED_IN
    path: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class CopyFinished(Event):
    """The files of a ``copied_in`` are written: the copy's end. Without it the intent
    is open (the worker died between the two), and a resend of the copy writes them."""

    type: ClassVar[str] = CONTAINER_COPY_FINISHED
    path: str
    size: int


@dataclass(frozen=True, slots=True)
class CommandFailed(Event):
    """A command that was refused or failed: recorded so "no lost command" holds even
    for failures, and so a retried command id gets the same answer."""

    type: ClassVar[str] = COMMAND_FAILED
    command_type: str
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class CommandRefused(Event):
    """A command the rules refused before anything ran (wrong state): recorded for the
    audit trail and so a retried command id gets the same answer, in REFUSALS_STREAM,
    so the container's version and state stay exactly as they were."""

    type: ClassVar[str] = COMMAND_REFUSED
    command_type: str
    container: str
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class ImagePulled(Event):
    """An image entered the node's store from a registry, under ``reference``."""

    type: ClassVar[str] = IMAGE_PULLED
    reference: str
    digest: str
    """The manifest's digest."""
    image_id: str
    """The config's digest."""
    size: int


@dataclass(frozen=True, slots=True)
class ImageLoaded(Event):
    """An image entered the store from an archive or a root filesystem tarball."""

    type: ClassVar[str] = IMAGE_LOADED
    reference: str
    digest: str
    image_id: str
    size: int


@dataclass(frozen=True, slots=True)
class ImageTagged(Event):
    type: ClassVar[str] = IMAGE_TAGGED
    reference: str
    digest: str
    image_id: str
    size: int


@dataclass(frozen=True, slots=True)
class ImageRemoved(Event):
    """A name was removed from the store (the image's blobs go when no name is left)."""

    type: ClassVar[str] = IMAGE_REMOVED
    reference: str
    digest: str
    image_id: str
    size: int
# -- restart policies and health checks --------------------------------------------


@dataclass(frozen=True, slots=True)
class Restarting(Event):
    """Intent: the restart policy answers the exit at ``exit_position`` with restart
    number ``attempt`` (since the container was last started by hand), ``delay_s``
    after this record. Recorded before the restart, under an id derived from the exit,
    so one exit gets one restart whatever crashes in between (engine.restarts.rules)."""

    type: ClassVar[str] = CONTAINER_RESTARTING
    attempt: int
    delay_s: float
    exit_position: int
    exit_code: int
    policy: str


HEALTH_STATES = frozenset({"starting", "healthy", "unhealthy"})


@dataclass(frozen=True, slots=True)
class HealthStatus(Event):
    """A health check's status changed (only changes are recorded, not every probe).
    ``exit_code`` and ``output`` are the probe's that caused the change (the tail of
    its output; -1 for a probe that timed out or could not run)."""

    type: ClassVar[str] = CONTAINER_HEALTH_STATUS
    status: str
    exit_code: int = 0
    output: str = ""
    failing_streak: int = 0

    def __post_init__(self) -> None:
        if self.status not in HEALTH_STATES:
            raise _bad(self.type, f"unknown health status {self.status!r}")


@dataclass(frozen=True, slots=True)
class Updated(Event):
    """``berth update``: run options changed on an existing container (resources through
    ``runc update`` when it has a process, the restart policy in the log alone). ``old``
    and ``new`` map the changed run options' names to their values before and after."""

    type: ClassVar[str] = CONTAINER_UPDATED
    old: dict[str, Any]
    new: dict[str, Any]
# networks: a network's own stream is "network:NAME"; the attachment is the
# container's, appended with its ``created`` event.
@dataclass(frozen=True, slots=True)
class NetworkCreated(Event):
    type: ClassVar[str] = NETWORK_CREATED
    name: str
    subnet: str
    gateway: str
    bridge: str


@dataclass(frozen=True, slots=True)
class NetworkRemoved(Event):
    type: ClassVar[str] = NETWORK_REMOVED
    name: str


@dataclass(frozen=True, slots=True)
class NetworkAttached(Event):
    """The address, gateway and published ports the CNI plugins gave a container."""

    type: ClassVar[str] = CONTAINER_NETWORK_ATTACHED
    network: str
    interface: str
    addresses: tuple[str, ...]
    gateway: str
    mac: str
    ports: tuple[PortMapping, ...] = ()

    def to_data(self) -> dict[str, Any]:
        return {"network": self.network, "interface": self.interface,
                "addresses": list(self.addresses), "gateway": self.gateway, "mac": self.mac,
                "ports": [list(p) for p in self.ports]}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Self:
        try:
            return cls(str(data["network"]), str(data["interface"]),
                       tuple(str(a) for a in data["addresses"]), str(data["gateway"]),
                       str(data["mac"]),
                       tuple(PortMapping(str(p[0]), int(p[1]), int(p[2]), str(p[3]))
                             for p in data.get("ports") or ()))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise _bad(cls.type, str(exc)) from exc


@dataclass(frozen=True, slots=True)
class NetworkDetached(Event):
    """The container's process ended and its network went with it (as in podman and
    Docker): the address, veth and port forwards it had are free for others until it
    starts again, when a new ``container.network_attached`` follows."""

    type: ClassVar[str] = CONTAINER_NETWORK_DETACHED
    network: str
    addresses: tuple[str, ...]

    def to_data(self) -> dict[str, Any]:
        return {"network": self.network, "addresses": list(self.addresses)}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Self:
        try:
            return cls(str(data["network"]), tuple(str(a) for a in data["addresses"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise _bad(cls.type, str(exc)) from exc


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (
        ContainerCreated, PidReceived, Started, Signalled, StopRequested, Exited, Paused,
        Unpaused, ExecRequested, ExecStarted, ExecExited, CheckpointRequested, Checkpointed,
        Restored, Removed, CommandFailed, CommandRefused,
        ImagePulled, ImageLoaded, ImageTagged, ImageRemoved,  # images
        Restarting, HealthStatus, Updated,
        NetworkCreated, NetworkRemoved, NetworkAttached, NetworkDetached,  # networks
        Renamed, CopiedIn, CopyFinished,
    )
}


# -- volumes: not containers', each in its own stream ("volume:NAME", see engine.volumes.rules)
VOLUME_CREATED = "volume.created"
VOLUME_REMOVED = "volume.removed"


@dataclass(frozen=True, slots=True)
class VolumeCreated(Event):
    """A named volume came to be on ``node``: asked for (``volume create``) or by the
    first container that mounts it (``implicit``)."""

    type: ClassVar[str] = VOLUME_CREATED
    name: str
    node: str
    labels: tuple[tuple[str, str], ...] = ()
    implicit: bool = False

    def to_data(self) -> dict[str, Any]:
        return {"name": self.name, "node": self.node, "labels": dict(self.labels),
                "implicit": self.implicit}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Self:
        try:
            labels = data.get("labels") or {}
            return cls(name=data["name"], node=data["node"],
                       labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
                       implicit=bool(data.get("implicit", False)))
        except (KeyError, AttributeError) as exc:
            raise _bad(cls.type, f"missing or bad {exc}") from exc


@dataclass(frozen=True, slots=True)
class VolumeRemoved(Event):
    type: ClassVar[str] = VOLUME_REMOVED
    name: str


EVENT_TYPES.update({cls.type: cls for cls in (VolumeCreated, VolumeRemoved)})


# -- compose: a stack's desired configuration, in its own stream ("stack:PROJECT")
STACK_APPLIED = "stack.applied"
STACK_REMOVED = "stack.removed"


@dataclass(frozen=True, slots=True)
class StackApplied(Event):
    """``compose up`` was asked to converge the project to ``config`` (the normalised
    stack, engine.compose.model) whose sha256 is ``digest``."""

    type: ClassVar[str] = STACK_APPLIED
    project: str
    digest: str
    config: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StackRemoved(Event):
    """``compose down`` removed the project's containers (and ``volumes`` if asked)."""

    type: ClassVar[str] = STACK_REMOVED
    project: str
    volumes: bool = False


EVENT_TYPES.update({cls.type: cls for cls in (StackApplied, StackRemoved)})


def event_class(event_type: str) -> type[Event]:
    try:
        return EVENT_TYPES[event_type]
    except KeyError:
        raise InvalidArgument(f"unknown event type {event_type!r}") from None


def event_from_data(event_type: str, data: Mapping[str, Any]) -> Event:
    """Rebuild a typed event from its topic and a current-version payload."""
    event: Event = event_class(event_type).from_data(data)
    return event


@dataclass(frozen=True, slots=True)
class Metadata:
    """Where and why an event was recorded: its place in the log and its audit trail."""

    stream: str
    stream_version: int
    position: int
    type: str
    recorded_at: datetime
    causation_id: str
    correlation_id: str
    actor: str
    node: str


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as stored: the typed fact plus its envelope."""

    metadata: Metadata
    event: Event

    @property
    def position(self) -> int:
        return self.metadata.position

    @property
    def stream(self) -> str:
        return self.metadata.stream

    @property
    def type(self) -> str:
        return self.metadata.type


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event waiting to be appended: the store gives it a version, position and time."""

    stream: str
    event: Event
    causation_id: str
    correlation_id: str
    actor: str
    node: str
