"""The parser of the container commands (create, the changes, exec, copies) and of the
reads about one container: the wire form of each into its typed command
(``engine.commands``), with the run spec's and the process's own rules.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from engine.arguments import (
    MAX_STOP_TIMEOUT,
    _container,
    _flag,
    _integer,
    _number,
    _strings,
    _text,
)
from engine.command_types import CHANGE_COMMANDS
from engine.commands import (
    WAIT_CONDITIONS,
    Checkpoint,
    Command,
    CopyChunk,
    CopyIn,
    CopyOut,
    Create,
    Exec,
    Healthcheck,
    History,
    Inspect,
    Kill,
    Logs,
    Pause,
    Ps,
    Remove,
    Rename,
    Resolve,
    Restore,
    Run,
    Start,
    Stats,
    Stop,
    Top,
    Unpause,
    Update,
    Wait,
)
from engine.containers.copying import CHUNK, check_archive
from engine.containers.process import check_argv, check_cwd, check_env, check_user, is_user_form
from engine.containers.spec import RunSpec
from engine.errors import InvalidArgument
from engine.ids import validate_container_id, validate_name, validate_session_id
from engine.restarts.rules import parse_policy
from engine.signals import parse_signal

MAX_LOG_WAIT_MS: Final = 5000


def _bytes(args: Mapping[str, Any], key: str) -> bytes:
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


def _create(args: Mapping[str, Any]) -> Create:
    data = dict(args)
    name = data.pop("name", None)
    return Create(RunSpec.from_data(data).validate(),
                  validate_name(name) if name is not None else None)


def _run(args: Mapping[str, Any]) -> Run:
    """A create's spec and name, and the stream session its stdio goes to (if any)."""
    data = dict(args)
    session = data.pop("session_id", None)
    if data.get("auto_remove"):  # the exit monitor would remove it under the run's feet
        raise InvalidArgument("container.run removes the container itself once it has "
                              "exited: its spec must not ask for auto_remove")
    return Run(_create(data), validate_session_id(session) if session is not None else None)


def _exec(ref: str, args: Mapping[str, Any]) -> Exec:
    """An exec session's process obeys the rules of a container's (check_*); its user
    may be named, as a container's (the worker resolves it in the container's files)."""
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


def parse_container(command_type: str, container: str | None, args: Mapping[str, Any]
                    ) -> Command:
    """The typed command for a container command or a read about containers.

    ``container`` is the reference as the publisher gave it (an id, a prefix or a
    name); resolving it is the service's job.
    """
    match command_type:
        case "container.create":
            return _create(args)
        case "container.run":
            return _run(args)
        case "query.ps":
            return Ps(_flag(args, "all"))
    ref = _container(command_type, container)
    if command_type in CHANGE_COMMANDS:
        validate_container_id(ref)
    match command_type:
        case "container.start":
            return Start(ref)
        case "container.stop":
            return Stop(ref, _number(args, "timeout", 10, maximum=MAX_STOP_TIMEOUT))
        case "container.kill":
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
        case _:  # query.logs: the last type engine.parsing.PARSERS gives this parser
            return Logs(ref, _integer(args, "offset", 0),
                        _integer(args, "wait_ms", 0, maximum=MAX_LOG_WAIT_MS))
