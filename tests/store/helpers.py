"""Small builders shared by the store tests."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Connection, select

from engine import events as ev
from engine.audit import chain as audit
from engine.audit import vouch
from engine.audit.treehead import Signer
from engine.store import schema
from engine.store.mapper import pack
from engine.store.store import EventStore

SPEC = ev.RunSpec(rootfs="/var/lib/berth/rootfs", args=("sleep", "1000"))


def new_id() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex


def create(store: EventStore, name: str = "web", cid: str | None = None,
           spec: ev.RunSpec = SPEC) -> str:
    cid = cid or new_id()
    store.append(cid, 0, [ev.ContainerCreated(name, "node1", f"/run/berth/{cid}", spec)],
                 command_id=uuid.uuid4().hex, command_type="container.create",
                 correlation_id="corr", actor="tester", node="node1")
    return cid


def run(store: EventStore, cid: str, version: int, *events: ev.Event) -> list[ev.RecordedEvent]:
    return store.append(cid, version, list(events), command_id=uuid.uuid4().hex,
                        command_type="container.any", actor="tester", node="node1")


def forge_append(conn: Connection, how: str) -> None:
    """A row appended by hand after the newest head, chained, with its commands row:
    with no signature, with one copied from a real row, or signed by the attacker's
    own key (which no verifier trusts)."""
    rows = [dict(r) for r in conn.execute(select(
        *audit.CHAIN_COLUMNS, schema.events.c.signer, schema.events.c.signature)
        .order_by(schema.events.c.position)).mappings()]
    last = rows[-1]
    position = int(last["position"]) + 1
    forged = last | {"position": position, "stream_version": last["stream_version"] + 1,
                     "type": ev.CONTAINER_SIGNALLED, "data": pack({"signal": 9}),
                     "causation_id": f"forged{position}", "prev_hash": bytes(last["hash"])}
    forged["hash"] = audit.link(bytes(last["hash"]), forged)
    outcome: dict[str, Any] = {
        "command_id": f"forged{position}", "command_type": "container.kill",
        "stream": last["stream"], "outcome": "ok", "error_code": None, "message": None,
        "positions": pack([position]), "recorded_at": forged["recorded_at"]}
    if how == "unsigned":
        forged["signer"] = forged["signature"] = None
    elif how == "own key":
        mallory = Signer(b"\x66" * 32)
        forged["signer"], forged["signature"] = vouch.stamp(mallory, vouch.EVENT,
                                                            forged["hash"])
    conn.execute(schema.events.insert().values(**forged))
    conn.execute(schema.commands.insert().values(**outcome))
