"""The event log: ``events``, ``history``, ``state``, ``projection``, ``audit``.

What happened, who asked for it, what the state was at a past moment, and whether the
log still proves its own integrity: all answered by a worker from the store, over the bus.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from berth.cli import format as fmt
from bus.client import Client

if TYPE_CHECKING:
    from berth.cli import AddCommand

COMMANDS = ("events", "history", "state", "projection", "audit")


def cmd_events(args: argparse.Namespace, client: Client) -> int:
    filters = fmt.parse_filters(args.filter)
    since = fmt.parse_time(args.since) if args.since else None
    until = fmt.parse_time(args.until) if args.until else None
    names = fmt.NameCache(client)
    container = client.resolve(filters["container"]).id if "container" in filters else None
    types = [filters["type"]] if "type" in filters else None
    query: dict[str, Any] = {"container": container, "types": types, "since": since,
                             "until": until}
    query = {k: v for k, v in query.items() if v is not None}
    after = 0
    while True:
        result = client.send("query.events", after=after, limit=500, **query).result
        from bus.results import parse_events_result

        events, head = parse_events_result(result)
        for event in events:
            fmt.print_event(event, names, args.format)
        if not events:
            break
        after = events[-1].position
    if not args.follow:
        return 0
    last = max(after, head)
    with client.subscribe(from_position=last + 1, types=types, container=container) as sub:
        for event in sub:
            if until is not None and event.recorded_at > until:
                return 0
            fmt.print_event(event, names, args.format)
            sys.stdout.flush()
    return 0


def cmd_history(args: argparse.Namespace, client: Client) -> int:
    from bus.results import parse_events_result

    events, _ = parse_events_result(client.history(args.container))
    names = fmt.NameCache(client)
    if args.format == "json":
        for event in events:
            fmt.print_event(event, names, "json")
    else:
        fmt.print_history(events)
    return 0


def cmd_state(args: argparse.Namespace, client: Client) -> int:
    at: dict[str, Any] = {}
    if args.at is not None:
        at["at_time"] = fmt.parse_time(args.at)
    if args.at_position is not None:
        at["at_position"] = args.at_position
    result = client.send("query.state", args.container, **at).result
    fmt.print_rows(result.get("containers", []), args.format == "json" or bool(args.container))
    return 0


def cmd_projection(args: argparse.Namespace, client: Client) -> int:
    result = client.send("admin.rebuild", verify=args.verify, reply_timeout=600).result
    print(f"rebuilt the read model: {result['containers']} containers")
    if args.verify:
        differences = result.get("differences") or []
        for line in differences:
            print(f"  difference: {line}")
        print("verified: rebuild equals the incremental read model" if not differences
              else "verification FAILED")
        return 0 if not differences else 1
    return 0


def cmd_audit(args: argparse.Namespace, client: Client) -> int:
    result = client.verify_audit()
    if result["ok"]:
        print(f"audit chain verified up to position {result['head']} "
              f"(head hash {result['hash']})")
        return 0
    print(f"audit chain BROKEN at position {result['first_break']}", file=sys.stderr)
    return 1


def add_commands(add: AddCommand) -> None:
    p = add("events", cmd_events, "the event log")
    p.add_argument("--since")
    p.add_argument("--until")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--follow", action="store_true")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p = add("history", cmd_history, "a container's audit trail")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("container", metavar="CTR")
    p = add("state", cmd_state, "state as it was at a past moment, from the log")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--at", metavar="T")
    g.add_argument("--at-position", type=int, metavar="N")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("container", nargs="?", metavar="CTR")
    p = add("projection", cmd_projection, "rebuild the read model from the log")
    p.add_argument("action", choices=["rebuild"])
    p.add_argument("--verify", action="store_true")
    p = add("audit", cmd_audit, "verify the log's hash chain")
    p.add_argument("action", choices=["verify"])
