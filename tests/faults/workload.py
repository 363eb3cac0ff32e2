"""Publishers that keep sending while processes die, and the checks that prove
nothing was lost or doubled.

A publisher is a thread with its own ``Client``. It resends every command with the
SAME id until it gets an answer the engine stands by (Lazy Pirate, as the design
asks of publishers), and writes each (command, reply) into a ``Ledger``. A reply
of ``unavailable`` (the broker has no worker for the node right now: it refused,
nothing ran) is retried like silence.

``check_log`` then proves the guarantees on the store itself:

* positions are 1..N and every stream's versions are 1..k (no gap, no double);
* every command id in the log has exactly the events its outcome row lists;
* every acknowledged container command has that outcome, matching its reply;
* the read model equals a rebuild, and the hash chain holds.
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bus.client import Client
from bus.protocol import Command, Reply
from engine.errors import BerthError, Timeout, Unavailable
from engine.store.store import EventStore

RETRY_CODES = {Unavailable.code}
QUERY_TYPES = ("query.ps", "query.inspect", "query.history", "query.state")


@dataclass
class Ledger:
    """Every command a publisher sent and the reply it settled on."""

    entries: list[tuple[Command, Reply]] = field(default_factory=list)
    resends: int = 0
    refusals: int = 0
    """Answers of ``unavailable`` (and raised Unavailable) that were retried."""
    errors: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, command: Command, reply: Reply, resends: int) -> None:
        with self._lock:
            self.entries.append((command, reply))
            self.resends += resends

    def refused(self) -> None:
        with self._lock:
            self.refusals += 1

    def fail(self, message: str) -> None:
        with self._lock:
            self.errors.append(message)

    def __len__(self) -> int:
        return len(self.entries)


class Publisher(threading.Thread):
    """Runs short container lifecycles (busybox ``sleep``) until told to stop or
    until it has sent ``budget`` commands."""

    def __init__(self, client: Client, ledger: Ledger, rootfs: str, node: str, *,
                 budget: int | None = None, seed: int = 0, deadline: float = 120.0,
                 queries: int = 1, use_exec: bool = True) -> None:
        super().__init__(name=f"publisher-{seed}", daemon=True)
        self.client = client
        self.ledger = ledger
        self.rootfs = rootfs
        self.node = node
        self.budget = budget
        self.sent = 0
        self.rng = random.Random(seed)
        self.deadline = deadline
        self.queries = queries
        self.use_exec = use_exec
        self.stopping = threading.Event()

    # -- one command, answered ---------------------------------------------------

    def send(self, type: str, container: str | None, **args: Any) -> Reply | None:
        """Send until answered (same id on every resend); None once out of budget/time."""
        if self.stopping.is_set() or (self.budget is not None and self.sent >= self.budget):
            return None
        command = self.client.command(type, container, self.node, args)
        self.sent += 1
        deadline = time.monotonic() + self.deadline
        resends = 0
        while True:
            try:
                reply = self.client.request(command, check=False)
            except Unavailable:
                self.ledger.refused()
                reply = None
            except Timeout:
                reply = None
            if reply is not None and not (reply.error_code in RETRY_CODES and not reply.ok):
                self.ledger.add(command, reply, resends)
                return reply
            if reply is not None:
                self.ledger.refused()
            if time.monotonic() > deadline:
                self.ledger.fail(f"{type} {command.id} got no answer within {self.deadline}s")
                self.stopping.set()
                return None
            resends += 1

    def query(self, cid: str) -> None:
        for _ in range(self.queries):
            kind = self.rng.choice(QUERY_TYPES)
            if kind == "query.ps":
                self.send(kind, None, all=True)
            else:
                self.send(kind, cid)

    # -- lifecycles --------------------------------------------------------------------

    def run(self) -> None:
        try:
            while not self.stopping.is_set() and (self.budget is None or self.sent < self.budget):
                self.lifecycle()
        except BerthError as exc:  # a bug in the test's own bookkeeping, not an engine reply
            self.ledger.fail(f"publisher crashed: {exc}")
        except Exception as exc:  # noqa: BLE001 - reported by the test, never swallowed
            self.ledger.fail(f"publisher crashed: {type(exc).__name__}: {exc}")

    def lifecycle(self) -> None:
        reply = self.send("container.create", None, rootfs=self.rootfs, args=["sleep", "600"])
        if reply is None or not reply.ok:
            return
        cid = str(reply.result["id"])
        steps: list[Callable[[], Reply | None]] = [
            lambda: self.send("container.start", cid),
        ]
        if self.use_exec and self.rng.random() < 0.5:
            steps.append(lambda: self.send("container.exec", cid, cmd=["true"]))
        if self.rng.random() < 0.5:
            steps += [lambda: self.send("container.pause", cid),
                      lambda: self.send("container.unpause", cid)]
        ending = self.rng.choice(("stop", "kill", "force"))
        if ending == "stop":
            steps.append(lambda: self.send("container.stop", cid, timeout=0))
        elif ending == "kill":
            steps += [lambda: self.send("container.kill", cid, signal="KILL"),
                      lambda: self.send("container.wait", cid, timeout=20)]
        for step in steps:
            self.query(cid)
            if step() is None:
                break
        self.send("container.remove", cid, force=True)


def run_publishers(publishers: list[Publisher], during: Callable[[], None] | None = None,
                   timeout: float = 240) -> None:
    """Start the publishers, run ``during`` (the fault) meanwhile, then let them finish."""
    for p in publishers:
        p.start()
    try:
        if during is not None:
            during()
    finally:
        if during is not None:
            for p in publishers:
                p.stopping.set()
        for p in publishers:
            p.join(timeout)
    alive = [p.name for p in publishers if p.is_alive()]
    assert not alive, f"publishers still running: {alive}"


# -- checks ---------------------------------------------------------------------------


def check_log(store: EventStore, ledger: Ledger) -> dict[str, int]:
    """Assert every guarantee the fault tests promise; return a few counts."""
    assert not ledger.errors, ledger.errors
    events = store.read_all()
    positions = [r.position for r in events]
    assert positions == list(range(1, len(events) + 1)), "the global log has a gap or a double"
    versions: dict[str, list[int]] = defaultdict(list)
    by_command: dict[str, list[int]] = defaultdict(list)
    for r in events:
        versions[r.stream].append(r.metadata.stream_version)
        by_command[r.metadata.causation_id].append(r.position)
    for stream, seen in versions.items():
        assert seen == list(range(1, len(seen) + 1)), f"stream {stream} versions {seen}"
    # Exactly once: each command id's events are exactly those its outcome row lists.
    for command_id, found in by_command.items():
        outcome = store.outcome(command_id)
        assert outcome is not None, f"events of command {command_id} have no outcome row"
        assert tuple(found) == outcome.positions, (
            f"command {command_id}: events at {found}, outcome lists {outcome.positions}")
    acknowledged = 0
    for command, reply in ledger.entries:
        if not command.type.startswith("container.") or command.type == "container.wait":
            continue
        outcome = store.outcome(command.id)
        if outcome is None:
            # Refused before anything happened (bad state, not found, ...): no events.
            assert not reply.positions, (
                f"{command.type} {command.id} replied {reply} but has no outcome"
            )
            assert command.id not in by_command
            continue
        acknowledged += 1
        assert outcome.ok == reply.ok, (
            f"{command.type} {command.id}: reply {reply}, outcome {outcome}"
        )
        assert set(outcome.positions) <= set(reply.positions), (
            f"{command.type} {command.id}: reply positions {reply.positions}, "
            f"outcome {outcome.positions}"
        )
    assert store.verify_read_model() == []
    assert store.verify_chain() is None
    return {"events": len(events), "streams": len(versions), "acknowledged": acknowledged,
            "commands": len(ledger), "resends": ledger.resends}
