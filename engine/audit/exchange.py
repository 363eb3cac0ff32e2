"""Exports of the log that can be checked offline, and imports that restore it exactly.

An export (JSON lines) starts with a header holding a tree head over exactly the
events that follow, then one line per event: every stored column, the chain's
``prev_hash`` and ``hash``, the command row that caused it, and its Merkle leaf hash.
Whoever holds the auditor's public key can check it with no engine: recompute the
chain and the leaves from the content, then the root, and compare it with the signed
head (``check``). CSV carries the same event columns, one row each, for tools that
read tables; its head goes to a file of its own.

An import writes those rows back byte for byte into an empty store, so the hashes,
the tree and (after a replay) the read model are identical to the source's.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

from engine.audit import chain as audit
from engine.audit import merkle
from engine.audit.transparency import OUTCOME_COLUMNS, leaf_from
from engine.audit.treehead import TreeHead, signature_ok
from engine.errors import InvalidArgument

KIND: Final = "berth-log-export"
VERSION: Final = 1
CSV_COLUMNS: Final = (*audit.CONTENT, "prev_hash", "hash", "leaf_hash", "command", "signer",
                      "signature", "signed_from")


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def _encode_signed(out: dict[str, Any], row: Mapping[str, Any]) -> None:
    """The writer's key id and signature (engine.audit.vouch), if the row has them."""
    signature = row.get("signature")
    out["signer"] = row.get("signer")
    out["signature"] = None if signature is None else _b64(signature)
    if "signed_from" in row:  # an event row: where its transaction's signature begins
        out["signed_from"] = row["signed_from"]


def _decode_signed(out: dict[str, Any], obj: Mapping[str, Any]) -> None:
    """Older exports have neither: the rows import as written before revision 0005."""
    signer, signature = obj.get("signer"), obj.get("signature")
    if signer is not None and not isinstance(signer, str):
        raise ValueError("signer is not text")
    out["signer"] = signer
    out["signature"] = (None if signature is None
                        else base64.b64decode(signature, validate=True))


def _decode_signed_from(obj: Mapping[str, Any]) -> int | None:
    """Exports made before revision 0007 have none: rows signed one by one."""
    value = obj.get("signed_from")
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit():  # a CSV cell
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < 2**63:
        raise ValueError(f"signed_from {value!r} is not a position")
    return value


def encode_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """An exported row (``transparency.export_row``) as JSON-safe values, with its leaf."""
    out = {name: row[name] for name in audit.CONTENT}
    out["data"] = _b64(row["data"])
    out["prev_hash"] = None if row["prev_hash"] is None else row["prev_hash"].hex()
    out["hash"] = None if row["hash"] is None else row["hash"].hex()
    _encode_signed(out, row)
    command = row["command"]
    if command is not None:
        command = dict(command)
        command["positions"] = _b64(command["positions"])
        _encode_signed(command, row["command"])
    out["command"] = command
    digest = audit.link(row["prev_hash"] or audit.GENESIS, row)
    out["leaf_hash"] = merkle.leaf_hash(leaf_from(digest, row["command"])).hex()
    return out


