"""The log as a Merkle tree (RFC 9162), and what a set of tree heads says about it.

Leaf ``i`` (event position ``i + 1``) is ``row hash || outcome digest``:

- the row hash is the hash chain's ``sha256(prev || canonical row)`` (engine.audit.chain),
  recomputed from the row's content, so it commits to the position, stream, version,
  type, payload and every metadata column (actor, causation, correlation, node, time);
- the outcome digest is ``sha256`` of the canonical ``commands`` row of the command
  that caused the event (32 zero bytes for events older than that table), so editing
  a recorded outcome, which retried commands are answered with, changes the tree too.

A command row must also list exactly the positions its events have, every command
row must have an event (an invented outcome has no leaf to hide in), and every event
must have its command's row: only the events opening the log, written before the
table (revision 0002), and types in ``WITHOUT_COMMAND`` (none) may lack one. A deleted
row is reported at its event's position, wherever it is: the outcome is what a resend
of the command is answered with, so a missing one would let it run twice.

Trust comes from heads, never from the database: a head counts if its Ed25519
signature checks with a key the verifier trusts, wherever it was read from. Against
each such head the current tree must give a consistency proof (§2.1.4); the first
position affected by a rewrite is just after the largest trusted head that still
holds (exact when heads are frequent or when the chain itself breaks there).

Rows after the newest head are vouched for by their writers' signatures
(engine.audit.vouch), checked in the same pass: a forged append, which every head
is consistent with, is reported at its position, and never enters a head. Unsigned
rows are accepted only where they open the log, before its first signed row and
before the smallest head signed by a trusted key (``sealed``): a trusted head exists
only where a keyed writer ran, and such a writer signs every row. So stripping the
signatures of every row does not turn a forged append into an "old" row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack  # type: ignore[import-untyped]
from sqlalchemy import BigInteger, Connection, RowMapping, select, text, type_coerce

from engine.audit import chain as audit
from engine.audit import merkle, vouch
from engine.audit.treehead import TreeHead, signature_ok
from engine.store.schema import commands, events

NO_OUTCOME = b"\x00" * 32

WITHOUT_COMMAND: Final[frozenset[str]] = frozenset()
"""Event types written without a ``commands`` row: none. Every writer records its
command's row in the transaction that appends the command's events
(engine.store.recorder), so past the events older than the table an event without
one had it deleted. A type written otherwise one day is listed here."""

OUTCOME_COLUMNS = ("command_id", "command_type", "stream", "outcome", "error_code",
                   "message", "positions", "recorded_at")
_OUTCOME = OUTCOME_COLUMNS


def outcome_digest(values: Sequence[Any]) -> bytes:
    """sha256 of a commands row's columns in ``_OUTCOME`` order (time in micros)."""
    items = list(values)
    items[6] = bytes(items[6])
    return hashlib.sha256(msgpack.packb(items, use_bin_type=True)).digest()


@dataclass(slots=True)
class LogScan:
    """Everything the tree and the checks need, from one pass over the log."""

    leaves: list[bytes] = field(default_factory=list)  # leaf hashes, index = position - 1
    chain_break: int | None = None
    command_break: int | None = None
    orphan_commands: list[str] = field(default_factory=list)
    chain: bytes = audit.GENESIS  # the chain's hash after the last row read
    missing_command: int | None = None  # the first event whose commands row is gone
    missing_command_id: str = ""
    forged: int | None = None  # the first row no trusted writer vouches for
    forged_reason: str = ""
    legacy: int = 0  # positions 1..legacy carry no writer signature: heads only
    bare: int = 0  # positions 1..bare have no commands row (written before 0002)
    keys: tuple[str, ...] = ()  # the writers' key ids trusted (none: nothing checked)
    signatures_checked: int = 0  # rows whose writer signature was verified, from:
    checked_from: int | None = None

    @property
    def size(self) -> int:
        return len(self.leaves)

    @property
    def writers_checked(self) -> bool:
        """At least one writer signature was verified (not merely: a key was given)."""
        return self.signatures_checked > 0


