"""What a user asks to mount into a container, parsed and checked once.

Three forms reach the engine, as docker and podman take them: ``-v SRC:DST[:OPTS]``,
``--mount type=...,source=...,target=...`` and ``--tmpfs DST[:OPTS]``. All become one
typed :class:`Mount`, recorded in the run spec (so ``container.created`` says what
was mounted), and every rule lives here: a bad mount is refused with one sentence at
the client's edge and again at the worker's, before a volume, a bundle or an event
exists. Only ``check_host_paths`` looks at the filesystem (the worker's, where the
host paths must exist); everything else is pure.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from engine.errors import InvalidArgument

BIND: Final = "bind"
VOLUME: Final = "volume"
TMPFS: Final = "tmpfs"
MOUNT_TYPES: Final = (BIND, VOLUME, TMPFS)

VOLUME_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
"""docker's rule for volume names: no path separator, no colon, nothing hidden."""
FORBIDDEN_TARGETS: Final = ("/", "/proc", "/sys", "/dev")
"""Targets the runtime owns; anything under /proc and /sys is theirs too (a mount
there could unmask what the runtime masks)."""
_OWNED_TREES: Final = ("/proc/", "/sys/")
MAX_TARGET: Final = 4096
_SIZE_RE: Final = re.compile(r"^(\d+)([bkmg]?)$", re.IGNORECASE)
_SIZES: Final = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_WIRE_KEYS: Final = frozenset({"type", "source", "target", "readonly", "size", "mode"})


def validate_volume_name(name: object) -> str:
    """A volume name: letters, digits, ``_.-``, starting with a letter or digit."""
    if not isinstance(name, str) or not VOLUME_NAME_RE.fullmatch(name):
        shown = name if isinstance(name, str) else type(name).__name__
        raise InvalidArgument(
            f"invalid volume name {shown!r}: use up to 128 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit (no '/'); a host path must be absolute")
    return name


def _size(text: str, what: str) -> int:
    m = _SIZE_RE.match(text.strip())
    if not m or int(m.group(1)) <= 0:
        raise InvalidArgument(f"invalid {what} {text!r}: use a positive number of bytes, "
                              "or a number with k, m or g")
    return int(m.group(1)) * _SIZES[m.group(2).lower()]


def _mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o7777:
        raise InvalidArgument(f"invalid tmpfs mode {text!r}: use octal, for example 1777")
    return mode


def check_target(target: object) -> str:
    """An absolute path, normalised, that is none of the runtime's own mounts."""
    if not isinstance(target, str) or not target or "\0" in target:
        raise InvalidArgument(f"invalid mount target {target!r}: use an absolute path "
                              "inside the container")
    if not target.startswith("/"):
        raise InvalidArgument(f"mount target {target!r} is not an absolute path")
    if len(target) > MAX_TARGET:
        raise InvalidArgument(f"mount target is too long (at most {MAX_TARGET} characters)")
    normal = os.path.normpath(target)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    if normal in FORBIDDEN_TARGETS or normal.startswith(_OWNED_TREES):
        raise InvalidArgument(f"cannot mount over {normal}: the runtime provides it")
    return normal


