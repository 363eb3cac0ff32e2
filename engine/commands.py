"""Typed commands: what a publisher may ask of the engine, parsed once.

A command arrives on the wire as a type string, an optional container reference and
a map of arguments. ``parse`` is the one place that turns that into a typed, frozen
command, with one set of validation rules: every edge (the worker's dispatch, the
client, tests) shares them, so a bad argument gets the same one-sentence refusal
wherever it enters, and nothing past here sees a loose dict.

The command-type names are constants in ``engine.command_types`` (the bus and the
client import only those), so a typo is a NameError rather than a silently unknown
command.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from engine.command_types import (
    CHANGE_COMMANDS,
    COMMAND_TYPES,
    IMAGE_COMMANDS,
    STACK_COMMANDS,
    VOLUME_COMMANDS,
)
from engine.errors import InvalidArgument
from engine.events import datetime_from_data
from engine.ids import validate_container_id, validate_name, validate_session_id

if TYPE_CHECKING:  # imported where parsed: the client imports this module for the names
    from engine.audit.treehead import TreeHead
    from engine.containers.spec import RunSpec

MAX_EVENTS_PAGE: Final = 1000
MAX_LOG_WAIT_MS: Final = 5000
MAX_STOP_TIMEOUT: Final = 365 * 24 * 3600.0
MAX_ARGS: Final = 4096
MAX_ARG_BYTES: Final = 128 * 1024
"""Bounds on a process's command line (argv of a container or of an exec session):
Linux refuses a single argument over 128 KiB (MAX_ARG_STRLEN) anyway."""
_ENV_KEY_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_USER_RE: Final = re.compile(r"^[0-9]{1,10}(:[0-9]{1,10})?$")


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


# networks (issue 11)
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


# stdio streams over tcp (issue 10)
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
Command: TypeAlias = ContainerCommand | Query | VolumeCommand | NetworkCommand


# --------------------------------------------------------------------------- process rules
# One set of rules for a process to run, whether it is a container's (the run spec,
# engine.containers.spec) or an exec session's: the same command line, environment, working
# directory and user are refused with the same sentence wherever they come from.


def check_argv(argv: Sequence[object], what: str = "the command") -> tuple[str, ...]:
    """A non-empty list of strings, no NUL byte, within the kernel's bounds."""
    if isinstance(argv, str) or not all(isinstance(a, str) for a in argv):
        raise InvalidArgument(f"{what} must be a list of strings")
    args = tuple(str(a) for a in argv)
    if not args or not args[0]:
        raise InvalidArgument(f"{what} is empty: name a program to run")
    if len(args) > MAX_ARGS or sum(len(a.encode(errors="surrogateescape")) for a in args) \
            > MAX_ARG_BYTES:
        raise InvalidArgument(f"{what} is too long (at most {MAX_ARGS} arguments and "
                              f"{MAX_ARG_BYTES // 1024} KiB)")
    if any("\0" in a for a in args):
        raise InvalidArgument(f"{what} contains a NUL byte")
    return args


def check_env(env: Sequence[object]) -> tuple[str, ...]:
    """KEY=VALUE entries with a shell-style KEY, no NUL byte."""
    if isinstance(env, str) or not all(isinstance(e, str) for e in env):
        raise InvalidArgument("the environment must be a list of KEY=VALUE strings")
    entries = tuple(str(e) for e in env)
    if sum(len(e) for e in entries) > MAX_ARG_BYTES:
        raise InvalidArgument(f"the environment is too long (at most {MAX_ARG_BYTES // 1024} KiB)")
    for item in entries:
        key, sep, _ = item.partition("=")
        if not sep or not _ENV_KEY_RE.fullmatch(key) or "\0" in item:
            raise InvalidArgument(f"invalid environment entry {item!r}: use KEY=VALUE")
    return entries


def check_cwd(cwd: object, *, optional: bool = False) -> str:
    """An absolute path with no NUL byte (``optional``: or empty, the default)."""
    if optional and cwd == "":
        return ""
    if not isinstance(cwd, str) or not os.path.isabs(cwd) or "\0" in cwd or len(cwd) > 4096:
        raise InvalidArgument(f"working directory {cwd!r} must be an absolute path")
    return cwd


