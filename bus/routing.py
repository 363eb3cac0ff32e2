"""The broker's bookkeeping, kept free of sockets so its rules read in one place.

Which worker gets a command, which commands a worker still owes, which commands
wait for a worker of their node, and which recent command ids were answered (so
a client retrying the same id gets the same reply and the handler runs once).
The broker (bus.broker) owns one :class:`Router` and does the socket I/O.

A worker's queue is bounded: the broker hands it at most ``queue_limit`` commands
at a time, and one sender at most half of them, so a flood from one sender fills
only its own share; the sender is told to retry later (``RateLimited``) and the
worker, busy but healthy, is never mistaken for a dead one.
"""

from __future__ import annotations

import itertools
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Final

from bus.protocol import Command
from engine.errors import RateLimited, Unavailable

MIN_QUEUE: Final = 256
"""Commands a worker may owe at least, whatever capacity it announced (a worker
re-admitted by its heartbeat has not announced one yet)."""
QUEUE_PER_SLOT: Final = 8
"""Commands a worker may owe per command it runs at once (its capacity)."""
MAX_WAITING: Final = 10_000
"""Commands held for an absent worker at most; more are refused at once, so a
flood while a node is away cannot grow the broker without bound."""
MAX_NODES_SEEN: Final = 4096
"""Nodes remembered as having had a worker (oldest forgotten first)."""
DEFAULT_REPLY_BYTES: Final = 64 * 1024 * 1024
"""Most bytes of answered replies kept for retries (a reply frame may be 1 MiB)."""

Envelope = tuple[bytes, ...]
"""The routing frames in front of a client's payload: (identity,) or (identity, b"")."""


@dataclass(slots=True)
class WorkerState:
    """A live worker as the broker sees it."""

    identity: bytes
    node: str
    capacity: int
    expires_at: float
    outstanding: set[str] = field(default_factory=set)
    last_dispatch: int = 0
    by_sender: Counter[str] = field(default_factory=Counter)
    """How many of ``outstanding`` each actor sent."""
    stopping: bool = False
    """It handed a command back: it is draining and gets no new ones."""

    @property
    def queue_limit(self) -> int:
        return max(MIN_QUEUE, QUEUE_PER_SLOT * self.capacity)

    def full_for(self, actor: str) -> str | None:
        """Why this worker takes no more commands from ``actor`` now, or None."""
        if len(self.outstanding) >= self.queue_limit:
            return f"all {self.queue_limit} places in its queue are taken"
        share = self.queue_limit // 2
        if self.by_sender[actor] >= share:
            return f"{actor} already has {share} commands in its queue, its share"
        return None


@dataclass(slots=True)
class Pending:
    """A command the broker accepted and has not answered yet."""

    command: Command
    frame: bytes
    clients: list[Envelope]
    """Who asked: the first sender and the sockets of its retries (all get the reply)."""
    worker: bytes | None = None
    deadline: float | None = None
    """Set while the command waits for a worker (after its worker was lost)."""
    received: float = 0.0
    """When the broker accepted it (time.monotonic()), for the latency it reports."""


class RecentReplies:
    """A map of command id -> encoded reply bounded in entries and in bytes,
    oldest forgotten first."""

    def __init__(self, size: int, max_bytes: int = DEFAULT_REPLY_BYTES) -> None:
        self._size = size
        self._max_bytes = max_bytes
        self._bytes = 0
        self._items: OrderedDict[str, bytes] = OrderedDict()

    def get(self, command_id: str) -> bytes | None:
        return self._items.get(command_id)

    def put(self, command_id: str, frame: bytes) -> None:
        old = self._items.pop(command_id, None)
        if old is not None:
            self._bytes -= len(old)
        self._items[command_id] = frame
        self._bytes += len(frame)
        while len(self._items) > self._size or (self._bytes > self._max_bytes
                                                and len(self._items) > 1):
            _, dropped = self._items.popitem(last=False)
            self._bytes -= len(dropped)

    def __contains__(self, command_id: object) -> bool:
        return command_id in self._items

    def __len__(self) -> int:
        return len(self._items)


