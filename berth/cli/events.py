"""The event log: ``events``, ``history``, ``state``, ``projection``, ``audit``.

What happened, who asked for it, what the state was at a past moment, and whether the
log still proves its own integrity: all answered by a worker from the store, over the bus.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any, TextIO

from berth.cli import format as fmt
from bus.client import Client

if TYPE_CHECKING:
    from berth.cli import AddCommand

COMMANDS = ("events", "history", "state", "projection", "audit")


def cmd_events(args: argparse.Namespace, client: Client) -> int:
    if args.action == "export":
        return _export(args, client)
    if args.format in ("jsonl", "csv"):
        print(f"berth: --format {args.format} is for 'events export'", file=sys.stderr)
        return 125
    if args.format not in ("table", "json"):
        fmt.parsed_template(args.format)  # a bad template is refused before any output
    filters = fmt.parse_filters(args.filter)
    since = fmt.parse_time(args.since) if args.since else None
    until = fmt.parse_time(args.until) if args.until else None
    names = fmt.NameCache(client)
    container = client.resolve(filters["container"]).id if "container" in filters else None
    types = [filters["type"]] if "type" in filters else None
    query: dict[str, Any] = {"container": container, "types": types, "since": since,
                             "until": until}
    query = {k: v for k, v in query.items() if v is not None}
    follow = args.follow or bool(getattr(args, "stream", None))  # --stream=true: podman's
    if follow and since is None:
        # podman's: a stream shows what happens from now on; --since reads the past
        # first. The head is read before the subscription: nothing falls in between.
        last = client.events(after=0, limit=1, **query)[1]
    else:
        last = _print_past(client, query, names, args.format)
    if not follow:
        return 0
    with client.subscribe(from_position=last + 1, types=types, container=container) as sub:
        for event in sub:
            if until is not None and event.recorded_at > until:
                return 0
            fmt.print_event(event, names, args.format)
            sys.stdout.flush()
    return 0


def _print_past(client: Client, query: dict[str, Any], names: fmt.NameCache,
                format: str) -> int:
    """The recorded events the query selects, page by page; the log's head position
    (where a subscription goes on from)."""
    after = head = 0
    while True:
        events, head = client.events(after=after, limit=500, **query)
        for event in events:
            fmt.print_event(event, names, format)
        if not events:
            return max(after, head)
        after = events[-1].position


def _export(args: argparse.Namespace, client: Client) -> int:
    """The whole log with its hashes and leaves, under a tree head taken first: the
    head covers exactly the events written (later ones are left for the next export)."""
    import csv
    import json

    from engine.audit import exchange
    from engine.audit.treehead import TreeHead

    fmt_ = "jsonl" if args.format in ("table", "json") else args.format
    head = TreeHead.from_json(client.audit_checkpoint()["head"])

    def write(out: TextIO) -> int:
        writer = csv.writer(out) if fmt_ == "csv" else None
        if writer is not None:
            writer.writerow(exchange.CSV_COLUMNS)
        else:
            out.write(json.dumps(exchange.header(head), sort_keys=True) + "\n")
        after = 0
        while after < head.size:
            rows = client.audit_export(after, min(1000, head.size - after))["rows"]
            if not rows:
                break
            for row in rows:
                if writer is not None:
                    writer.writerow(exchange.csv_record(row))
                else:
                    out.write(json.dumps(exchange.encode_row(row), sort_keys=True) + "\n")
            after = rows[-1]["position"]
        return after

    if args.out:  # the payloads hold the containers' environments: 0600, as a backup
        from engine.privatefile import private_output

        with private_output(args.out, newline="") as out:
            after = write(out)
    else:
        after = write(sys.stdout)
    if fmt_ == "csv" and args.out:
        from engine.audit.treehead import dump

        dump(head.to_json(), args.out + ".head.json")
    where = f" to {args.out}" if args.out else ""
    note = "" if head.signed else " (its head is UNSIGNED: the worker has no auditor key)"
    print(f"exported {after} events{where}{note}", file=sys.stderr)
    return 0


def cmd_history(args: argparse.Namespace, client: Client) -> int:
    from bus.results import parse_events_result

    events, _ = parse_events_result(client.history(args.container, all=args.all))
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
    moment = result.get("at")  # ages are counted from the moment asked about
    fmt.print_rows(result.get("containers", []), args.format == "json" or bool(args.container),
                   now=datetime.fromisoformat(moment) if isinstance(moment, str) else None)
    return 0


def cmd_projection(args: argparse.Namespace, client: Client) -> int:
    result = client.send("admin.rebuild", verify=args.verify, force=args.force,
                         reply_timeout=600).result
    differences = result.get("differences") or []
    if args.verify:
        for line in differences:
            print(f"  difference: {line}")
        print("verified: rebuild equals the incremental read model" if not differences
              else f"verification FAILED: {len(differences)} difference(s) between the "
                   "read model and the log (listed above, before any rebuild)")
    broken = result.get("broken_at")
    if not result.get("rebuilt"):
        print(f"refused to rebuild: the log's hash chain is broken, or a row is forged, at "
              f"position {broken} (see berth audit verify; --force replays it anyway)",
              file=sys.stderr)
        return 1
    if broken is not None:
        print(f"warning: rebuilt from a log whose chain is broken, or a row forged, at "
              f"position {broken}", file=sys.stderr)
    print(f"rebuilt the read model: {result['containers']} containers")
    return 1 if differences or broken is not None else 0


def cmd_audit(args: argparse.Namespace, client: Client) -> int:
    """The log's integrity (RFC 9162): verify, checkpoint, prove, check-proof."""
    import json

    from engine.audit import treehead

    if args.action == "check-proof":
        return _check_proof(args)
    if args.action == "check-export":
        return _check_export(args)
    if args.action == "checkpoint":
        result = client.audit_checkpoint()
        head = treehead.TreeHead.from_json(result["head"])
        text = treehead.dump(head.to_json(), args.out)
        if args.out:
            print(f"tree head of {head.size} events written to {args.out}")
        else:
            print(text, end="")
        if not head.signed:
            print("warning: the head is UNSIGNED (the worker has no auditor key: set "
                  "BERTH_AUDIT_KEY); it proves nothing to a third party", file=sys.stderr)
        return 0
    if args.action == "prove" and args.since_head:
        old = treehead.TreeHead.from_json(json.loads(_read(args.since_head)))
        result = client.audit_consistency(old.size)
        text = treehead.dump(result, args.out)
        if args.out:
            print(f"consistency proof from {old.size} to {result['head']['size']} events "
                  f"written to {args.out}")
        else:
            print(text, end="")
        return 0
    if args.action == "prove":
        if args.position is None or not args.position.isdigit():
            print("berth: audit prove needs a POSITION (a number from 1)", file=sys.stderr)
            return 125
        proof = client.audit_prove(int(args.position), args.size)
        text = treehead.dump(proof, args.out)
        if args.out:
            print(f"inclusion proof of event {args.position} in a tree of {proof['size']} "
                  f"events written to {args.out}")
        else:
            print(text, end="")
        return 0
    heads: list[dict[str, Any]] = []
    for path in args.against:
        data = json.loads(_read(path))
        for item in data if isinstance(data, list) else [data]:
            heads.append(treehead.TreeHead.from_json(item).to_json())
    keys = [treehead.load_public(k) for k in args.key]
    result = client.verify_audit(heads, keys)
    return _print_verify(result, args.against)


