"""Logging of berth's long-running processes (``up``, ``broker``, ``worker``).

One format for all of them, berth's own messages from INFO, and libraries that talk
at INFO (Alembic announces every migration step) kept to warnings, so an
operator's log says what berth did.
"""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
QUIET = ("alembic",)
"""Libraries whose INFO lines are noise in berth's log."""


def configure(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format=FORMAT)
    for name in QUIET:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
