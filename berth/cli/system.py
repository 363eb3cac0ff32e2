"""The engine as a whole, podman's way: ``container prune``, ``system prune``,
``system df``.

Prune removes what is stopped (exited or never started) and nothing that runs; each
removal is an ordinary ``container.remove`` command, so the log tells who pruned what.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from bus.client import Client
from engine.errors import BerthError, Unavailable

if TYPE_CHECKING:
    from berth.cli import AddCommand

COMMANDS = ("container", "system")

STOPPED = ("created", "exited")


def _confirmed(question: str, force: bool) -> bool:
    if force:
        return True
    print(f"{question} Are you sure you want to continue? [y/N] ", end="", flush=True)
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


def prune_containers(client: Client) -> tuple[list[str], bool]:
    """Remove every stopped container: the ids removed, and whether any removal failed."""
    removed: list[str] = []
    failed = False
    for row in client.ps(all=True):
        if row["state"] not in STOPPED:
            continue
        try:
            client.remove(row["id"])
        except Unavailable:
            raise
        except BerthError as exc:  # started or removed meanwhile: say so, go on
            print(f"berth: {exc}", file=sys.stderr)
            failed = True
            continue
        removed.append(str(row["id"]))
    return removed, failed


def cmd_container(args: argparse.Namespace, client: Client) -> int:
    if not _confirmed("WARNING! This will remove all stopped containers.", args.force):
        return 0
    removed, failed = prune_containers(client)
    for cid in removed:
        print(cid)
    return 125 if failed else 0


def cmd_system(args: argparse.Namespace, client: Client) -> int:
    if args.action == "df":
        return _df(client, args.verbose)
    if not _confirmed("WARNING! This will remove all stopped containers.", args.force):
        return 0
    removed, failed = prune_containers(client)
    print("Deleted Containers")
    for cid in removed:
        print(cid)
    return 125 if failed else 0


def _df(client: Client, verbose: bool) -> int:
    """Counts per kind, as podman's ``system df`` (the root filesystems are the user's
    directories, not the engine's, so their size is not the engine's to reclaim)."""
    rows = client.ps(all=True)
    active = [r for r in rows if r["state"] in ("running", "paused")]
    table = [["TYPE", "TOTAL", "ACTIVE", "RECLAIMABLE"],
             ["Containers", str(len(rows)), str(len(active)), str(len(rows) - len(active))]]
    _print_table(table)
    if verbose:
        print()
        detail = [["CONTAINER ID", "NAME", "STATE", "ROOTFS"]]
        detail += [[str(r["id"])[:12], str(r["name"]), str(r["state"]), str(r.get("rootfs"))]
                   for r in rows]
        _print_table(detail)
    return 0


def _print_table(table: list[list[Any]]) -> None:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def add_commands(add: AddCommand) -> None:
    p = add("container", cmd_container, "container management: prune")
    p.add_argument("action", choices=["prune"], help="prune: remove all stopped containers")
    p.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    p = add("system", cmd_system, "the engine as a whole: prune, df")
    p.add_argument("action", choices=["prune", "df"],
                   help="prune: remove all stopped containers; df: what the engine holds")
    p.add_argument("-f", "--force", action="store_true",
                   help="prune: do not ask for confirmation")
    p.add_argument("-v", "--verbose", action="store_true", help="df: one line per container")