def _read(path: str) -> str:
    from engine.errors import InvalidArgument

    try:
        with open(path) as f:
            return f.read()
    except OSError as exc:
        raise InvalidArgument(f"cannot read {path}: {exc.strerror}") from None


def _print_verify(result: dict[str, Any], against: list[str]) -> int:
    """The verdict, and exactly what was checked: never a check that was not made."""
    size, vouched = result["head"], result.get("vouched", 0)
    heads = result.get("heads", [])
    signed = [h for h in heads if h["signature"] == "ok"]
    unsigned = [h for h in heads if h["signature"] == "unsigned"]
    unknown = [h for h in heads if h["signature"] == "unknown key"]
    if result.get("signer") is None:
        print("note: the worker has no auditor key (BERTH_AUDIT_KEY): it signs no heads")
    if unsigned:
        print(f"note: {len(unsigned)} unsigned head(s) ignored: they prove nothing")
    if unknown:
        print(f"note: {len(unknown)} head(s) signed by keys not trusted ignored (pass their "
              "public key with --key to count them)")
    if not result["ok"]:
        for position, message in result.get("problems", []):
            where = f"position {position}: " if position is not None else ""
            print(f"audit FAILED: {where}{message}", file=sys.stderr)
        print(f"first position affected: {result['first_break']}", file=sys.stderr)
        return 1
    print(f"audit chain verified: {size} events, root {result['hash']}")
    for line in _checked(result, size, vouched, signed):
        print(f"  {line}")
    if not signed:
        print("warning: no signed head checked: the log is only as trustworthy as the "
              "database (pass --against FILE from 'berth audit checkpoint --out')")
    elif vouched < size:
        by = ("only their writers' signatures vouch for them yet"
              if result.get("signatures_checked") else "vouched for by none yet")
        print(f"note: positions {vouched + 1}..{size} are after the newest signed head: "
              f"{by}")
    return 0


