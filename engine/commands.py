"""Typed commands: what a publisher may ask of the engine, and who asked (Causation).

Frozen values and nothing else: ``engine.parsing`` turns a wire command into one of
these through its feature's parser, so every layer past it sees typed commands, and this
module imports no feature (the run spec and a tree head are named for the type checker
only), which keeps it below every parser and service that uses it.

The command-type names are constants in ``engine.command_types`` (the bus and the
client import only those), so a typo is a NameError rather than a silently unknown
command.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Final, TypeAlias

if TYPE_CHECKING:  # values of their fields; their modules are the parsers' to load
    from engine.audit.treehead import TreeHead
    from engine.containers.spec import RunSpec


# --------------------------------------------------------------------------- causation


@dataclass(frozen=True, slots=True)
class Causation:
    """Who asked for a change and on whose behalf: recorded on every event it causes.

    The engine never sees a bus message; the worker hands it this instead.
    """

    command_id: str
    correlation_id: str
    actor: str
    command_type: str


# Events no publisher asked for (an exit conmon reported, an auto-removal) get a
# deterministic command id derived from this namespace, so recording them twice
# (after a crash, or from two paths) is a no-op in the store.
SYSTEM_NAMESPACE = uuid.UUID("5f0c3d4e-6b1a-4c2e-9d7f-b3e1a2c4d5e6")


def system_command_id(*parts: object) -> str:
    return str(uuid.uuid5(SYSTEM_NAMESPACE, ":".join(str(p) for p in parts)))


# --------------------------------------------------------------------------- changes


@dataclass(frozen=True, slots=True)
class Create:
    spec: RunSpec
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Start:
    container: str


@dataclass(frozen=True, slots=True)
class Stop:
    container: str
    timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class Kill:
    container: str
    signal: int = 9


@dataclass(frozen=True, slots=True)
class Pause:
    container: str


@dataclass(frozen=True, slots=True)
class Unpause:
    container: str


@dataclass(frozen=True, slots=True)
class Exec:
    container: str
    argv: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str = ""
    user: str = ""
    tty: bool = False
    session_id: str | None = None
    stdin: bool = False
    """Keep the session's stdin open for an attached client (``exec -i``)."""
    streamed: bool = False
    """The output goes to a stream session as it comes; the reply carries none of it."""
    console: tuple[int, int] = (0, 0)
    """The terminal's (height, width) when the session starts, with ``tty``."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    container: str
    leave_running: bool = False
    tcp_established: bool = False
    image_path: str | None = None
    """Set by the service, never from the wire: this command's own image directory."""


@dataclass(frozen=True, slots=True)
class Restore:
    container: str
    tcp_established: bool = False


@dataclass(frozen=True, slots=True)
class Remove:
    container: str
    force: bool = False


@dataclass(frozen=True, slots=True)
class Update:
    """New values for some run options of an existing container (None: unchanged)."""

    container: str
    memory: int | None = None
    pids_limit: int | None = None
    cpus: float | None = None
    restart: str | None = None

    def changes(self) -> dict[str, object]:
        given = {"memory": self.memory, "pids_limit": self.pids_limit, "cpus": self.cpus,
                 "restart": self.restart}
        return {k: v for k, v in given.items() if v is not None}


@dataclass(frozen=True, slots=True)
class Rename:
    """Give a container a new name (podman's ``rename``); its id stays."""

    container: str
    name: str


@dataclass(frozen=True, slots=True)
class CopyIn:
    """Extract a tar (of one file or directory) at ``path`` in the container's root
    filesystem (``berth cp HOST CTR:PATH``)."""

    container: str
    path: str
    data: bytes
    transfer: str | None = None
    """The earlier pieces were sent with ``container.copy_chunk`` under this id;
    ``data`` is the last piece (the worker joins them before the service sees it)."""


@dataclass(frozen=True, slots=True)
class CopyChunk:
    """A piece of a large archive for a ``container.copy_in`` to come, at ``offset``."""

    container: str
    transfer: str
    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Run:
    """``run --rm`` as one command (``container.run``): create, start, wait for the exit,
    remove. Not a change of its own: each step is an ordinary command recorded under an
    id derived from this one (``run_step_id``), so every event still says which
    command caused it, a resend of the same id replays the steps already done and
    carries on with the rest, and no step is ever carried out twice."""

    create: Create
    session_id: str | None = None
    """The stream session (``bus.stream``, kind ``run``) the container's stdio goes
    to: attached after the create and before the start, so no output is missed."""


RUN_STEPS: Final = ("create", "start", "remove")


def run_step_id(command_id: str, step: str) -> str:
    """The command id of one step of a ``container.run`` (deterministic: a resend finds it)."""
    if step not in RUN_STEPS:
        raise ValueError(f"no run step {step!r}")
    return system_command_id(command_id, "run", step)


ContainerCommand: TypeAlias = (
    Create | Start | Stop | Kill | Pause | Unpause | Exec | Checkpoint | Restore | Remove
    | Update | Rename | CopyIn
)


