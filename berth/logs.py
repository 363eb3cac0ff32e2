"""Logging of berth's long-running processes (``up``, ``broker``, ``worker``).

One format for all of them, berth's own messages from INFO, and libraries that talk
at INFO (Alembic announces every migration step) kept to warnings, so an
operator's log says what berth did. Settable without code:

- ``BERTH_LOG_LEVEL``: DEBUG, INFO (default), WARNING, ERROR;
- ``BERTH_LOG_FORMAT``: ``text`` (default) or ``json``, one object a line, for a log
  shipper;
- ``BERTH_LOG_FILE``: write there instead of stderr, rotated at
  ``BERTH_LOG_MAX_BYTES`` (10 MiB) keeping ``BERTH_LOG_BACKUPS`` (5) old files, so a
  long-running engine's log never fills the disk (``berth up -d`` logs to
  ``$BERTH_ROOT/berth.log`` this way).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
from dataclasses import dataclass
from datetime import UTC, datetime

from engine.errors import InvalidArgument

FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
QUIET = ("alembic",)
"""Libraries whose INFO lines are noise in berth's log."""
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUPS = 5


class JSONFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message[, exc]."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _setting(name: str, default: str) -> str:
    return os.environ.get(name) or default


def _count(name: str, default: int, minimum: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < minimum:
        raise InvalidArgument(f"{name} must be a whole number of at least {minimum}, "
                              f"got {raw!r}")
    return int(raw)


@dataclass(frozen=True)
class Settings:
    level: str
    form: str
    path: str | None
    max_bytes: int
    backups: int


def settings_from_env() -> Settings:
    """What the environment asks for, checked; a bad setting is one sentence."""
    level = _setting("BERTH_LOG_LEVEL", "INFO").upper()
    if level not in LEVELS:
        raise InvalidArgument(f"BERTH_LOG_LEVEL must be one of {', '.join(LEVELS)}, "
                              f"got {os.environ.get('BERTH_LOG_LEVEL')!r}")
    form = _setting("BERTH_LOG_FORMAT", "text").lower()
    if form not in ("text", "json"):
        raise InvalidArgument(f"BERTH_LOG_FORMAT must be text or json, "
                              f"got {os.environ.get('BERTH_LOG_FORMAT')!r}")
    path = os.environ.get("BERTH_LOG_FILE") or None
    if path is not None and ("\0" in path or not os.path.isabs(path)):
        raise InvalidArgument(f"BERTH_LOG_FILE must be an absolute path, got {path!r}")
    return Settings(level, form, path, _count("BERTH_LOG_MAX_BYTES", DEFAULT_MAX_BYTES, 4096),
                    _count("BERTH_LOG_BACKUPS", DEFAULT_BACKUPS, 1))


def handler_from_env() -> logging.Handler:
    """The handler the environment asks for."""
    settings = settings_from_env()
    handler: logging.Handler
    if settings.path is not None:
        handler = logging.handlers.RotatingFileHandler(
            settings.path, maxBytes=settings.max_bytes, backupCount=settings.backups)
    else:
        handler = logging.StreamHandler()
    handler.setLevel(settings.level)
    handler.setFormatter(JSONFormatter() if settings.form == "json"
                         else logging.Formatter(FORMAT))
    return handler


def configure() -> None:
    handler = handler_from_env()
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(handler.level)
    for name in QUIET:
        logging.getLogger(name).setLevel(max(handler.level, logging.WARNING))
