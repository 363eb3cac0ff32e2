"""The engine as a whole, podman's way: ``container prune``, ``system prune``,
``system df``, ``info``, ``version``; and the CLI about itself: ``help COMMAND``,
``completion SHELL``.

Prune removes what is stopped (exited or never started) and nothing that runs; each
removal is an ordinary ``container.remove`` command, so the log tells who pruned what.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from berth.cli.table import print_table
from bus.client import Client
from engine import command_types as c
from engine.errors import BerthError, InvalidArgument, Unavailable

if TYPE_CHECKING:
    from berth.cli import AddCommand

COMMANDS = ("container", "system", "info", "version", "help", "completion")

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
    """``container prune`` and ``container exists``; podman's other ``container VERB``
    forms are rewritten to the verbs themselves before parsing (``berth.cli.forms``)."""
    if args.action == "exists":
        from berth.cli.exists import exists

        if len(args.names) != 1:
            raise InvalidArgument("container exists takes exactly one container")
        return exists(lambda: client.inspect(args.names[0]))
    if args.names:
        raise InvalidArgument("container prune takes no container names")
    if not _confirmed("WARNING! This will remove all stopped containers.", args.force):
        return 0
    removed, failed = prune_containers(client)
    for cid in removed:
        print(cid)
    return 125 if failed else 0


def cmd_system(args: argparse.Namespace, client: Client) -> int:
    if args.action == "df":
        return _df(client, args.verbose)
    if args.action == "status":
        return _status(client, args.format)
    if not _confirmed("WARNING! This will remove all stopped containers.", args.force):
        return 0
    removed, failed = prune_containers(client)
    print("Deleted Containers")
    for cid in removed:
        print(cid)
    return 125 if failed else 0


def _status(client: Client, form: str) -> int:
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
    if form == "json":
        print(json.dumps(report, sort_keys=True))
    else:
        print("broker: ok")
        if not nodes:
            print("workers: none connected")
        for node in nodes:
            answer = report["workers"][node]
            print(f"worker {node}: {'ok (store answers)' if answer == 'ok' else answer}")
    return 0 if report["ok"] else 1


def _df(client: Client, verbose: bool) -> int:
    """Counts per kind, as podman's ``system df`` (the root filesystems are the user's
    directories, not the engine's, so their size is not the engine's to reclaim)."""
    rows = client.ps(all=True)
    active = [r for r in rows if r["state"] in ("running", "paused")]
    table = [["TYPE", "TOTAL", "ACTIVE", "RECLAIMABLE"],
             ["Containers", str(len(rows)), str(len(active)), str(len(rows) - len(active))]]
    print_table(table)
    if verbose:
        print()
        detail = [["CONTAINER ID", "NAME", "STATE", "ROOTFS"]]
        detail += [[str(r["id"])[:12], str(r["name"]), str(r["state"]), str(r.get("rootfs"))]
                   for r in rows]
        print_table(detail)
    return 0




def berth_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("berth")
    except PackageNotFoundError:
        return "unknown"


def cmd_version(args: argparse.Namespace) -> int:
    import platform

    print(f"Version:      {berth_version()}\nPython:       {platform.python_version()}\n"
          f"OS/Arch:      {platform.system().lower()}/{platform.machine()}")
    return 0


def gather_info(client: Client) -> dict[str, Any]:
    """The client, the broker and every node a worker serves (one ``query.info`` each)."""
    import platform

    from engine.command_types import INFO, PING

    health = client.send(PING).result
    nodes: dict[str, Any] = {}
    for node in sorted({str(w["node"]) for w in health.get("workers", [])}):
        try:
            nodes[node] = client.send(INFO, node=node).result
        except Unavailable:
            raise
        except BerthError as exc:
            nodes[node] = {"error": str(exc)}
    return {
        "client": {"berth": berth_version(), "python": platform.python_version(),
                   "bus": client.endpoint},
        "broker": {k: health.get(k) for k in ("protocol", "curve", "uptime", "outstanding")}
        | {"workers": health.get("workers", [])},
        "nodes": nodes,
    }


def cmd_info(args: argparse.Namespace, client: Client) -> int:
    info = gather_info(client)
    if args.format not in ("text", "json"):  # a Go template over podman's shape
        from berth.cli import template
        from berth.cli.podmanview import info_view

        print(template.parse(args.format).render(info_view(info)))
        return 0
    if args.format == "json":
        import json

        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    _print_tree(info, 0)
    return 0


def _print_tree(value: Any, depth: int) -> None:
    """YAML-like, as podman's ``info`` prints."""
    pad = "  " * depth
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                print(f"{pad}{key}:")
                _print_tree(item, depth + 1)
            else:
                print(f"{pad}{key}: {item if item not in (None, {}, []) else ''}".rstrip())
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                print(f"{pad}- " + ", ".join(f"{k}: {v}" for k, v in item.items()))
            else:
                print(f"{pad}- {item}")


def cmd_help(args: argparse.Namespace) -> int:
    from berth import cli

    parser = cli.build_parser(args.command)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command not in cli.COMMANDS:
        print(f"berth: no such command {args.command!r}: see 'berth help'", file=sys.stderr)
        return 125
    parser.parse_args([args.command, "--help"])  # prints the command's help, exits 0
    return 0


def cmd_completion(args: argparse.Namespace) -> int:
    """A completion script generated from the parser itself (shtab), so it never lags."""
    import shtab

    from berth import cli

    print(shtab.complete(cli.build_parser(), shell=args.shell))
    return 0


def add_commands(add: AddCommand) -> None:
    p = add("container", cmd_container, "container management: prune, exists, and "
            "podman's 'container VERB' for every container verb")
    p.add_argument("action", choices=["prune", "exists"],
                   help="prune: remove all stopped containers; exists CTR: exit 0 if it "
                        "exists, 1 if not")
    p.add_argument("names", nargs="*", metavar="CTR", help="exists: the container")
    p.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    p = add("system", cmd_system, "the engine as a whole: prune, df, status")
    p.add_argument("action", choices=["prune", "df", "status"],
                   help="prune: remove all stopped containers; df: what the engine holds; "
                        "status: exit 0 when the broker, the workers and the store answer")
    p.add_argument("-f", "--force", action="store_true",
                   help="prune: do not ask for confirmation")
    p.add_argument("-v", "--verbose", action="store_true", help="df: one line per container")
    p.add_argument("--format", choices=["text", "json"], default="text",
                   help="status: text (default) or one JSON object")
    p = add("info", cmd_info, "versions, the store, the workers and their nodes")
    p.add_argument("-f", "--format", default="text",
                   help="text (default), json, or a Go template over podman's shape "
                        "('{{.Host.OCIRuntime.Name}}', '{{.Store.GraphRoot}}')")
    add("version", cmd_version, "berth's version", server=True)
    p = add("help", cmd_help, "help on a command", server=True)
    p.add_argument("command", nargs="?", metavar="COMMAND", help="the command to explain")
    p = add("completion", cmd_completion, "a shell completion script", server=True)
    p.add_argument("shell", choices=["bash", "zsh", "fish"], metavar="SHELL",
                   help="bash, zsh or fish; e.g. source <(berth completion bash)")
