"""``/etc/berth/berth.toml``: settings that are otherwise environment variables.

Each key stands for one ``BERTH_*`` variable (the table ``KEYS``); a variable set in
the environment wins over the file, so a unit file or a shell can override one
setting without editing it. The file is read once, at the start of every ``berth``
command, and only when it exists (``BERTH_CONFIG`` names another path): a
client's start-up pays an ``lstat`` or two for it. An unknown section or key, or a value
that is not a string or number, is one sentence and nothing runs.

The file names the database, key files and ``BERTH_CRIU`` (a program the worker runs
as root), so it is obeyed only if no one but root or the user running berth can
change it: it must be a regular file owned by root or by that user, not writable by
its group or others, and every directory its path goes through (symbolic links
followed, each link owned by root or that user) owned by root or that user and not
writable by group or others unless sticky, as ``/tmp`` is (OpenSSH's StrictModes
judges its files so). Otherwise it is one sentence and nothing runs.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Mapping
from typing import Final, NoReturn

from engine.errors import InvalidArgument, PermissionDenied

DEFAULT_PATH: Final = "/etc/berth/berth.toml"

KEYS: Final[Mapping[str, Mapping[str, str]]] = {
    "engine": {"root": "BERTH_ROOT", "run": "BERTH_RUN", "node": "BERTH_NODE",
               "criu": "BERTH_CRIU", "actor": "BERTH_ACTOR"},
    "store": {"url": "BERTH_DB", "retry_seconds": "BERTH_STORE_RETRY_SECONDS"},
    "bus": {"endpoint": "BERTH_BUS", "workers": "BERTH_BUS_WORKERS",
            "events": "BERTH_BUS_EVENTS", "key": "BERTH_KEY", "server_key": "BERTH_SERVER_KEY",
            "broker_key": "BERTH_BROKER_KEY",
            "authorized_workers": "BERTH_AUTHORIZED_WORKERS",
            "authorized_publishers": "BERTH_AUTHORIZED_PUBLISHERS",
            "authorized_auditors": "BERTH_AUTHORIZED_AUDITORS",
            "stream_bind": "BERTH_STREAM_BIND"},
    "audit": {"key": "BERTH_AUDIT_KEY", "interval": "BERTH_AUDIT_INTERVAL"},
    "log": {"level": "BERTH_LOG_LEVEL", "format": "BERTH_LOG_FORMAT", "file": "BERTH_LOG_FILE",
            "max_bytes": "BERTH_LOG_MAX_BYTES", "backups": "BERTH_LOG_BACKUPS"},
    "metrics": {"address": "BERTH_METRICS"},
    "docker": {"socket": "BERTH_DOCKER_SOCKET"},
    "images": {"max_layer": "BERTH_IMAGE_MAX_LAYER", "max_size": "BERTH_IMAGE_MAX_SIZE",
               "max_ratio": "BERTH_IMAGE_MAX_RATIO"},
}
"""Section -> key -> the environment variable it sets (see docs/operations.md)."""

MAX_SIZE: Final = 64 * 1024


def settings(text: str, path: str) -> dict[str, str]:
    """The variables a file's text sets; a defect is one sentence naming the file."""
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidArgument(f"{path} is not valid TOML: {exc}") from None
    found: dict[str, str] = {}
    for section, table in data.items():
        known = KEYS.get(section)
        if known is None:
            raise InvalidArgument(f"{path}: unknown section [{section}] (known: "
                                  f"{', '.join(KEYS)})")
        if not isinstance(table, dict):
            raise InvalidArgument(f"{path}: {section} must be a [{section}] table")
        for key, value in table.items():
            variable = known.get(key)
            if variable is None:
                raise InvalidArgument(f"{path}: unknown key {key!r} in [{section}] (known: "
                                      f"{', '.join(known)})")
            found[variable] = _text(value, f"{path}: [{section}] {key}")
    return found


def _text(value: object, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise InvalidArgument(f"{what} must be a string or a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidArgument(f"{what} must be a finite number")
    text = str(value)
    if "\0" in text or not text:
        raise InvalidArgument(f"{what} must not be empty or hold a NUL byte")
    return text


def apply(environ: dict[str, str] | None = None) -> str | None:
    """Set the file's variables that the environment does not set; the path read,
    or None when there is no file."""
    env = os.environ if environ is None else environ
    path = env.get("BERTH_CONFIG") or DEFAULT_PATH
    try:
        raw = _read_trusted(path)
    except FileNotFoundError:
        if env.get("BERTH_CONFIG"):
            raise InvalidArgument(f"BERTH_CONFIG names {path}, which does not exist") from None
        return None
    except OSError as exc:
        raise InvalidArgument(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_SIZE:
        raise InvalidArgument(f"{path} is larger than {MAX_SIZE} bytes; it is not a berth "
                              "configuration")
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise InvalidArgument(f"{path} is not UTF-8 text") from None
    for variable, value in settings(text, path).items():
        env.setdefault(variable, value)
    return path


MAX_LINKS: Final = 40  # as the kernel's own limit on symbolic links in one lookup


def _read_trusted(path: str) -> bytes:
    """The first MAX_SIZE + 1 bytes of ``path``, once it is known that only root or
    this user can change it (PermissionDenied, one sentence, if not)."""
    uid = os.geteuid()
    real, directories = _resolve(path, uid)
    for directory in directories:
        st = os.stat(directory)
        if st.st_uid not in (0, uid):
            _untrusted(path, f"is reached through {directory}, which belongs to uid "
                             f"{st.st_uid}")
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            _untrusted(path, f"is reached through {directory}, which its group or others "
                             f"can write to (mode {stat.S_IMODE(st.st_mode):04o})")
    fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise InvalidArgument(f"{path} is not a regular file")
        if st.st_uid not in (0, uid):
            _untrusted(path, f"belongs to uid {st.st_uid}")
        if st.st_mode & 0o022:
            _untrusted(path, "can be written by its group or by others (mode "
                             f"{stat.S_IMODE(st.st_mode):04o}; chmod go-w {path})")
        return f.read(MAX_SIZE + 1)


def _untrusted(path: str, why: str) -> NoReturn:
    raise PermissionDenied(f"{path} {why}: berth obeys a configuration file only if no one "
                           "but root or you can change it")


def _resolve(path: str, uid: int) -> tuple[str, list[str]]:
    """The file ``path`` names and every directory looked in to find it, following
    symbolic links as the kernel does; a link not owned by root or ``uid`` is not
    followed (its owner could point it elsewhere at any time)."""
    pending = [p for p in reversed(os.path.abspath(path).split("/")) if p]
    current = "/"
    directories: list[str] = []
    links = 0
    while pending:
        part = pending.pop()
        if part == ".":
            continue
        if part == "..":
            current = os.path.dirname(current)
            continue
        if current not in directories:
            directories.append(current)
        candidate = os.path.join(current, part)
        st = os.lstat(candidate)  # FileNotFoundError: no such file
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > MAX_LINKS:
                raise InvalidArgument(f"{path}: too many levels of symbolic links")
            if st.st_uid not in (0, uid):
                _untrusted(path, f"is reached through the symbolic link {candidate}, which "
                                 f"belongs to uid {st.st_uid}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                current = "/"
            pending.extend(p for p in reversed(target.split("/")) if p)
            continue
        current = candidate
    return current, directories