def log_rows(conn: Connection, after: int = -(2**62),
             page: int = 5000) -> Iterator[RowMapping]:
    """Every event row with its hash columns and its command's row, in position order."""
    columns = (
        *audit.CHAIN_COLUMNS, events.c.signer, events.c.signature,
        commands.c.command_id.label("c_command_id"),
        commands.c.command_type.label("c_command_type"), commands.c.stream.label("c_stream"),
        commands.c.outcome.label("c_outcome"), commands.c.error_code.label("c_error_code"),
        commands.c.message.label("c_message"), commands.c.positions.label("c_positions"),
        type_coerce(commands.c.recorded_at, BigInteger).label("c_recorded_at"),
        commands.c.signer.label("c_signer"), commands.c.signature.label("c_signature"),
        events.c.signed_from,
    )
    joined = events.outerjoin(commands, commands.c.command_id == events.c.causation_id)
    cursor = after
    while True:
        rows = conn.execute(select(*columns).select_from(joined)
                            .where(events.c.position > cursor)
                            .order_by(events.c.position).limit(page)).all()
        for row in rows:
            yield row._mapping
        if len(rows) < page:
            return
        cursor = int(rows[-1].position)


_SCAN_COLUMNS = (
    "e.position, e.stream, e.stream_version, e.type, e.schema_version, e.data, "
    "e.recorded_at, e.causation_id, e.correlation_id, e.actor, e.node, "
    "e.prev_hash, e.hash, e.signer, e.signature, e.signed_from, "
    "c.command_id, c.command_type, c.stream, c.outcome, c.error_code, c.message, "
    "c.positions, c.recorded_at, c.signer, c.signature")
_N = len(audit.CONTENT)  # the row's content: the first columns, in CONTENT order
_DATA = audit.CONTENT.index("data")
_CAUSE = audit.CONTENT.index("causation_id")
_PREV, _HASH, _SIGNER, _SIGNATURE, _SIGNED_FROM = range(_N, _N + 5)
_C_ID = _N + 5  # the commands row's columns, in _OUTCOME order, then its signature
_C_END = _C_ID + len(OUTCOME_COLUMNS)
_C_SIGNER, _C_SIGNATURE = _C_END, _C_END + 1
_SCAN_PAGE = text(
    f"SELECT {_SCAN_COLUMNS} FROM events e LEFT OUTER JOIN commands c "
    "ON c.command_id = e.causation_id WHERE e.position > :after "
    "ORDER BY e.position LIMIT :page")


def _scan_rows(conn: Connection, after: int, page: int = 20_000) -> Iterator[Sequence[Any]]:
    """What ``log_rows`` reads, as plain tuples (the columns above, times in micros):
    the verify pass reads every row once, and building a mapping per row cost more
    than the checks made on it. Hashes come back as bytes on both drivers."""
    while True:
        rows = conn.execute(_SCAN_PAGE, {"after": after, "page": page}).all()
        yield from rows
        if len(rows) < page:
            return
        after = int(rows[-1][0])


def export_row(row: Mapping[str, Any] | RowMapping) -> dict[str, Any]:
    """An event row, its hashes, its leaf and its command's row, for an export."""
    out: dict[str, Any] = {name: row[name] for name in audit.CONTENT}
    out["data"] = bytes(out["data"])
    for name in ("prev_hash", "hash"):
        out[name] = None if row[name] is None else bytes(row[name])
    out.update(_signed(row, ""))
    out["signed_from"] = row["signed_from"]
    if row["c_command_id"] is not None:
        command = {name: row["c_" + name] for name in _OUTCOME}
        command["positions"] = bytes(command["positions"])
        command.update(_signed(row, "c_"))
        out["command"] = command
    else:
        out["command"] = None
    return out


def _signed(row: Mapping[str, Any] | RowMapping, prefix: str) -> dict[str, Any]:
    signature = row[prefix + "signature"]
    return {"signer": row[prefix + "signer"],
            "signature": None if signature is None else bytes(signature)}