def _checked(result: dict[str, Any], size: int, vouched: int,
             signed: list[dict[str, Any]]) -> list[str]:
    """One line per check ``berth audit verify`` made on a log that passed, and one
    for each it could not make."""
    lines = [f"hash chain: positions 1..{size} recomputed from each row's content and "
             "linked" if size else "hash chain: the log is empty"]
    bare = result.get("bare", 0)
    older = f"; positions 1..{bare} predate the table (revision 0002)" if bare else ""
    if bare < size:
        lines.append(f"commands table: positions {bare + 1}..{size} each have their "
                     f"command's row, listing their positions; no row without an event{older}")
    else:
        lines.append(f"commands table: no row without an event{older}")
    count, first = result.get("signatures_checked", 0), result.get("checked_from")
    keys = result.get("keys", [])
    legacy = result.get("legacy", 0)
    if not keys:
        lines.append("writer signatures: NOT checked: no auditor key is trusted (pass "
                     "--key PUBKEY)")
    elif count and first is not None:
        lines.append(f"writer signatures: verified on positions {first}..{size} ({count} "
                     "row(s), with their commands rows, each vouched for by its own signature "
                     f"or its transaction's) with key(s) {', '.join(keys)}")
    else:
        lines.append("writer signatures: none verified (" + (
            "no row after the newest signed head)" if vouched >= size else
            f"positions {vouched + 1}..{size} are unsigned rows opening the log)"))
    if signed:
        lines.append(f"signed heads: {len(signed)} consistent, the largest over {vouched} "
                     "events" + (f"; positions {legacy + 1}..{vouched} each carry their "
                                 "writer's key id (signatures not re-verified: that head "
                                 "vouches for them)"
                                 if keys and vouched > legacy else ""))
    if legacy:
        lines.append(f"unsigned rows: positions 1..{legacy} carry no writer signature "
                     "(written before revision 0005, or by workers without an auditor key, "
                     "before any signed head): only signed heads vouch for them")
    return lines


def _check_export(args: argparse.Namespace) -> int:
    """Offline: an export's chain, leaves and root against its head and a key."""
    from engine.audit import exchange, treehead

    if args.position is None or not args.key:
        print("berth: audit check-export EXPORT_FILE --key PUBKEY_FILE", file=sys.stderr)
        return 125
    public = treehead.load_public(args.key[0])
    with open(args.position) as f:
        head, rows = exchange.read_jsonl(f)
        problems, size, root = exchange.check(rows, head, public)
    for problem in problems:
        print(f"export FAILED: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"export verified: {size} events, root {root.hex()}, signed by key "
          f"{head.key_id if head else '?'}")
    return 0


def _check_proof(args: argparse.Namespace) -> int:
    """Offline: the proof file against the head file and the auditor's public key."""
    import json

    from engine.audit import treehead

    if not args.head or not args.key or args.position is None:
        print("berth: audit check-proof PROOF_FILE --head HEAD_FILE --key PUBKEY_FILE",
              file=sys.stderr)
        return 125
    data = json.loads(_read(args.position))
    head = treehead.TreeHead.from_json(json.loads(_read(args.head)))
    public = treehead.load_public(args.key[0])
    if isinstance(data, dict) and data.get("kind") == "consistency":
        growth = treehead.ConsistencyProof.from_json(data)
        problems = treehead.check_consistency(growth, head, public)
        for problem in problems:
            print(f"proof FAILED: {problem}", file=sys.stderr)
        if problems:
            return 1
        print(f"proof verified: the log of {growth.head.size} events signed at "
              f"{growth.head.timestamp_us} still holds the {head.size} events of the head "
              "given, unchanged")
        return 0
    proof = treehead.InclusionProof.from_json(data)
    problems = treehead.check_proof(proof, head, public)
    for problem in problems:
        print(f"proof FAILED: {problem}", file=sys.stderr)
    if problems:
        return 1
    event = proof.event
    print(f"proof verified: event {proof.position} ({event.get('type')} on "
          f"{str(event.get('stream'))[:12]} by {event.get('actor')}) is in the log of "
          f"{head.size} events signed by key {head.key_id}")
    return 0


