"""Volume commands: ``volume create|ls|inspect|rm|prune``, each a call of the client."""

from __future__ import annotations

import argparse
import json
import os
from typing import TYPE_CHECKING, Any

from berth.cli.table import print_table
from bus.client import Client
from engine.errors import InvalidArgument

if TYPE_CHECKING:
    from berth.cli import AddCommand

COMMANDS = ("volume",)


def _labels(items: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key:
            raise InvalidArgument(f"invalid label {item!r}: use KEY=VALUE")
        labels[key] = value if sep else ""
    return labels


def cmd_volume(args: argparse.Namespace, client: Client) -> int:
    match args.action:
        case "create":
            # podman names a volume created without a name by 64 random hex digits
            name = args.name if args.name is not None else os.urandom(32).hex()
            print(client.volume_create(name, labels=_labels(args.label),
                                       node=args.node)["name"])
        case "ls":
            _print_volumes(client.volumes(), args.format == "json")
        case "inspect":
            print(json.dumps([client.volume_inspect(n) for n in args.names], indent=2,
                             sort_keys=True))
        case "exists":
            from berth.cli.exists import exists

            return exists(lambda: client.volume_inspect(args.name))
        case "rm":
            if args.all == bool(args.names):
                raise InvalidArgument("give volume names or --all, one of the two")
            names = ([str(v["name"]) for v in client.volumes()] if args.all
                     else list(args.names))
            if not names:
                return 0
            for name in client.volume_remove(*names, force=args.force):
                print(name)
        case _:  # prune
            for name in client.volume_prune():
                print(name)
    return 0


def _print_volumes(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        for row in rows:
            print(json.dumps(row, sort_keys=True))
        return
    table: list[list[str]] = [["DRIVER", "VOLUME NAME", "NODE"]]
    table += [[str(r.get("driver", "local")), str(r["name"]), str(r.get("node", ""))]
              for r in rows]
    print_table(table)


def add_commands(add: AddCommand) -> None:
    p = add("volume", cmd_volume, "manage named volumes")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = actions.add_parser("create", help="create a named volume")
    q.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="a label (repeatable)")
    q.add_argument("--node", help="the node that keeps the volume (default: any worker)")
    q.add_argument("name", metavar="NAME", nargs="?",
                   help="the volume's name (default: 64 random hex digits, as podman's)")
    q = actions.add_parser("ls", help="list volumes")
    q.add_argument("--format", choices=["table", "json"], default="table",
                   help="table (default) or one JSON array")
    q = actions.add_parser("inspect", help="volumes as JSON")
    q.add_argument("names", nargs="+", metavar="NAME", help="volumes to show")
    q = actions.add_parser("rm", help="remove volumes no container uses")
    q.add_argument("-f", "--force", action="store_true", help="a missing volume is no error")
    q.add_argument("-a", "--all", action="store_true", help="every volume no container uses")
    q.add_argument("names", nargs="*", metavar="NAME", help="volumes to remove")
    actions.add_parser("prune", help="remove every volume no container uses")
    q = actions.add_parser("exists", help="exit 0 if the volume exists, 1 if not")
    q.add_argument("name", metavar="NAME", help="the volume's name")