def leaf_of(row_hash: bytes, row: Mapping[str, Any] | RowMapping) -> bytes:
    if row["c_command_id"] is None:
        return row_hash + NO_OUTCOME
    return row_hash + outcome_digest([row["c_" + name] for name in _OUTCOME])


def leaf_from(row_hash: bytes, command: Mapping[str, Any] | None) -> bytes:
    """The same leaf from an exported row's ``command`` map."""
    if command is None:
        return row_hash + NO_OUTCOME
    return row_hash + outcome_digest([command[name] for name in _OUTCOME])


def scan(conn: Connection, after: int = 0, chain: bytes = audit.GENESIS,
         trust: vouch.Trust | None = None, legacy: int = 0, covered: int = 0, *,
         sealed: int | None = None, bare: int = 0) -> LogScan:
    """One pass: leaves from content (not from the stored hashes), the chain check,
    the commands table checked against the events, and (with ``trust``) each row's
    writer signature after position ``covered``.

    ``covered``: the size of the largest trusted head a verifier holds. The rows it
    covers are vouched for by it if it holds, and if it does not, ``assess`` reports
    a rewrite at or before the first of them that changed: their writer signatures
    add nothing, and checking them was most of the cost of a verify. Only that they
    carry one is checked there (free): a stripped signature is reported too.

    ``sealed``: the size of the smallest head signed by a trusted key (None: no such
    head). No row after it may be unsigned, nor lack its commands row: a keyed writer
    was running by then, and it signs every row and records every outcome.

    ``after``/``chain``/``legacy``/``bare``: only the rows after that position,
    continuing the chain from that hash and the counts of unsigned rows and of rows
    without a commands row opening the log (a signer extending what it has already
    read); invented outcomes are then not looked for.
    """
    result = LogScan(legacy=legacy, bare=bare, keys=trust.key_ids() if trust else ())
    expected = after + 1
    listed: dict[str, tuple[int, ...]] = {}
    seen: dict[str, list[int]] = {}
    opening = legacy == after  # unsigned rows (before 0005 or a key) only open the log
    bare_open = bare == after  # so do rows without a commands row (before 0002)
    txn_from: int | None = None  # the first row of a transaction not yet closed
    txn_outcomes: list[bytes] = []  # its commands' outcome digests, in order
    # Per row, only what the checks need: tuples by index, one reused packer, the
    # outcome digest once per command (cProfile: mapping look-ups, a packer per call
    # and re-digesting each event's command were most of a verify's own time).
    pack_ = msgpack.Packer(use_bin_type=True).pack
    sha256 = hashlib.sha256
    leaves = result.leaves
    leaf_prefix = b"\x00"  # RFC 9162 leaf hash, as merkle.leaf_hash
    last_cid, outcome = None, NO_OUTCOME
    checking = bool(trust)
    for row in _scan_rows(conn, after if after else -(2**62)):
        position = row[0]
        if position != expected:
            result.chain_break = result.chain_break or expected
            if position < expected:
                continue  # a forged row below position 1 leaves no leaf
        content = list(row[:_N])
        if type(content[_DATA]) is not bytes and isinstance(content[_DATA],
                                                            (bytearray, memoryview)):
            content[_DATA] = bytes(content[_DATA])  # drivers may hand back memoryview
        digest = sha256(chain + pack_(content)).digest()
        if result.chain_break is None and (row[_PREV] != chain or row[_HASH] != digest):
            result.chain_break = position
        chain = digest
        expected = position + 1
        cid = row[_CAUSE]
        has_command = row[_C_ID] is not None
        if not has_command:
            outcome = NO_OUTCOME
        elif cid != last_cid or cid not in listed:
            command = list(row[_C_ID:_C_END])
            command[6] = bytes(command[6])
            outcome = sha256(pack_(command)).digest()
            listed[cid] = tuple(msgpack.unpackb(command[6]))
        last_cid = cid
        leaves.append(sha256(leaf_prefix + digest + outcome).digest())
        signed = bool(row[_SIGNER])
        after_head = sealed is not None and position > sealed
        if bare_open:
            bare_open = not has_command and not signed and not after_head
            if bare_open:
                result.bare = position
        if (not bare_open and not has_command and row[3] not in WITHOUT_COMMAND
                and result.missing_command is None):
            result.missing_command, result.missing_command_id = position, cid
        if opening:
            opening = not signed and not after_head
            if opening:
                result.legacy = position
        if not opening and checking and trust and result.forged is None:
            reason, at = None, position
            signed_from = row[_SIGNED_FROM]
            if signed and signed_from is None and row[_SIGNATURE]:
                # A row signed on its own (before revision 0007).
                if txn_from is not None:
                    reason, at = _unclosed(txn_from), txn_from
                elif position > covered:
                    reason = _writer_problem(trust, row, digest, outcome, cid in seen)
                    if reason is None:
                        result.signatures_checked += 1
                        result.checked_from = result.checked_from or position
            elif signed:  # a row of a transaction signed once, on its last row
                if txn_from is None:
                    txn_from = position
                if has_command and cid not in seen:
                    txn_outcomes.append(outcome)
                if signed_from is not None:
                    if type(signed_from) is not int or signed_from != txn_from:
                        # (SQLite stores whatever an attacker writes: text too)
                        reason, at = _unclosed(txn_from), txn_from
                    elif position > covered:
                        problem = trust.problem(vouch.TXN, vouch.txn_message(
                            txn_from, digest, vouch.outcomes_digest(txn_outcomes)),
                            row[_SIGNER], row[_SIGNATURE])
                        if problem is None:
                            result.signatures_checked += position - txn_from + 1
                            result.checked_from = result.checked_from or txn_from
                        else:
                            reason = (f"the transaction of positions {txn_from}..{position} "
                                      + problem)
                            at = txn_from
                    txn_from, txn_outcomes = None, []
            else:  # under a head or not, a row after a signed one must be signed
                reason = "the event row carries no writer signature"
            if reason is not None:
                if not signed:
                    reason += (f", after a head signed by a trusted key over {sealed} "
                               "events" if after_head else ", after a signed row")
                result.forged, result.forged_reason = at, reason
        positions = seen.get(cid)
        if positions is None:
            seen[cid] = [position]
        else:
            positions.append(position)
    if trust and result.forged is None and txn_from is not None:
        result.forged, result.forged_reason = txn_from, _unclosed(txn_from)
    for cid, positions in seen.items():
        if cid in listed and listed[cid] != tuple(positions):
            first = min(set(positions) ^ set(listed[cid]), default=positions[0])
            result.command_break = min(first, result.command_break or first)
    result.chain = chain
    if not after:
        for cid in conn.execute(select(commands.c.command_id)).scalars().all():
            if cid not in seen:
                result.orphan_commands.append(cid)
    return result


