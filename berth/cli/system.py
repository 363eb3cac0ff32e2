"""``berth system``: the engine as a whole (``status``)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from bus.client import Client
from engine import command_types as c
from engine.errors import BerthError

if TYPE_CHECKING:
    from berth.cli import AddCommand

COMMANDS = ("system",)


def cmd_system_status(args: argparse.Namespace, client: Client) -> int:
    """Exit 0 when the broker, every connected worker and the store answer.

    The broker answers a ping itself; each node's worker is asked for its
    containers, which it reads from the store, so one answer proves both."""
    health = client.ping()
    nodes = sorted({str(w["node"]) for w in health.get("workers", [])})
    report: dict[str, Any] = {"broker": "ok", "workers": {}, "ok": bool(nodes)}
    for node in nodes:
        try:
            client.send(c.PS, None, node, all=False)
            report["workers"][node] = "ok"
        except BerthError as exc:
            report["workers"][node] = str(exc)
            report["ok"] = False
    if args.format == "json":
        print(json.dumps(report, sort_keys=True))
    else:
        print("broker: ok")
        if not nodes:
            print("workers: none connected")
        for node in nodes:
            answer = report["workers"][node]
            print(f"worker {node}: {'ok (store answers)' if answer == 'ok' else answer}")
    return 0 if report["ok"] else 1


def add_commands(add: AddCommand) -> None:
    p = add("system", cmd_system_status, "the engine as a whole")
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    s = sub.add_parser("status", help="exit 0 when the broker, the workers and the store "
                                      "answer; say which does not otherwise")
    s.add_argument("--format", choices=["text", "json"], default="text",
                   help="text (default) or one JSON object")
