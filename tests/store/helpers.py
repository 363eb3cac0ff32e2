"""Small builders shared by the store tests."""

from __future__ import annotations

import uuid

from engine import events as ev
from engine.store import EventStore

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