# --------------------------------------------------------------------------- reads


@dataclass(frozen=True, slots=True)
class Wait:
    container: str
    timeout: float | None = None
    condition: str = "exited"
    """exited, running or healthy (podman's ``wait --condition``)."""


WAIT_CONDITIONS: Final = ("exited", "running", "healthy")


@dataclass(frozen=True, slots=True)
class Top:
    """The container's processes now."""

    container: str


@dataclass(frozen=True, slots=True)
class Stats:
    """The container's resource counters now."""

    container: str


@dataclass(frozen=True, slots=True)
class Healthcheck:
    """Run the container's health check once, now."""

    container: str


@dataclass(frozen=True, slots=True)
class Ps:
    all: bool = False


@dataclass(frozen=True, slots=True)
class Inspect:
    container: str


@dataclass(frozen=True, slots=True)
class Resolve:
    container: str


@dataclass(frozen=True, slots=True)
class Events:
    after: int = 0
    limit: int = 500
    types: tuple[str, ...] | None = None
    container: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    @property
    def filtered(self) -> bool:
        return not (self.types is None and self.container is None
                    and self.since is None and self.until is None)


@dataclass(frozen=True, slots=True)
class History:
    container: str
    all: bool = False
    """Every container that ever had this name, not only the newest."""


@dataclass(frozen=True, slots=True)
class StateAt:
    container: str | None = None
    at_position: int | None = None
    at_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class Logs:
    container: str
    offset: int = 0
    wait_ms: int = 0


@dataclass(frozen=True, slots=True)
class Rebuild:
    """Replay the log into the read model; ``verify`` compares the rows with the log
    first; a log whose hash chain is broken is replayed only with ``force``."""

    verify: bool = False
    force: bool = False


@dataclass(frozen=True, slots=True)
class VerifyAudit:
    """Check the log against the stored heads and ``heads`` (from the operator's
    files), trusting signatures by ``keys`` and by the worker's own key."""

    heads: tuple[TreeHead, ...] = ()
    keys: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class AuditCheckpoint:
    """A tree head over the log now, signed with the worker's auditor key if it has one."""


@dataclass(frozen=True, slots=True)
class AuditProve:
    position: int
    size: int | None = None


@dataclass(frozen=True, slots=True)
class AuditConsistency:
    """A new head, and the proof that the log of ``first`` events is a prefix of it."""

    first: int


@dataclass(frozen=True, slots=True)
class AuditExport:
    """Rows of the log with their hashes and leaves, ``after`` a position, a page."""

    after: int = 0
    limit: int = 1000


@dataclass(frozen=True, slots=True)
class Ping:
    """Answered by the broker; a worker that receives one answers it too."""


# networks
@dataclass(frozen=True, slots=True)
class NetworkCreate:
    name: str
    subnet: str | None = None
    gateway: str | None = None


@dataclass(frozen=True, slots=True)
class NetworkRemove:
    name: str


@dataclass(frozen=True, slots=True)
class Networks:
    pass


@dataclass(frozen=True, slots=True)
class NetworkInspect:
    name: str


NetworkCommand: TypeAlias = NetworkCreate | NetworkRemove | Networks | NetworkInspect
@dataclass(frozen=True, slots=True)
class CopyOut:
    """A file or directory of the container's root filesystem as a tar."""

    container: str
    path: str
    transfer: str | None = None
    """Pages of a large archive: the first page packs it under this id, the next
    ones (``offset``) are read from the worker's copy."""
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Info:
    """What a node runs: the versions of its runtime binaries, its store and position."""


# stdio streams over tcp
@dataclass(frozen=True, slots=True)
class StreamLocation:
    """Where the node's stream socket listens and its public CURVE key (routed by node)."""


Query: TypeAlias = (
    Wait | Ps | Inspect | Resolve | Events | History | StateAt | Logs | Rebuild | VerifyAudit
    | AuditCheckpoint | AuditProve | AuditConsistency | AuditExport | Ping | Healthcheck
    | Top | Stats
    | AuditCheckpoint | AuditProve | AuditConsistency | AuditExport | Ping | Info | CopyOut
    | CopyChunk | StreamLocation
)
# volumes


@dataclass(frozen=True, slots=True)
class VolumeCreate:
    name: str
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class VolumeRemove:
    names: tuple[str, ...]
    force: bool = False


@dataclass(frozen=True, slots=True)
class VolumePrune:
    """Remove every volume of the node that no container mounts."""


@dataclass(frozen=True, slots=True)
class VolumeLs:
    """The volumes that exist."""


@dataclass(frozen=True, slots=True)
class VolumeInspect:
    name: str


VolumeCommand: TypeAlias = VolumeCreate | VolumeRemove | VolumePrune | VolumeLs | VolumeInspect
Command: TypeAlias = ContainerCommand | Run | Query | VolumeCommand | NetworkCommand