def check_user(user: object, *, optional: bool = False) -> str:
    """``UID[:GID]`` in numbers (``optional``: or empty, the container's user)."""
    if optional and user == "":
        return ""
    if not isinstance(user, str) or not _USER_RE.fullmatch(user):
        raise InvalidArgument(f"invalid user {user!r}: use UID[:GID] (numbers)")
    return user


# --------------------------------------------------------------------------- argument rules


def _number(args: Mapping[str, Any], key: str, default: float, *, minimum: float = 0,
            maximum: float = math.inf) -> float:
    value = args.get(key, default)
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value)
            or value < minimum or value > maximum):
        upper = "" if maximum == math.inf else f" and <= {maximum:g}"
        raise InvalidArgument(f"invalid {key} {value!r}: must be a number >= {minimum:g}{upper}")
    return float(value)


def check_timeout(value: object, key: str = "timeout") -> float:
    """A finite number of seconds, 0 up to a year: what stop and wait accept."""
    return _number({key: value}, key, 0, maximum=MAX_STOP_TIMEOUT)


def _integer(args: Mapping[str, Any], key: str, default: int, *, minimum: int = 0,
             maximum: int | None = None) -> int:
    value = args.get(key, default)
    if (isinstance(value, bool) or not isinstance(value, int) or value < minimum
            or (maximum is not None and value > maximum)):
        raise InvalidArgument(f"invalid {key} {value!r}")
    return value


def _flag(args: Mapping[str, Any], key: str) -> bool:
    value = args.get(key, False)
    if not isinstance(value, bool):
        raise InvalidArgument(f"invalid {key} {value!r}: must be true or false")
    return value


def _strings(args: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = args.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"invalid {key}: must be a list of strings")
    return tuple(value)


def _text(args: Mapping[str, Any], key: str) -> str:
    value = args.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(f"invalid {key} {value!r}: must be a string")
    return value


def _time(args: Mapping[str, Any], key: str) -> datetime | None:
    value = args.get(key)
    return None if value is None else datetime_from_data(value)


def _bytes(args: Mapping[str, Any], key: str) -> bytes:
    from engine.containers.copying import CHUNK

    data = args.get(key)
    if not isinstance(data, bytes) or len(data) > CHUNK:
        raise InvalidArgument(f"invalid {key}: a piece of a tar archive, bytes, at most "
                              f"{CHUNK} of them")
    return data


def _transfer(args: Mapping[str, Any]) -> str | None:
    transfer = args.get("transfer")
    if transfer is None:
        return None
    if not isinstance(transfer, str) or not re.fullmatch(r"[0-9a-f-]{8,64}", transfer):
        raise InvalidArgument(f"invalid transfer id {transfer!r}")
    return transfer


def _container_path(args: Mapping[str, Any]) -> str:
    path = args.get("path")
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
        raise InvalidArgument(f"invalid container path {path!r}: it must be absolute")
    return path


def _container(command_type: str, container: str | None) -> str:
    if not container:
        raise InvalidArgument(f"{command_type} needs a container")
    return container


# --------------------------------------------------------------------------- parser


def _create(args: Mapping[str, Any]) -> Create:
    from engine.containers.spec import RunSpec

    data = dict(args)
    name = data.pop("name", None)
    return Create(RunSpec.from_data(data).validate(),
                  validate_name(name) if name is not None else None)


def _exec(ref: str, args: Mapping[str, Any]) -> Exec:
    """An exec session's process obeys the rules of a container's (check_*); its user
    may be named, as a container's (the worker resolves it in the container's files)."""
    from engine.containers.process import is_user_form

    argv = check_argv(_strings(args, "cmd"), "the exec command")
    session = args.get("session_id")
    user = _text(args, "user")
    if not is_user_form(user):
        check_user(user, optional=True)  # its sentence for a malformed user
    return Exec(ref, argv, check_env(_strings(args, "env")),
                check_cwd(_text(args, "cwd"), optional=True), user,
                _flag(args, "tty"), validate_session_id(session) if session is not None else None,
                _flag(args, "stdin"), _flag(args, "streamed"),
                (_integer(args, "height", 0, maximum=65535),
                 _integer(args, "width", 0, maximum=65535)))