def _unclosed(first: int) -> str:
    """A transaction's rows that no signature covers: its signature was stripped (or
    the rows were appended by someone without the key)."""
    return (f"the rows from position {first} are covered by no transaction's writer "
            "signature (stripped, or appended without the key)")


def _writer_problem(trust: vouch.Trust, row: Sequence[Any], digest: bytes,
                    outcome: bytes, outcome_checked: bool) -> str | None:
    """Why a row signed on its own (and, at its command's first event, its commands
    row) is not vouched for by a trusted writer; None if it is."""
    reason = trust.problem(vouch.EVENT, digest, row[_SIGNER], row[_SIGNATURE])
    if reason is not None:
        return "the event row " + reason
    if row[_C_ID] is None or outcome_checked:
        return None
    reason = trust.problem(vouch.OUTCOME, outcome, row[_C_SIGNER], row[_C_SIGNATURE])
    return reason and "its command's outcome row " + reason


@dataclass(frozen=True, slots=True)
class HeadCheck:
    head: TreeHead
    source: str  # "stored" or a file name
    signature: str  # "ok", "bad", "unsigned", "unknown key"
    consistent: bool | None  # None: not checked (its signature does not count)


@dataclass(frozen=True, slots=True)
class Assessment:
    size: int
    root: bytes
    problems: list[tuple[int | None, str]]
    heads: list[HeadCheck]
    vouched: int  # the largest trusted head's size that holds
    legacy: int = 0  # positions 1..legacy predate writer signatures: heads only
    bare: int = 0  # positions 1..bare predate the commands table: no outcome rows
    keys: tuple[str, ...] = ()  # the writers' key ids trusted
    signatures_checked: int = 0  # event rows whose writer signature was verified,
    checked_from: int | None = None  # from this position to the end of the log

    @property
    def writers_checked(self) -> bool:
        return self.signatures_checked > 0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_affected(self) -> int | None:
        known = [p for p, _ in self.problems if p is not None]
        return min(known) if known else None