def decode_row(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The stored values of one exported row; InvalidArgument if it is not one."""
    try:
        row: dict[str, Any] = {name: obj[name] for name in audit.CONTENT}
        for name in ("position", "stream_version", "schema_version", "recorded_at"):
            row[name] = int(row[name])
        for name in ("stream", "type", "causation_id", "correlation_id", "actor", "node"):
            if not isinstance(row[name], str):
                raise ValueError(f"{name} is not text")
        row["data"] = base64.b64decode(obj["data"], validate=True)
        row["prev_hash"] = None if obj["prev_hash"] is None else bytes.fromhex(obj["prev_hash"])
        row["hash"] = None if obj["hash"] is None else bytes.fromhex(obj["hash"])
        _decode_signed(row, obj)
        row["signed_from"] = _decode_signed_from(obj)
        command = obj.get("command")
        if command is not None:
            given = command
            command = {name: given[name] for name in OUTCOME_COLUMNS}
            command["positions"] = base64.b64decode(command["positions"], validate=True)
            command["recorded_at"] = int(command["recorded_at"])
            _decode_signed(command, given)
        row["command"] = command
        row["leaf_hash"] = bytes.fromhex(obj["leaf_hash"]) if obj.get("leaf_hash") else None
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidArgument(f"not an exported event row: {exc}") from None
    return row


def header(head: TreeHead) -> dict[str, Any]:
    return {"kind": KIND, "version": VERSION, "head": head.to_json()}


def read_jsonl(lines: Iterable[str]) -> tuple[TreeHead | None, Iterator[dict[str, Any]]]:
    """The head of an export and its rows, decoded lazily."""
    it = iter(lines)
    first = next(it, "")
    try:
        top = json.loads(first) if first.strip() else {}
    except json.JSONDecodeError:
        raise InvalidArgument("not a berth log export: the first line is not JSON") from None
    if not isinstance(top, dict) or top.get("kind") != KIND:
        raise InvalidArgument("not a berth log export: no header line")
    if top.get("version") != VERSION:
        raise InvalidArgument(f"an export of version {top.get('version')!r}: this berth "
                              f"reads version {VERSION}")
    head = None if top.get("head") is None else TreeHead.from_json(top["head"])

    def rows() -> Iterator[dict[str, Any]]:
        for number, line in enumerate(it, start=2):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                raise InvalidArgument(f"line {number} of the export is not JSON") from None
            yield decode_row(obj)

    return head, rows()


def csv_record(row: Mapping[str, Any]) -> list[Any]:
    encoded = encode_row(row)
    # JSON for the command and the signer: a CSV cell cannot tell None from "".
    return [json.dumps(encoded[name], sort_keys=True) if name in ("command", "signer")
            else encoded[name] for name in CSV_COLUMNS]


def from_csv_record(record: Mapping[str, str]) -> dict[str, Any]:
    obj: dict[str, Any] = dict(record)
    for name in ("command", "signer"):
        try:
            obj[name] = json.loads(record.get(name) or "null")
        except json.JSONDecodeError:
            raise InvalidArgument(f"a CSV row's {name} column is not JSON") from None
    for name in ("prev_hash", "hash", "signature"):
        obj[name] = obj.get(name) or None
    return decode_row(obj)


def check(rows: Iterable[Mapping[str, Any]], head: TreeHead | None,
          public: bytes | None) -> tuple[list[str], int, bytes]:
    """Problems of an export (empty: it holds), its size and its recomputed root.

    The chain and the leaves are recomputed from the content; a stated hash or leaf
    hash that differs is a problem, and so is a root that is not the head's.
    """
    problems: list[str] = []
    leaves: list[bytes] = []
    prev = audit.GENESIS
    for expected, row in enumerate(rows, start=1):
        position = row["position"]
        if position != expected and not problems:
            problems.append(f"position {expected}: missing (the next row is {position})")
        digest = audit.link(prev, row)
        if (row["prev_hash"] != prev or row["hash"] != digest) and not problems:
            problems.append(f"position {position}: the hash chain breaks")
        leaf = merkle.leaf_hash(leaf_from(digest, row["command"]))
        if row.get("leaf_hash") not in (None, leaf) and not problems:
            problems.append(f"position {position}: the stated leaf hash is not the row's")
        leaves.append(leaf)
        prev = digest
    root = merkle.root(leaves)
    if head is None:
        problems.append("the export has no tree head: nothing vouches for it")
    else:
        if head.size != len(leaves):
            problems.append(f"the head is for {head.size} events, the export has "
                            f"{len(leaves)}")
        elif head.root != root:
            problems.append("the events do not give the root the head states")
        if public is not None and not signature_ok(head, public):
            problems.append("the head's signature does not verify with the key given"
                            if head.signed else "the head is unsigned")
    return problems, len(leaves), root