def _events(args: Mapping[str, Any]) -> Events:
    types = args.get("types")
    if types is not None and (not isinstance(types, list)
                              or not all(isinstance(t, str) for t in types)):
        raise InvalidArgument("event type filter must be a list of strings")
    container = args.get("container")
    if container is not None and not isinstance(container, str):
        raise InvalidArgument("the container filter must be a container reference")
    return Events(_integer(args, "after", 0), _integer(args, "limit", 500, minimum=1,
                                                         maximum=MAX_EVENTS_PAGE),
                  None if types is None else tuple(types), container,
                  _time(args, "since"), _time(args, "until"))


def _state_at(ref: str | None, args: Mapping[str, Any]) -> StateAt:
    position = None if args.get("at_position") is None else _integer(args, "at_position", 0)
    return StateAt(ref, position, _time(args, "at_time"))


def _wait(ref: str, args: Mapping[str, Any]) -> Wait:
    condition = args.get("condition", "exited")
    if condition not in WAIT_CONDITIONS:
        raise InvalidArgument(f"invalid wait condition {condition!r}: use exited, running "
                              "or healthy")
    if args.get("timeout") is None:
        return Wait(ref, condition=condition)
    return Wait(ref, _number(args, "timeout", 0, maximum=MAX_STOP_TIMEOUT), condition)


def _update(ref: str, args: Mapping[str, Any]) -> Update:
    """Only the types here: the values are the run spec's to judge (engine.containers.decide)."""
    from engine.restarts.rules import parse_policy

    memory = None if args.get("memory") is None else _integer(args, "memory", 0,
                                                                minimum=4 * 1024 * 1024)
    pids = None if args.get("pids_limit") is None else _integer(args, "pids_limit", 0,
                                                                minimum=1)
    cpus = None if args.get("cpus") is None else _number(args, "cpus", 0, minimum=0.01,
                                                              maximum=1024)
    restart = args.get("restart")
    if restart is not None:
        restart = str(parse_policy(restart))
    update = Update(ref, memory, pids, cpus, restart)
    if not update.changes():
        raise InvalidArgument("nothing to update: give --memory, --pids-limit, --cpus or "
                              "--restart")
    return update


def _verify_audit(args: Mapping[str, Any]) -> VerifyAudit:
    from engine.audit.treehead import TreeHead

    heads = args.get("heads") or []
    keys = args.get("keys") or []
    if not isinstance(heads, list) or not isinstance(keys, list) or len(heads) > 1000:
        raise InvalidArgument("invalid heads or keys: lists expected")
    if not all(isinstance(k, bytes) and len(k) == 32 for k in keys):
        raise InvalidArgument("invalid keys: 32-byte Ed25519 public keys expected")
    return VerifyAudit(tuple(TreeHead.from_json(h) for h in heads), tuple(keys))


def _volume(command_type: str, args: Mapping[str, Any]) -> VolumeCommand:
    """A volume command; the names obey engine.containers.mountspec's one rule."""
    from engine.containers.mountspec import validate_volume_name
    from engine.volumes.rules import check_labels

    match command_type:
        case "volume.create":
            return VolumeCreate(validate_volume_name(args.get("name")),
                                check_labels(args.get("labels") or {}))
        case "volume.remove":
            names = _strings(args, "names")
            if not names:
                raise InvalidArgument("volume rm needs at least one volume name")
            return VolumeRemove(tuple(validate_volume_name(n) for n in names),
                                _flag(args, "force"))
        case "volume.prune":
            return VolumePrune()
        case "volume.ls":
            return VolumeLs()
        case _:  # volume.inspect
            return VolumeInspect(validate_volume_name(args.get("name")))
def _network_name(args: Mapping[str, Any]) -> str:
    from engine.networks.rules import validate_name

    return validate_name(args.get("name"))


def _optional_text(args: Mapping[str, Any], key: str) -> str | None:
    value = args.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidArgument(f"invalid {key} {value!r}: must be a string")
    return value


