"""``/etc/berth/berth.toml``: settings that are otherwise environment variables.

Each key stands for one ``BERTH_*`` variable (the table ``KEYS``); a variable set in
the environment wins over the file, so a unit file or a shell can override one
setting without editing it. The file is read once, at the start of every ``berth``
command, and only when it exists (``BERTH_CONFIG`` names another path): a
client's start-up pays one ``stat`` for it. An unknown section or key, or a value
that is not a string or number, is one sentence and nothing runs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Final

from engine.errors import InvalidArgument

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
        with open(path, "rb") as f:
            raw = f.read(MAX_SIZE + 1)
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