def _stream(text: str) -> bool:
    if text.lower() in ("true", "1"):
        return True
    if text.lower() in ("false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"invalid --stream {text!r}: use true or false")


def add_commands(add: AddCommand) -> None:
    p = add("events", cmd_events, "the event log; 'events export' writes it with its proofs")
    p.add_argument("action", nargs="?", choices=["export"],
                   help="export: the whole log with its hashes and proofs")
    p.add_argument("--out", metavar="FILE", help="export: write to FILE (default stdout)")
    p.add_argument("--since", metavar="T",
                   help="events after T: RFC 3339 (with or without a time), a duration "
                        "ago (1h30m) or a unix timestamp")
    p.add_argument("--until", metavar="T", help="events up to T (same forms as --since)")
    p.add_argument("-f", "--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="container=CTR or type=TYPE (-f is --filter, as podman's)")
    p.add_argument("--follow", action="store_true",
                   help="print events as they are recorded, from now on (with --since, "
                        "the past ones first)")
    p.add_argument("--stream", type=_stream, metavar="BOOL",
                   help="podman's: true is --follow, false prints what is recorded and "
                        "exits (the default)")
    p.add_argument("--format", default="table", metavar="FORMAT",
                   help="table, json (one object per line) or a Go template such as "
                        "'{{.Time}} {{.Name}} {{.Status}}' to read; jsonl (default) or "
                        "csv to export")
    p = add("history", cmd_history, "a container's audit trail (removed ones too)")
    p.add_argument("--format", choices=["table", "json"], default="table",
                   help="table (default) or json (one event per line)")
    p.add_argument("-a", "--all", action="store_true",
                   help="every container that ever had this name, not only the newest")
    p.add_argument("container", metavar="CTR", help="name or id (prefix), removed ones too")
    p = add("state", cmd_state, "state as it was at a past moment, from the log")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--at", metavar="T", help="a moment: RFC 3339, a duration ago (1h30m) or "
                                          "a unix timestamp")
    g.add_argument("--at-position", type=int, metavar="N", help="after the event at position N")
    p.add_argument("--format", choices=["table", "json"], default="table",
                   help="table (default) or json")
    p.add_argument("container", nargs="?", metavar="CTR", help="only this container")
    p = add("projection", cmd_projection, "rebuild the read model from the log")
    p.add_argument("action", choices=["rebuild"], help="rebuild: replay the log")
    p.add_argument("--verify", action="store_true",
                   help="first compare the read model with the log, row by row")
    p.add_argument("--force", action="store_true",
                   help="rebuild even from a log whose hash chain is broken")
    p = add("audit", cmd_audit, "the log's integrity: signed tree heads and proofs")
    p.add_argument("action", choices=["verify", "checkpoint", "prove", "check-proof",
                                       "check-export"],
                   help="verify the log, sign a checkpoint, prove an event, or check a "
                        "proof or an export offline")
    p.add_argument("position", nargs="?", metavar="POSITION|FILE",
                   help="prove: the event's position; check-proof, check-export: the file")
    p.add_argument("--against", action="append", default=[], metavar="HEAD_FILE",
                   help="verify: a tree head written by 'checkpoint --out' (repeatable)")
    p.add_argument("--key", dest="key", action="append", default=[], metavar="PUBKEY",
                   help="an auditor's public key file to trust (repeatable)")
    p.add_argument("--head", metavar="HEAD_FILE", help="check-proof: the signed head")
    p.add_argument("--size", type=int, help="prove: in the tree of this many events")
    p.add_argument("--since", dest="since_head", metavar="HEAD_FILE",
                   help="prove: a consistency proof from this older head to a new one")
    p.add_argument("--out", metavar="FILE", help="write the head or proof to FILE (JSON)")