@dataclass(frozen=True, slots=True)
class Mount:
    """One mount of a container. ``source``: a host path (bind), a volume name
    (volume) or empty (tmpfs); ``size`` and ``mode`` are tmpfs-only."""

    type: str
    target: str
    source: str = ""
    readonly: bool = False
    size: int | None = None
    mode: int | None = None

    def __post_init__(self) -> None:
        """Structural checks only (no filesystem): mounts decoded from the log pass here."""
        if self.type not in MOUNT_TYPES:
            raise InvalidArgument(f"unknown mount type {self.type!r}: use bind, volume or tmpfs")
        object.__setattr__(self, "target", check_target(self.target))
        if not isinstance(self.readonly, bool):
            raise InvalidArgument(f"invalid readonly {self.readonly!r}: must be true or false")
        if self.type == BIND:
            if not isinstance(self.source, str) or "\0" in self.source or not self.source:
                raise InvalidArgument("a bind mount needs a host path as its source")
            if not os.path.isabs(self.source):
                raise InvalidArgument(f"bind mount source {self.source!r} is not an absolute "
                                      "path: give the host path in full")
        elif self.type == VOLUME:
            validate_volume_name(self.source)
        elif self.source:
            raise InvalidArgument("a tmpfs mount takes no source")
        if self.type != TMPFS and (self.size is not None or self.mode is not None):
            raise InvalidArgument(f"size and mode are tmpfs options, not {self.type} options")
        if self.size is not None and (isinstance(self.size, bool)
                                      or not isinstance(self.size, int) or self.size <= 0):
            raise InvalidArgument(f"invalid tmpfs size {self.size!r}: must be positive bytes")
        if self.mode is not None and (isinstance(self.mode, bool)
                                      or not isinstance(self.mode, int)
                                      or not 0 <= self.mode <= 0o7777):
            raise InvalidArgument(f"invalid tmpfs mode {self.mode!r}")

    def to_data(self) -> dict[str, Any]:
        return {"type": self.type, "source": self.source, "target": self.target,
                "readonly": self.readonly, "size": self.size, "mode": self.mode}

    @classmethod
    def from_data(cls, data: object) -> Mount:
        """The wire or stored map; unknown keys are refused, not ignored."""
        if not isinstance(data, Mapping):
            raise InvalidArgument(f"invalid mount {data!r}: expected a map with type, "
                                  "source and target")
        unknown = set(data) - _WIRE_KEYS
        if unknown:
            names = ", ".join(sorted(map(str, unknown)))
            raise InvalidArgument(f"unknown mount option(s): {names}")
        if "\0" in str(data.get("source", "")):
            raise InvalidArgument("a mount source contains a NUL byte")
        return cls(type=data.get("type", ""), target=data.get("target", ""),
                   source=data.get("source") or "", readonly=data.get("readonly", False),
                   size=data.get("size"), mode=data.get("mode"))


# --------------------------------------------------------------------------- the CLI's forms


def _readonly(options: Sequence[str], text: str) -> bool:
    """``ro``/``rw``, at most one of them."""
    modes = [o for o in options if o in ("ro", "rw")]
    unknown = [o for o in options if o not in ("ro", "rw")]
    if unknown:
        raise InvalidArgument(f"unknown volume option {unknown[0]!r} in {text!r}: use ro or rw")
    if len(modes) > 1:
        raise InvalidArgument(f"volume options in {text!r} name ro or rw more than once")
    return modes == ["ro"]


def parse_volume(text: str) -> Mount:
    """docker's ``-v HOST_PATH:CTR_PATH[:ro|rw]`` or ``-v NAME:CTR_PATH[:ro|rw]``."""
    if not isinstance(text, str) or "\0" in text:
        raise InvalidArgument("a volume contains a NUL byte")
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise InvalidArgument(f"invalid volume {text!r}: use HOST_PATH:CTR_PATH[:ro|rw] or "
                              "NAME:CTR_PATH[:ro|rw]")
    source, target = parts[0], parts[1]
    readonly = _readonly(parts[2].split(",") if len(parts) == 3 else [], text)
    if source.startswith("/"):
        return Mount(BIND, target, source, readonly)
    if source.startswith(".") or "/" in source:
        raise InvalidArgument(f"bind mount source {source!r} is not an absolute path: give the "
                              "host path in full")
    return Mount(VOLUME, target, validate_volume_name(source), readonly)


def _flag_value(key: str, value: str | None, text: str) -> bool:
    if value is None or value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise InvalidArgument(f"invalid {key}={value} in {text!r}: use true or false")