class Router:
    """Routing rules: commands to workers by node, least-loaded, and re-dispatch."""

    def __init__(self, *, worker_timeout: float, pending_timeout: float, cache_size: int) -> None:
        self.worker_timeout = worker_timeout
        self.pending_timeout = pending_timeout
        self.workers: dict[bytes, WorkerState] = {}
        self.outstanding: dict[str, Pending] = {}
        self.replies = RecentReplies(cache_size)
        self.max_waiting = MAX_WAITING
        self.nodes_seen: OrderedDict[str, None] = OrderedDict()
        """Nodes that had a worker since this broker started: a command for one of
        them waits for its worker to come back instead of being refused."""
        self._seq = itertools.count(1)

    # ------------------------------------------------------------------ workers

    def register(self, identity: bytes, node: str, capacity: int, now: float) -> WorkerState:
        worker = self.workers.get(identity)
        if worker is None or worker.node != node:
            orphans = self.remove(identity) if worker is not None else []
            worker = WorkerState(identity, node, capacity, now + self.worker_timeout)
            self.workers[identity] = worker
            for pending in orphans:  # a worker that changed node gives its work back
                pending.worker = None
                pending.deadline = now + self.pending_timeout
        else:
            worker.capacity = capacity
            worker.stopping = False  # it announced itself again: it takes commands
        worker.expires_at = now + self.worker_timeout
        self.nodes_seen[node] = None
        self.nodes_seen.move_to_end(node)
        while len(self.nodes_seen) > MAX_NODES_SEEN:
            self.nodes_seen.popitem(last=False)
        return worker

    def touch(self, identity: bytes, now: float) -> bool:
        """Refresh a worker's liveness; False if the broker does not know it."""
        worker = self.workers.get(identity)
        if worker is None:
            return False
        worker.expires_at = now + self.worker_timeout
        return True

    def remove(self, identity: bytes) -> list[Pending]:
        """Forget a worker; return the commands it had not answered."""
        worker = self.workers.pop(identity, None)
        if worker is None:
            return []
        orphans = [self.outstanding[cid] for cid in worker.outstanding if cid in self.outstanding]
        for pending in orphans:
            pending.worker = None
        return orphans

    def expired(self, now: float) -> list[bytes]:
        return [ident for ident, w in self.workers.items() if w.expires_at < now]

    # ------------------------------------------------------------------ routing

    def target_node(self, command: Command) -> str | None:
        """The node a command must run on, or None when any worker will do.

        A container command that names no node goes to any worker: the worker
        resolves the reference and, if the container lives elsewhere, answers
        ``wrong_node`` with the node, and the publisher sends it there.
        """
        return command.node

    def choose(self, command: Command, node: str | None) -> WorkerState | None:
        """The live worker for a command: one already busy with its container, else
        the least loaded (fewest outstanding commands, then least recently used)."""
        candidates = [w for w in self.workers.values()
                      if (node is None or w.node == node) and not w.stopping]
        if not candidates:
            return None
        if command.container is not None:
            for worker in candidates:
                for cid in worker.outstanding:
                    other = self.outstanding.get(cid)
                    if other is not None and other.command.container == command.container:
                        return worker  # keep one container's commands in one queue
        return min(candidates, key=lambda w: (len(w.outstanding), w.last_dispatch))

    def busy(self, command: Command, worker: WorkerState) -> RateLimited | None:
        """The refusal of a fresh command ``worker`` has no room for, or None."""
        reason = worker.full_for(command.actor)
        if reason is None:
            return None
        return RateLimited(f"the worker of node {worker.node} is busy ({reason}); "
                           "retry later")

    def assign(self, pending: Pending, worker: WorkerState) -> None:
        pending.worker = worker.identity
        pending.deadline = None
        if pending.command.id not in worker.outstanding:
            worker.outstanding.add(pending.command.id)
            worker.by_sender[pending.command.actor] += 1
        worker.last_dispatch = next(self._seq)
        self.outstanding[pending.command.id] = pending

    def refuse_at_once(self, node: str | None) -> bool:
        """A command no worker can take now is refused at once only when its node
        never had a worker while others did; otherwise its worker is away for a
        moment (restarting, upgraded, not connected yet after a start) and the
        command waits for it, as it would in a queue."""
        return node is not None and bool(self.nodes_seen) and node not in self.nodes_seen

    def hold_until(self, command: Command, now: float) -> float:
        """When a command waiting for a worker is answered ``unavailable``: just
        before its publisher stops waiting (so the answer still reaches it), or
        after the broker's own limit when the publisher said nothing."""
        if command.wait is None:
            return now + self.pending_timeout
        return now + command.wait - min(1.0, command.wait / 10)

    def unavailable(self, command: Command, node: str | None) -> Unavailable:
        if node is None:
            return Unavailable("no live worker is connected to the broker")
        return Unavailable(f"no live worker for node {node!r}")

    def complete(self, command_id: str) -> Pending | None:
        """A reply arrived: forget the command and free its worker's slot."""
        pending = self.outstanding.pop(command_id, None)
        if pending is None:
            return None
        if pending.worker is not None:
            worker = self.workers.get(pending.worker)
            if worker is not None and command_id in worker.outstanding:
                worker.outstanding.discard(command_id)
                actor = pending.command.actor
                worker.by_sender[actor] -= 1
                if worker.by_sender[actor] <= 0:
                    del worker.by_sender[actor]
        return pending

    def take_back(self, identity: bytes, command_id: str) -> Pending | None:
        """A stopping worker gave ``command_id`` back unrun: mark it stopping, free
        the slot, and return the command to route again (None if it is not this
        worker's to give back)."""
        worker = self.workers.get(identity)
        pending = self.outstanding.get(command_id)
        if worker is None or pending is None or pending.worker != identity:
            return None
        worker.stopping = True
        self.complete(command_id)
        pending.worker = None
        self.outstanding[command_id] = pending
        return pending

    def waiting(self) -> list[Pending]:
        return [p for p in self.outstanding.values() if p.worker is None]
