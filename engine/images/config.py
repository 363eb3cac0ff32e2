"""An image's configuration applied to a run spec (pure: tested without images).

The rules are docker's and podman's: the command line's command replaces the image's
``Cmd``; ``--entrypoint`` replaces its ``Entrypoint`` and drops its ``Cmd``; the
image's ``Env`` comes first and the user's entries override it by name; the image's
``WorkingDir``, ``User`` and ``StopSignal`` apply where the user left the default.
A ``User`` given by name is looked up in the image's own ``/etc/passwd``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from engine.containers.spec import RunSpec
from engine.errors import InvalidArgument
from engine.signals import parse_signal

DEFAULT_CWD = "/"
DEFAULT_USER = "0:0"
DEFAULT_STOP_SIGNAL = 15


def command_line(entrypoint: Sequence[str] | None, args: Sequence[str],
                 image_entrypoint: Sequence[str], image_cmd: Sequence[str]) -> tuple[str, ...]:
    """The container's argv from the user's entrypoint/command and the image's."""
    if entrypoint is not None:
        argv = (*entrypoint, *args)
    else:
        argv = (*image_entrypoint, *(args or image_cmd))
    if not argv:
        raise InvalidArgument("the image has no command: give one after the image name")
    return argv


def merge_env(image_env: Sequence[str], user_env: Sequence[str]) -> tuple[str, ...]:
    """Image entries first; a user's entry replaces the image's of the same name."""
    merged: dict[str, str] = {}
    for entry in (*image_env, *user_env):
        key, sep, _value = entry.partition("=")
        if sep and key:
            merged[key] = entry
    return tuple(merged.values())


def _table(text: str) -> list[list[str]]:
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def _number(text: str) -> bool:
    """A number ``int`` takes and an id can be: ASCII digits only (``str.isdigit``
    takes "\u00b2" too), and not thousands of them (``int`` refuses those)."""
    return len(text) <= 19 and text.isascii() and text.isdigit()


def resolve_user(user: str, passwd: str, group: str) -> str:
    """``uid:gid`` for an image's ``User`` (``name``, ``uid``, ``name:group``, ...),
    names looked up in the image's passwd and group files."""
    name, _, grp = user.partition(":")
    uid: int | None = None
    gid: int | None = None
    if _number(name):
        uid = int(name)
        for row in _table(passwd):
            if len(row) > 3 and row[2] == name and _number(row[3]):
                gid = int(row[3])
                break
    else:
        for row in _table(passwd):
            if len(row) > 3 and row[0] == name and _number(row[2]) and _number(row[3]):
                uid, gid = int(row[2]), int(row[3])
                break
        if uid is None:
            raise InvalidArgument(f"the image's user {name!r} is not in its /etc/passwd")
    if grp:
        if _number(grp):
            gid = int(grp)
        else:
            found = [row for row in _table(group) if len(row) > 2 and row[0] == grp]
            if not found or not _number(found[0][2]):
                raise InvalidArgument(f"the image's group {grp!r} is not in its /etc/group")
            gid = int(found[0][2])
    return f"{uid}:{gid if gid is not None else 0}"


def _strings(config: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = config.get(key) or ()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"the image's {key} is not a list of strings")
    return tuple(value)


def exposed_ports(config: Mapping[str, Any]) -> tuple[str, ...]:
    """``ExposedPorts`` as ``PORT/PROTO`` entries, sorted (for ``-P``)."""
    ports = config.get("ExposedPorts") or {}
    out = []
    for key in ports if isinstance(ports, (dict, list)) else ():
        number, _, proto = str(key).partition("/")
        if not _number(number) or not 1 <= int(number) <= 65535:
            continue
        out.append(f"{int(number)}/{proto or 'tcp'}")
    return tuple(sorted(set(out)))


def labels(config: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    found = config.get("Labels") or {}
    if not isinstance(found, dict):
        return ()
    return tuple((k, v) for k, v in sorted(found.items())
                 if isinstance(k, str) and isinstance(v, str))


def apply_image(spec: RunSpec, config: Mapping[str, Any], *, rootfs: str, reference: str,
                manifest_digest: str, image_id: str, passwd: str = "",
                group: str = "") -> RunSpec:
    """The spec the container runs with: the user's, completed from the image."""
    # The spec runs entrypoint + args (RunSpec.argv): the user's --entrypoint with the
    # user's arguments only, else the image's Entrypoint with the user's arguments or the
    # image's Cmd (command_line says the same as one list).
    command_line(spec.entrypoint, spec.args, _strings(config, "Entrypoint"),
                 _strings(config, "Cmd"))  # refuses an image with nothing to run
    entrypoint: tuple[str, ...] | None
    if spec.entrypoint is not None:
        entrypoint, args = spec.entrypoint, spec.args
    else:
        image_entrypoint = tuple(_strings(config, "Entrypoint"))
        entrypoint = image_entrypoint or None
        args = spec.args or tuple(_strings(config, "Cmd"))
    env = merge_env(_strings(config, "Env"), spec.env)
    cwd = spec.cwd
    if cwd == DEFAULT_CWD and isinstance(config.get("WorkingDir"), str) and config["WorkingDir"]:
        cwd = config["WorkingDir"]
    user = spec.user
    image_user = config.get("User")
    if user == DEFAULT_USER and isinstance(image_user, str) and image_user:
        user = resolve_user(image_user, passwd, group)
    stop_signal = spec.stop_signal
    if stop_signal == DEFAULT_STOP_SIGNAL and isinstance(config.get("StopSignal"), str):
        stop_signal = parse_signal(config["StopSignal"])
    merged_labels = {**dict(labels(config)), **dict(spec.labels)}  # the user's win
    return replace(spec, rootfs=rootfs, entrypoint=entrypoint, args=args, env=env, cwd=cwd,
                   user=user, stop_signal=stop_signal, image=reference,
                   image_digest=manifest_digest, image_id=image_id,
                   exposed_ports=exposed_ports(config),
                   labels=tuple(sorted(merged_labels.items())))
