"""``ps`` as podman's: ``-q``, repeatable ``--filter KEY=VALUE``, ``--format`` json (one
array), table or a Go template.

Filters of one key are alternatives (but every ``label=`` must hold), filters of
different keys must all hold, as podman's: ``--filter status=exited --filter
status=created --filter label=tier``.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from berth.cli import format as fmt
from bus.client import Client
from engine.errors import InvalidArgument

if TYPE_CHECKING:
    from berth.cli import AddCommand

COMMANDS = ("ps",)

FILTER_KEYS = ("id", "name", "status", "label", "node", "ancestor", "exited")
STATES = ("created", "running", "paused", "exited")

Row = dict[str, Any]


def parse_ps_filters(items: list[str]) -> dict[str, list[str]]:
    """``KEY=VALUE`` items grouped by key; one sentence for a wrong one."""
    out: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in FILTER_KEYS or not value:
            raise InvalidArgument(f"invalid filter {item!r}: use KEY=VALUE with KEY one of "
                                  f"{', '.join(FILTER_KEYS)}")
        if key == "status" and value not in STATES:
            raise InvalidArgument(f"invalid status {value!r}: use one of {', '.join(STATES)}")
        if key == "exited" and not value.lstrip("-").isdigit():
            raise InvalidArgument(f"invalid exited filter {value!r}: give an exit code")
        if key == "name":
            try:
                re.compile(value)
            except re.error as exc:
                raise InvalidArgument(f"invalid name filter {value!r}: {exc}") from None
        out.setdefault(key, []).append(value)
    return out


def _label_matches(row: Row, wanted: str) -> bool:
    labels = row.get("labels") or {}
    key, sep, value = wanted.partition("=")
    return key in labels and (not sep or labels[key] == value)


def _ancestor(row: Row, wanted: str) -> bool:
    """The image by its reference (with or without the tag) or the rootfs path."""
    image = str(row.get("image") or "")
    return wanted in (row.get("rootfs"), image) or (
        bool(image) and image.rpartition(":")[0] == wanted and "/" not in image.rpartition(":")[2])


_TESTS: dict[str, Callable[[Row, str], bool]] = {
    "id": lambda row, v: str(row["id"]).startswith(v),
    "name": lambda row, v: re.search(v, str(row["name"])) is not None,
    "status": lambda row, v: row["state"] == v,
    "label": _label_matches,
    "node": lambda row, v: row.get("node") == v,
    "ancestor": lambda row, v: is_ancestor(row, v),
    "exited": lambda row, v: row["state"] == "exited" and row.get("exit_code") == int(v),
}


def is_ancestor(row: Row, value: str) -> bool:
    """podman's ``ancestor=``: the container's root filesystem directory, or its
    image by reference (a reference without a tag names the repository, any tag), by
    id or by an id prefix. A container made from an image has the overlay the worker
    mounted as its rootfs: that path is no name a user gives."""
    image, image_id = str(row.get("image") or ""), str(row.get("image_id") or "")
    if not image and not image_id:
        return value == row.get("rootfs")
    from engine.errors import InvalidArgument
    from engine.images.reference import looks_like_id, parse_reference

    if value == image:
        return True
    if image_id and looks_like_id(value):
        bare = value.removeprefix("sha256:")
        return image_id.removeprefix("sha256:").startswith(bare)
    try:
        wanted, have = parse_reference(value), parse_reference(image)
    except InvalidArgument:
        return False
    tagged = ":" in value.rpartition("/")[2] or "@" in value
    return wanted == have if tagged else wanted.name == have.name


def matches(row: Row, filters: dict[str, list[str]]) -> bool:
    """Values of one key are alternatives, except labels: every label asked for must be
    there (as podman's)."""
    return all((all if key == "label" else any)(_TESTS[key](row, v) for v in values)
               for key, values in filters.items())


def view(row: Row, now: datetime) -> Row:
    """A ps row under podman's template names as well as berth's own keys."""
    out = dict(row)
    out.update(ID=str(row["id"])[:12], Names=row["name"], State=row["state"],
               Status=fmt.status_text(row, now), Image=row.get("image") or row.get("rootfs"),
               Ports=fmt.ports_text(row.get("ports")), ImageID=row.get("image_id"),
               Command=" ".join(row.get("command") or []), Node=row.get("node"),
               Labels=row.get("labels") or {}, CreatedAt=row.get("created_at"),
               ExitCode=row.get("exit_code"), Pid=row.get("pid"))
    return out


def cmd_ps(args: argparse.Namespace, client: Client) -> int:
    filters = parse_ps_filters(args.filter)
    # A status filter asks for those states whatever -a says, as podman's does.
    rows = [r for r in client.ps(all=args.all or args.external or "status" in filters
                                 or "exited" in filters
                                 or args.latest or args.last is not None)
            if matches(r, filters)]
    if args.sort:
        rows.sort(key=_SORT_KEYS[args.sort])
    if args.latest or args.last is not None:
        newest = sorted(rows, key=lambda r: str(r.get("created_at") or ""), reverse=True)
        rows = newest[:1 if args.latest else args.last]
    if args.quiet:
        for row in rows:
            print(row["id"] if args.no_trunc else str(row["id"])[:12])
        return 0
    if args.format == "json":
        print(json.dumps(rows, indent=2, sort_keys=True))
    elif args.format in (None, "table"):
        fmt.print_ps(rows, heading=not args.noheading)
    else:
        from berth.cli import template

        now = datetime.now(UTC)
        for line in template.parse(args.format).render_all([view(r, now) for r in rows]):
            print(line)
    return 0


_SORT_KEYS: dict[str, Callable[[Row], Any]] = {
    "id": lambda r: str(r["id"]), "names": lambda r: str(r["name"]),
    "status": lambda r: str(r["state"]), "created": lambda r: str(r.get("created_at") or ""),
    "command": lambda r: " ".join(r.get("command") or []),
    "image": lambda r: str(r.get("image") or r.get("rootfs") or ""),
    "runningfor": lambda r: str(r.get("created_at") or ""),
}
"""``ps --sort`` keys as podman names them."""


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: give a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: give a number >= 0")
    return value


def add_commands(add: AddCommand) -> None:
    p = add("ps", cmd_ps, "list containers")
    p.add_argument("-a", "--all", action="store_true",
                   help="every container, not only the running and paused ones")
    p.add_argument("-q", "--quiet", action="store_true", help="only the container ids")
    p.add_argument("--no-trunc", action="store_true", help="full ids with -q")
    p.add_argument("--external", action="store_true",
                   help="containers made outside the engine too (podman's buildah ones); "
                        "berth has none, so this lists what -a lists")
    p.add_argument("--noheading", action="store_true", help="no header row")
    p.add_argument("-l", "--latest", action="store_true",
                   help="only the most recently created container (of any state)")
    p.add_argument("-n", "--last", type=_count, metavar="N",
                   help="only the N most recently created containers (of any state)")
    p.add_argument("--sort", choices=sorted(_SORT_KEYS), help="order of the rows")
    p.add_argument("-f", "--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="id=, name= (a regular expression), status=, label=KEY[=VALUE], "
                        "node=, ancestor= (rootfs or image), exited=CODE; repeatable")
    p.add_argument("--format", metavar="FORMAT",
                   help="table (default), json (one array), or a Go template such as "
                        "'{{.ID}} {{.Names}}' ('table ' before it adds a header)")