def parse(command_type: str, container: str | None, args: Mapping[str, Any]) -> Command:
    """The typed command for a wire command; InvalidArgument with one sentence if not.

    ``container`` is the reference as the publisher gave it (an id, a prefix or a
    name); resolving it is the service's job.
    """
    if command_type in IMAGE_COMMANDS:
        from engine.images.commands import parse_image

        return parse_image(command_type, args)  # type: ignore[return-value]
    if command_type in STACK_COMMANDS:  # compose
        from engine.compose.stacks import parse_stack

        return parse_stack(command_type, args)  # type: ignore[return-value]
    match command_type:
        case "container.create":
            return _create(args)
        case "query.ps":
            return Ps(_flag(args, "all"))
        case "query.events":
            return _events(args)
        case "query.state":
            return _state_at(container, args)
        case "query.ping":
            return Ping()
        case "query.info":
            return Info()
        case "query.stream":
            return StreamLocation()
        case "admin.rebuild":
            return Rebuild(_flag(args, "verify"), _flag(args, "force"))
        case "admin.verify_audit":
            return _verify_audit(args)
        case "audit.checkpoint":
            return AuditCheckpoint()
        case "audit.prove":
            size = None if args.get("size") is None else _integer(args, "size", 1, minimum=1)
            return AuditProve(_integer(args, "position", 0, minimum=1), size)
        case "audit.consistency":
            return AuditConsistency(_integer(args, "first", 0))
        case "audit.export":
            return AuditExport(_integer(args, "after", 0),
                               _integer(args, "limit", 1000, minimum=1, maximum=5000))
        case "network.create":  # networks (issue 11)
            return NetworkCreate(_network_name(args), _optional_text(args, "subnet"),
                                 _optional_text(args, "gateway"))
        case "network.remove":
            return NetworkRemove(_network_name(args))
        case "query.networks":
            return Networks()
        case "query.network_inspect":
            return NetworkInspect(_network_name(args))
    if command_type in VOLUME_COMMANDS:
        return _volume(command_type, args)
    if command_type not in COMMAND_TYPES:
        raise InvalidArgument(f"unknown command type {command_type!r}")
    ref = _container(command_type, container)
    if command_type in CHANGE_COMMANDS:
        validate_container_id(ref)
    match command_type:
        case "container.start":
            return Start(ref)
        case "container.stop":
            return Stop(ref, _number(args, "timeout", 10, maximum=MAX_STOP_TIMEOUT))
        case "container.kill":
            from engine.signals import parse_signal

            return Kill(ref, parse_signal(args.get("signal", "KILL")))
        case "container.pause":
            return Pause(ref)
        case "container.unpause":
            return Unpause(ref)
        case "container.exec":
            return _exec(ref, args)
        case "container.checkpoint":
            return Checkpoint(ref, _flag(args, "leave_running"), _flag(args, "tcp_established"))
        case "container.restore":
            return Restore(ref, _flag(args, "tcp_established"))
        case "container.remove":
            return Remove(ref, _flag(args, "force"))
        case "container.wait":
            return _wait(ref, args)
        case "container.healthcheck":
            return Healthcheck(ref)
        case "container.update":
            return _update(ref, args)
        case "container.top":
            return Top(ref)
        case "container.stats":
            return Stats(ref)
        case "container.rename":
            return Rename(ref, validate_name(args.get("name")))
        case "container.copy_in":
            data = _bytes(args, "data")
            transfer = _transfer(args)
            if transfer is None:  # the whole archive (else checked once joined)
                from engine.containers.copying import check_archive

                check_archive(data)
            return CopyIn(ref, _container_path(args), data, transfer)
        case "container.copy_chunk":
            transfer = _transfer(args)
            if transfer is None:
                raise InvalidArgument("container.copy_chunk needs a transfer id")
            return CopyChunk(ref, transfer, _integer(args, "offset", 0), _bytes(args, "data"))
        case "query.copy_out":
            return CopyOut(ref, _container_path(args), _transfer(args),
                           _integer(args, "offset", 0))
        case "query.inspect":
            return Inspect(ref)
        case "query.resolve":
            return Resolve(ref)
        case "query.history":
            return History(ref, _flag(args, "all"))
        case _:  # query.logs: the last type left in COMMAND_TYPES
            return Logs(ref, _integer(args, "offset", 0),
                        _integer(args, "wait_ms", 0, maximum=MAX_LOG_WAIT_MS))
