"""The parser of the audit commands: the wire form of each into its typed command."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.arguments import _integer
from engine.audit.treehead import TreeHead
from engine.commands import (
    AuditCheckpoint,
    AuditConsistency,
    AuditExport,
    AuditProve,
    Command,
    VerifyAudit,
)
from engine.errors import InvalidArgument


def _verify_audit(args: Mapping[str, Any]) -> VerifyAudit:
    heads = args.get("heads") or []
    keys = args.get("keys") or []
    if not isinstance(heads, list) or not isinstance(keys, list) or len(heads) > 1000:
        raise InvalidArgument("invalid heads or keys: lists expected")
    if not all(isinstance(k, bytes) and len(k) == 32 for k in keys):
        raise InvalidArgument("invalid keys: 32-byte Ed25519 public keys expected")
    return VerifyAudit(tuple(TreeHead.from_json(h) for h in heads), tuple(keys))


def parse_audit(command_type: str, _container: str | None, args: Mapping[str, Any]) -> Command:
    """A command of the audit: a verification, a signed head, a proof, an export."""
    match command_type:
        case "admin.verify_audit":
            return _verify_audit(args)
        case "audit.checkpoint":
            return AuditCheckpoint()
        case "audit.prove":
            size = None if args.get("size") is None else _integer(args, "size", 1, minimum=1)
            return AuditProve(_integer(args, "position", 0, minimum=1), size)
        case "audit.consistency":
            return AuditConsistency(_integer(args, "first", 0))
        case _:  # audit.export
            return AuditExport(_integer(args, "after", 0),
                               _integer(args, "limit", 1000, minimum=1, maximum=5000))
