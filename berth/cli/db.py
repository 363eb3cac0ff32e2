"""``berth db``: database maintenance, run against the store directly (no broker)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from berth.cli import AddCommand

COMMANDS = ("db",)


def cmd_db(args: argparse.Namespace) -> int:
    from migrations.runner import current_revision, upgrade
    from workers.worker import WorkerConfig

    url = WorkerConfig().database
    upgrade(url)
    print(f"database at revision {current_revision(url)}")
    return 0


def add_commands(add: AddCommand) -> None:
    p = add("db", cmd_db, "database maintenance", server=True)
    p.add_argument("action", choices=["upgrade"])
