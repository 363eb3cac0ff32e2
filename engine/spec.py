"""The run specification: what a user asked a container to be.

It is recorded whole in ``container.created`` so the log alone can rebuild the
bundle, and validated once here so that nothing downstream (bundle writer,
conmon, runc) ever sees a relative rootfs, a bad signal or a negative limit.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from engine.errors import InvalidArgument
from engine.signals import parse_signal

PROTOCOLS = ("tcp", "udp")
_LABEL = r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
_HOSTNAME_RE = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
_CAP_RE = re.compile(r"^CAP_[A-Z_]+$")
# The wire type of each option (from_data refuses any other): a string where a list
# is due would otherwise become a tuple of characters, a bool would pass for an int.
_STR, _BOOL, _LIST, _INT = (str,), (bool,), (list, tuple), (int,)
_OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "rootfs": _STR, "args": _LIST, "env": _LIST, "cwd": _STR, "user": _STR,
    "hostname": _STR, "terminal": _BOOL, "stop_signal": (int, str), "memory": _INT,
    "pids_limit": _INT, "read_only": _BOOL, "ports": _LIST, "auto_remove": _BOOL,
    "no_new_privileges": _BOOL, "cap_add": _LIST,
    # interactive stdio
    "stdin": _BOOL,
}
_WHAT = {_STR: "a string", _BOOL: "true or false", _LIST: "a list", _INT: "an integer",
         (int, str): "a signal name or number"}
_OPTIONAL = frozenset({"memory", "pids_limit"})


_SIZE_RE = re.compile(r"^(\d+)([bkmg]?)$", re.IGNORECASE)
_SIZES = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(text: str) -> int:
    """A size as podman takes it: bytes, or a number with k, m or g (``64m``)."""
    m = _SIZE_RE.match(text.strip())
    if not m:
        raise InvalidArgument(f"invalid size {text!r}: use bytes, or a number with k, m or g")
    return int(m.group(1)) * _SIZES[m.group(2).lower()]


def spec_from_user(options: dict[str, Any]) -> dict[str, Any]:
    """Run options as a program writes them -> the wire form, checked by the same type
    rules as the worker's. Accepts what the CLI accepts: sizes with units (``64m``),
    ports as ``[IP:]HOST:CTR[/PROTO]``, an env map; refuses a command given as one
    string (it would be run character by character)."""
    data = dict(options)
    for key in ("args", "env", "cap_add"):
        if isinstance(data.get(key), str):
            raise InvalidArgument(f"run option {key} must be a list of strings, not one "
                                  f"string: for example ['sh', '-c', 'echo hi']")
        if isinstance(data.get(key), tuple):
            data[key] = list(data[key])
    if isinstance(data.get("env"), dict):
        data["env"] = [f"{k}={v}" for k, v in data["env"].items()]
    if isinstance(data.get("memory"), str):
        data["memory"] = parse_size(data["memory"])
    ports = data.get("ports")
    if isinstance(ports, (list, tuple)):
        data["ports"] = [list(PortMapping.parse(p)) if isinstance(p, str)
                         else list(p) if isinstance(p, (list, tuple)) else p for p in ports]
    RunSpec.from_data(data)  # the worker's type rules, at the publisher's edge
    return data


class PortMapping(NamedTuple):
    """A host port to reserve for the container's lifetime (libpod's bindPorts).

    A NamedTuple so it is both the plain ``[ip, host, ctr, proto]`` of the wire and
    self-describing.
    """

    host_ip: str
    host_port: int
    container_port: int
    protocol: str = "tcp"

    def validate(self) -> PortMapping:
        if self.protocol not in PROTOCOLS:
            raise InvalidArgument(f"unknown protocol {self.protocol!r}: use tcp or udp")
        for port in (self.host_port, self.container_port):
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise InvalidArgument(f"invalid port {port!r}: must be 1-65535")
        return self

    @classmethod
    def parse(cls, text: str) -> PortMapping:
        """Parse podman's ``[IP:]HOST:CTR[/tcp|udp]``."""
        rest, _, proto = text.partition("/")
        parts = rest.rsplit(":", 2)
        try:
            if len(parts) == 3:
                ip, host, ctr = parts
            elif len(parts) == 2:
                ip, (host, ctr) = "", parts
            else:
                raise ValueError
            return cls(ip, int(host), int(ctr), proto or "tcp").validate()
        except ValueError:
            raise InvalidArgument(
                f"invalid port mapping {text!r}: use [IP:]HOST:CONTAINER[/tcp|udp]"
            ) from None


