"""``berth db``: database maintenance, run against the store directly (no broker)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from engine.errors import InvalidArgument

if TYPE_CHECKING:
    from berth.cli import AddCommand

COMMANDS = ("db", "log")


def cmd_db(args: argparse.Namespace) -> int:
    from migrations.runner import current_revision, upgrade
    from workers.worker import WorkerConfig

    url = args.db or WorkerConfig().database
    if args.action in ("backup", "restore"):
        if not args.file:
            raise InvalidArgument(f"berth db {args.action} needs a FILE")
        from engine.store import backup

        if args.action == "backup":
            kind = backup.backup(url, args.file)
            print(f"backed up the store to {args.file} ({kind})")
        else:
            kind = backup.restore(url, args.file)
            print(f"restored {args.file} into the store ({kind}); check it with "
                  "'berth audit verify' and 'berth projection rebuild --verify'")
        return 0
    if args.file:
        raise InvalidArgument("berth db upgrade takes no FILE")
    upgrade(url)
    print(f"database at revision {current_revision(url)}")
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    """Replay an export into an EMPTY store: checked first, written as it was stored,
    then checked again (same root), so the copy's hashes equal the source's."""
    import sys

    from engine.audit import merkle, treehead
    from engine.store.store import EventStore
    from migrations.runner import upgrade
    from workers.worker import WorkerConfig

    head, loaded = _read_export(args.file)
    public = treehead.load_public(args.key) if args.key else None
    from engine.audit import exchange

    problems, size, root = exchange.check(loaded, head, public)
    for problem in problems:
        print(f"berth: the export does not check out: {problem}", file=sys.stderr)
    if problems and not args.force:
        print("berth: nothing imported (--force imports it anyway)", file=sys.stderr)
        return 1
    url = args.db or WorkerConfig().database
    upgrade(url)
    with EventStore(url) as store:
        count = store.import_rows(loaded, head)
        log = store.scan_log()
    if merkle.root(log.leaves) != root or log.size != size:
        print("berth: the imported log's root differs from the export's", file=sys.stderr)
        return 1
    print(f"imported {count} events: root {root.hex()}"
          + (", head signature checked" if public is not None else
             " (no --key: the head's signature was not checked)"))
    return 0


def _read_export(path: str) -> tuple[Any, list[dict[str, Any]]]:
    """The head and rows of a JSON-lines export, or of a CSV one (its head beside it
    in FILE.head.json)."""
    import csv
    import json
    from pathlib import Path

    from engine.audit import exchange
    from engine.audit.treehead import TreeHead
    from engine.errors import InvalidArgument

    try:
        with open(path, newline="") as f:
            if path.endswith(".csv"):
                head_file = Path(path + ".head.json")
                head = (TreeHead.from_json(json.loads(head_file.read_text()))
                        if head_file.exists() else None)
                return head, [exchange.from_csv_record(r) for r in csv.DictReader(f)]
            head, rows = exchange.read_jsonl(f)
            return head, list(rows)
    except OSError as exc:
        raise InvalidArgument(f"cannot read {path}: {exc.strerror}") from None


def add_commands(add: AddCommand) -> None:
    p = add("db", cmd_db, "database maintenance: upgrade, backup FILE, restore FILE",
            server=True)
    p.add_argument("action", choices=["upgrade", "backup", "restore"],
                   help="upgrade the schema; back the store up to a new FILE (SQLite's "
                        "online backup, or pg_dump); restore FILE into an empty store")
    p.add_argument("file", metavar="FILE", nargs="?", help="the backup file")
    p.add_argument("--db", metavar="URL", help="the store (default BERTH_DB or the root's)")
    p = add("log", cmd_log, "import an export of the log into an empty store", server=True)
    p.add_argument("action", choices=["import"], help="import: replay an export")
    p.add_argument("file", metavar="FILE", help="written by 'berth events export'")
    p.add_argument("--key", metavar="PUBKEY", help="the auditor's public key: check the "
                                                   "export's head signature first")
    p.add_argument("--db", metavar="URL", help="the store (default BERTH_DB or the root's)")
    p.add_argument("--force", action="store_true", help="import even if checks fail")