def parse_mount(text: str) -> Mount:
    """docker's ``--mount type=bind|volume|tmpfs,source=...,target=...,readonly``."""
    if not isinstance(text, str) or "\0" in text:
        raise InvalidArgument("a mount contains a NUL byte")
    fields: dict[str, str | None] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        key = {"src": "source", "dst": "target", "destination": "target", "ro": "readonly"
               }.get(key, key)
        if key not in ("type", "source", "target", "readonly", "tmpfs-size", "tmpfs-mode"):
            raise InvalidArgument(f"unknown mount option {item!r} in {text!r}: use type, source, "
                                  "target, readonly, tmpfs-size or tmpfs-mode")
        if key in fields:
            raise InvalidArgument(f"mount option {key} is given twice in {text!r}")
        if key != "readonly" and not (sep and value):
            raise InvalidArgument(f"mount option {key} needs a value in {text!r}")
        fields[key] = value if sep else None
    kind = fields.get("type") or VOLUME
    if "target" not in fields:
        raise InvalidArgument(f"mount {text!r} has no target: add target=PATH")
    readonly = "readonly" in fields and _flag_value("readonly", fields["readonly"], text)
    size = fields.get("tmpfs-size")
    mode = fields.get("tmpfs-mode")
    if kind != TMPFS and (size or mode):
        raise InvalidArgument(f"tmpfs-size and tmpfs-mode are tmpfs options, in {text!r}")
    if kind in (BIND, VOLUME) and not fields.get("source"):
        raise InvalidArgument(f"a {kind} mount needs a source, in {text!r}")
    return Mount(kind, fields["target"] or "", fields.get("source") or "", readonly,
                 _size(size, "tmpfs size") if size else None, _mode(mode) if mode else None)


def parse_tmpfs(text: str) -> Mount:
    """podman's ``--tmpfs PATH[:size=N,mode=OCTAL,ro|rw]``."""
    if not isinstance(text, str) or "\0" in text:
        raise InvalidArgument("a tmpfs contains a NUL byte")
    target, _, opts = text.partition(":")
    size: int | None = None
    mode: int | None = None
    modes: list[str] = []
    for item in filter(None, opts.split(",")):
        key, sep, value = item.partition("=")
        if key == "size" and sep and size is None:
            size = _size(value, "tmpfs size")
        elif key == "mode" and sep and mode is None:
            mode = _mode(value)
        elif item in ("ro", "rw"):
            modes.append(item)
        else:
            raise InvalidArgument(f"unknown or repeated tmpfs option {item!r} in {text!r}: use "
                                  "size=N, mode=OCTAL, ro or rw")
    if len(modes) > 1:
        raise InvalidArgument(f"tmpfs options in {text!r} name ro or rw more than once")
    return Mount(TMPFS, target, "", modes == ["ro"], size, mode)


# --------------------------------------------------------------------------- a spec's mounts


def check_mounts(mounts: Iterable[Mount]) -> None:
    """No target mounted twice: the second would hide the first without a word."""
    seen: set[str] = set()
    for mount in mounts:
        if mount.target in seen:
            raise InvalidArgument(f"mount target {mount.target} is given twice")
        seen.add(mount.target)


def check_host_paths(mounts: Iterable[Mount]) -> None:
    """Each bind mount's host path exists (on the worker, where it is mounted)."""
    for mount in mounts:
        if mount.type == BIND and not os.path.exists(mount.source):
            raise InvalidArgument(f"bind mount source {mount.source} does not exist on this host")


def mounts_from_user(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The wire form of every mount a program or the CLI gave: ``volumes`` (-v strings),
    ``mount`` (--mount strings), ``tmpfs`` (--tmpfs strings) and ``mounts`` (maps)."""
    out: list[dict[str, Any]] = []
    for key, parse in (("volumes", parse_volume), ("mount", parse_mount),
                       ("tmpfs", parse_tmpfs)):
        items = data.get(key) or []
        if isinstance(items, str) or not isinstance(items, (list, tuple)):
            raise InvalidArgument(f"run option {key} must be a list of strings")
        out += [parse(item).to_data() for item in items]
    given = data.get("mounts") or []
    if not isinstance(given, (list, tuple)):
        raise InvalidArgument("run option mounts must be a list")
    out += [m.to_data() if isinstance(m, Mount) else Mount.from_data(m).to_data()
            for m in given]
    return out


def volume_names(mounts: Iterable[Mount]) -> list[str]:
    """The named volumes among ``mounts``, each once, in a fixed order (lock order)."""
    return sorted({m.source for m in mounts if m.type == VOLUME})