@dataclass(frozen=True, slots=True)
class RunSpec:
    rootfs: str
    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str = "/"
    user: str = "0:0"
    hostname: str = ""
    terminal: bool = False
    stop_signal: int = 15
    memory: int | None = None
    pids_limit: int | None = None
    read_only: bool = False
    ports: tuple[PortMapping, ...] = ()
    auto_remove: bool = False
    no_new_privileges: bool = False
    cap_add: tuple[str, ...] = field(default=())
    stdin: bool = False
    """Keep the process's stdin open (conmon ``-i``) for an attached client (``run -i``)."""

    def __post_init__(self) -> None:
        """Structural checks only (no filesystem): events decoded from the log pass here."""
        if not self.rootfs:
            raise InvalidArgument("run spec: rootfs is required")
        if not self.args:
            raise InvalidArgument("run spec: args must name a command")
        for item in self.env:
            if "=" not in item or item.startswith("="):
                raise InvalidArgument(
                    f"run spec: invalid environment entry {item!r}: use KEY=VALUE")
        if isinstance(self.stop_signal, bool) or not 1 <= self.stop_signal <= 64:
            raise InvalidArgument(f"run spec: stop signal {self.stop_signal} out of range")
        if self.memory is not None and self.memory <= 0:
            raise InvalidArgument("run spec: memory limit must be positive")
        if self.pids_limit is not None and self.pids_limit <= 0:
            raise InvalidArgument("run spec: pids limit must be positive")
        for port in self.ports:
            if port.protocol not in PROTOCOLS:
                raise InvalidArgument(f"run spec: unknown protocol {port.protocol!r}")
            for number in (port.host_port, port.container_port):
                if not 0 <= number <= 65535:
                    raise InvalidArgument(f"run spec: port {number} out of range")

    def validate(self) -> RunSpec:
        """Check everything that can be checked without starting a process."""
        # The process rules are engine.commands', shared with exec; imported here as
        # engine.commands imports engine.events, which imports this module.
        from engine.commands import check_argv, check_cwd, check_env, check_user

        if not isinstance(self.rootfs, str) or not os.path.isabs(self.rootfs):
            raise InvalidArgument(f"rootfs {self.rootfs!r} must be an absolute path")
        if "\0" in self.rootfs or not os.path.isdir(self.rootfs):
            raise InvalidArgument(f"rootfs {self.rootfs!r} is not an existing directory")
        check_argv(self.args, "the container command")
        check_env(self.env)
        check_cwd(self.cwd)
        check_user(self.user)
        if self.hostname and not _HOSTNAME_RE.fullmatch(self.hostname):
            raise InvalidArgument(f"invalid hostname {self.hostname!r}")
        parse_signal(self.stop_signal)
        if self.memory is not None and (not isinstance(self.memory, int)
                                        or self.memory < 4 * 1024 * 1024):
            raise InvalidArgument(f"invalid memory limit {self.memory!r}: at least 4 MiB, in bytes")
        if self.pids_limit is not None and (not isinstance(self.pids_limit, int)
                                            or self.pids_limit < 1):
            raise InvalidArgument(f"invalid pids limit {self.pids_limit!r}: must be positive")
        seen: set[tuple[str, int]] = set()
        for port in self.ports:
            port.validate()
            if (port.protocol, port.host_port) in seen:
                raise InvalidArgument(f"host port {port.host_port}/{port.protocol} is given twice")
            seen.add((port.protocol, port.host_port))
        for cap in self.cap_add:
            if not isinstance(cap, str) or not _CAP_RE.fullmatch(cap):
                raise InvalidArgument(f"invalid capability {cap!r}: use CAP_NAME")
        return self

    @property
    def uid_gid(self) -> tuple[int, int]:
        uid, _, gid = self.user.partition(":")
        return int(uid), int(gid or 0)

    def to_data(self) -> dict[str, Any]:
        data = {
            "rootfs": self.rootfs,
            "args": list(self.args),
            "env": list(self.env),
            "cwd": self.cwd,
            "user": self.user,
            "hostname": self.hostname,
            "terminal": self.terminal,
            "stop_signal": self.stop_signal,
            "memory": self.memory,
            "pids_limit": self.pids_limit,
            "read_only": self.read_only,
            "ports": [[p.host_ip, p.host_port, p.container_port, p.protocol] for p in self.ports],
            "auto_remove": self.auto_remove,
            "no_new_privileges": self.no_new_privileges,
            "cap_add": list(self.cap_add),
        }
        if self.stdin:  # only when set: the records of earlier specs stay byte for byte
            data["stdin"] = True
        return data

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> RunSpec:
        """Build from a wire or stored map; unknown keys are refused, not ignored."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise InvalidArgument(f"unknown run option(s): {', '.join(sorted(unknown))}")
        for key, value in data.items():
            if value is None and key in _OPTIONAL:
                continue
            if (not isinstance(value, _OPTION_TYPES[key])
                    or (isinstance(value, bool) and bool not in _OPTION_TYPES[key])):
                raise InvalidArgument(f"invalid run option {key} {value!r}: must be "
                                      f"{_WHAT[_OPTION_TYPES[key]]}")
        for port in data.get("ports") or ():
            if (not isinstance(port, (list, tuple)) or len(port) != 4
                    or not isinstance(port[0], str) or not isinstance(port[3], str)
                    or any(isinstance(n, bool) or not isinstance(n, int) for n in port[1:3])):
                raise InvalidArgument(f"invalid port mapping {port!r}: use "
                                      "[host ip, host port, container port, protocol]")
        try:
            kwargs: dict[str, Any] = dict(data)
            kwargs["args"] = tuple(data.get("args") or ())
            kwargs["env"] = tuple(data.get("env") or ())
            kwargs["cap_add"] = tuple(data.get("cap_add") or ())
            kwargs["ports"] = tuple(
                PortMapping(str(p[0]), int(p[1]), int(p[2]), str(p[3]))
                for p in data.get("ports") or ()
            )
            if "stop_signal" in data:
                kwargs["stop_signal"] = parse_signal(data["stop_signal"])
            return cls(**kwargs)
        except (TypeError, ValueError, IndexError) as exc:
            raise InvalidArgument(f"invalid run specification: {exc}") from None