def assess(log: LogScan, heads: Sequence[tuple[TreeHead, str]],
           keys: Mapping[str, bytes]) -> Assessment:
    """Check the scanned log against every head; ``keys`` maps key id to public key."""
    tree = merkle.Tree(log.leaves)
    n = tree.size
    root = tree.root()
    problems: list[tuple[int | None, str]] = []
    if log.chain_break is not None:
        problems.append((log.chain_break, f"the hash chain breaks at position "
                                          f"{log.chain_break}"))
    if log.command_break is not None:
        problems.append((log.command_break, "the commands table disagrees with the events "
                                            f"at position {log.command_break}"))
    if log.missing_command is not None:
        problems.append((log.missing_command, f"command {log.missing_command_id} has events "
                                              "but no row in the commands table (its first "
                                              f"event is at position {log.missing_command}): "
                                              "the row was deleted"))
    if log.forged is not None:
        problems.append((log.forged, f"forged at position {log.forged}: "
                                     f"{log.forged_reason}"))
    if log.orphan_commands:
        more = len(log.orphan_commands) - 1
        problems.append((None, f"command {log.orphan_commands[0]} has an outcome but no "
                               "event" + (f" (and {more} more)" if more else "")))
    checks: list[HeadCheck] = []
    trusted: list[tuple[int, bool]] = []
    for head, source in heads:
        public = keys.get(head.key_id)
        if not head.signed:
            status = "unsigned"
        elif public is None:
            status = "unknown key"
        else:
            status = "ok" if signature_ok(head, public) else "bad"
        if status == "bad":
            problems.append((None, f"{source} head of size {head.size}: bad signature"))
        if status != "ok":
            checks.append(HeadCheck(head, source, status, None))
            continue
        if head.size > n:
            consistent = False
        else:
            proof = tree.consistency_proof(head.size, n)
            consistent = merkle.verify_consistency(head.size, n, head.root, root, proof)
        checks.append(HeadCheck(head, source, status, consistent))
        trusted.append((head.size, consistent))
    holding = [size for size, ok in trusted if ok]
    broken = sorted(size for size, ok in trusted if not ok)
    rewritten = [size for size in broken if size <= n]
    if rewritten:  # one line for the smallest: the others only widen it
        size = rewritten[0]
        below = max((s for s in holding if s < size), default=0)
        problems.append((below + 1, f"rewritten: the log no longer contains the {size} "
                                    "events a signed head vouches for (the change is in "
                                    f"positions {below + 1}..{size}; {len(broken)} signed "
                                    "head(s) no longer hold)"))
    if broken and broken[-1] > n:
        # Exact when a trusted head at size n still holds; else the events from the
        # last one that does may have been rewritten before the cut.
        below = max((s for s in holding if s <= n), default=0)
        problems.append((below + 1, f"truncated: a signed head vouches for {broken[-1]} "
                                    f"events, the log has {n}" + (
                                        "" if below == n else
                                        f" (positions {below + 1}..{n} are not vouched "
                                        "for either)")))
    vouched = max((s for s in holding), default=0)
    return Assessment(n, root, problems, checks, min(vouched, n), log.legacy, log.bare,
                      log.keys, log.signatures_checked, log.checked_from)


def trusted_sizes(heads: Sequence[TreeHead], keys: Mapping[str, bytes]) -> list[int]:
    """The sizes of the heads whose signature checks with one of ``keys``."""
    return [h.size for h in heads
            if h.key_id in keys and signature_ok(h, keys[h.key_id])]
