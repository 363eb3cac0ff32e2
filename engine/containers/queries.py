"""Reads: answered from the store (and, for logs, from the container's log file).

Queries change nothing and are never recorded; they return domain values (states,
recorded events), which the worker turns into reply maps.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine import commands as c
from engine import events as ev
from engine.audit.transparency import Assessment
from engine.audit.treehead import ConsistencyProof, InclusionProof, Signer, TreeHead, key_id
from engine.containers.projection import EXITED, REMOVED, ContainerState
from engine.containers.service import ContainerService
from engine.errors import HandedBack, NotFound, Timeout, WrongNode
from engine.health.prober import condition_met
from engine.ids import validate_container_id

MAX_LOG_CHUNK = 512 * 1024
_WAITED = {"exited": "exit", "running": "run", "healthy": "turn healthy"}


@dataclass(frozen=True, slots=True)
class LogChunk:
    """Whole log lines from ``offset`` on, as ``[time, stream, tag, text]``."""

    lines: list[list[str]]
    offset: int
    state: str
    exit_code: int | None


@dataclass(frozen=True, slots=True)
class RebuildReport:
    containers: int
    differences: list[str]  # rows that differed from the log before the rebuild
    broken_at: int | None  # where the log's own checks fail, if they do
    rebuilt: bool


class Queries:
    """Read-only answers; waits and log long-polls wake on the service's changes."""

    def __init__(self, service: ContainerService,
                 log_path: Callable[[str], str] | None = None, *,
                 signer: Signer | None = None) -> None:
        self.service = service
        self.store = service.store
        self._log_path = log_path or service.runtime.log_path
        self.signer = signer
        """The node's auditor key: it signs tree heads, and its heads are trusted."""
        self._last_head: TreeHead | None = None
        self._signing = threading.Lock()

    def ref(self, ref: str, *, include_removed: bool = False) -> str:
        """Resolve a reference: a live container first; with ``include_removed``
        (history, inspect, state, logs) a removed one too, a name meaning the newest
        container that had it."""
        try:
            return self.store.resolve(ref)
        except NotFound:
            if include_removed:
                return self.store.resolve(ref, include_removed=True)
            raise

    def local(self, ref: str) -> str:
        """Resolve a reference to a container of THIS node (removed ones included):
        logs are files on the container's node, and a wait is woken by its exit,
        which only its node records. ``WrongNode`` redirects the publisher."""
        cid = self.ref(ref, include_removed=True)
        node = self.store.get_container(cid, include_removed=True).node
        if node != self.service.node:
            raise WrongNode(f"container {ref} lives on node {node!r}", node)
        return cid

    def resolve(self, q: c.Resolve) -> ContainerState:
        return self.store.get_container(self.ref(q.container))

    def ps(self, q: c.Ps) -> list[ContainerState]:
        return self.store.list_containers(all=q.all)

    def inspect(self, q: c.Inspect) -> ContainerState:
        return self.store.get_container(self.ref(q.container, include_removed=True),
                                        include_removed=True)

    def events(self, q: c.Events) -> tuple[list[ev.RecordedEvent], int]:
        head = self.store.max_position()
        if not q.filtered:
            return self.store.read_all(q.after + 1, q.limit), head
        cid = self.store.resolve(q.container) if q.container is not None else None
        types = list(q.types) if q.types is not None else None
        # One page from the position on: a follower paging through a big log reads
        # each matching row once, not every earlier match again for every page.
        return self.store.query(cid, types, q.since, q.until, limit=q.limit,
                                after=q.after), head

    def history(self, q: c.History) -> tuple[list[ev.RecordedEvent], int]:
        ids = self.store.named(q.container) if q.all else []
        if not ids:
            ids = [self.ref(q.container, include_removed=True)]
        streams = [r for cid in ids for r in self.store.read_stream(cid)]
        return sorted(streams, key=lambda r: r.position), self.store.max_position()

    def state_at(self, q: c.StateAt) -> tuple[list[ContainerState], datetime]:
        """What ``ps -a`` would have shown at that moment (a container asked for by
        name is shown even if it was removed by then), and the moment itself, from
        which ages are counted: the time asked, or the time of the position."""
        cid = self.ref(q.container, include_removed=True) if q.container else None
        states = self.store.state_at(position=q.at_position, time=q.at_time, container=cid)
        if cid is not None and cid not in states:
            raise NotFound(f"container {q.container} did not exist at that moment")
        moment = q.at_time
        if moment is None and q.at_position:
            found = self.store.read_all(q.at_position, 1)
            moment = found[0].metadata.recorded_at if found else None
        shown = [s for s in states.values() if cid is not None or not s.removed]
        return shown, moment or datetime.now(UTC)

    def logs(self, q: c.Logs) -> LogChunk:
        """Log lines from ``offset``. With ``wait_ms``, a long poll: answer as soon as
        there is output or the container has exited, so followers need not spin."""
        cid = validate_container_id(self.local(q.container))
        deadline = time.monotonic() + q.wait_ms / 1000
        changed = self.service.changed
        while True:
            chunk = self._read_log(cid, q.offset)
            if (chunk.lines or chunk.state in (EXITED, REMOVED)
                    or time.monotonic() >= deadline):
                return chunk
            self._unless_closing(f"following the log of {cid[:12]}")
            with changed:
                changed.wait(min(0.01, max(0.0, deadline - time.monotonic())))

    def _read_log(self, cid: str, offset: int) -> LogChunk:
        try:
            with open(self._log_path(cid), "rb") as f:
                f.seek(offset)
                data = f.read(MAX_LOG_CHUNK)
        except FileNotFoundError:
            data = b""
        # Only whole lines: a partial last line is left for the next read.
        cut = data.rfind(b"\n") + 1
        lines = []
        for raw in data[:cut].decode(errors="replace").splitlines():
            parts = raw.split(" ", 3)
            if len(parts) == 4:
                lines.append(parts)
        state = self.store.get_container(cid, include_removed=True)
        return LogChunk(lines, offset + cut, state.state, state.exit_code)

    def rebuild(self, q: c.Rebuild) -> RebuildReport:
        """Compare first (a rebuild would repair, and so hide, an edited row), then
        refuse to replay a log that does not verify (a broken chain, a deleted commands
        row, a forged or stripped row, a rewrite under a signed head: the checks of
        ``berth audit verify``, with the heads it knows) unless forced, then rebuild."""
        differences = self.store.verify_read_model() if q.verify else []
        report = self.store.assess(self._own_head(), self._keys())
        broken = report.first_affected
        if broken is not None and not q.force:
            return RebuildReport(0, differences, broken, rebuilt=False)
        return RebuildReport(self.store.rebuild_read_model(), differences, broken, True)

    def verify_audit(self, q: c.VerifyAudit) -> Assessment:
        """The log against the heads given and the stored ones; a head, or a writer's
        signature on a row, counts if it checks with a key given, this node's own, or
        one it trusts (``BERTH_AUDIT_TRUST``)."""
        return self.store.assess([*((h, "given") for h in q.heads), *self._own_head()],
                                 self._keys(q.keys))

    def _own_head(self) -> list[tuple[TreeHead, str]]:
        """The last head this worker signed, remembered here: deleting the stored
        heads does not make the rows it covered, or the unsigned ones after it, pass."""
        head = self._last_head
        return [] if head is None else [(head, "this worker's last")]

    def _keys(self, given: Sequence[bytes] = ()) -> dict[str, bytes]:
        keys = {key_id(k): k for k in given} | self.store.trusted_keys()
        if self.signer is not None:
            keys[self.signer.key_id] = self.signer.public
        return keys

    def checkpoint(self, _q: c.AuditCheckpoint) -> TreeHead:
        """A head, refused if the log no longer holds the last one this node signed
        (remembered here, so deleting stored heads does not lift the check)."""
        with self._signing:
            head = self.store.checkpoint(self.signer, self.service.node, self._last_head)
            if head.signed:
                self._last_head = head
            return head

    def prove(self, q: c.AuditProve) -> InclusionProof:
        return self.store.prove(q.position, q.size)

    def consistency(self, q: c.AuditConsistency) -> ConsistencyProof:
        """A fresh head (refused over a rewritten log) and the proof from ``first``."""
        head = self.checkpoint(c.AuditCheckpoint())
        return ConsistencyProof(q.first, head, tuple(self.store.consistency(q.first,
                                                                            head.size)))

    def export(self, q: c.AuditExport) -> tuple[list[dict[str, Any]], int]:
        return self.store.export_page(q.after, q.limit), self.store.max_position()

    def _unless_closing(self, what: str) -> None:
        """A blocked read ends when the worker stops: the container goes on (stopping
        the engine never stops one), so there is no result yet. The read is handed
        back, as a command the stopping worker never started would be: the broker
        holds it for the node's next worker, which waits on (a rolling restart
        fails no ``wait``), or answers "retry" when the whole engine stops. Answered
        ``unavailable`` here, it was cached under its id and every resend of that id
        got the same refusal."""
        if self.service.closing.is_set():
            raise HandedBack(f"the worker of node {self.service.node} is stopping: {what} "
                             "was cancelled; retry once the engine is back")

    def wait(self, q: c.Wait) -> tuple[str, int | None]:
        """Block until the container has exited (or reached ``q.condition``: running,
        healthy), or the timeout given runs out."""
        cid = self.local(q.container)
        deadline = None if q.timeout is None else time.monotonic() + q.timeout
        with self.service.changed:
            while True:
                state = self.service.latest(cid)
                if q.condition != EXITED:
                    if condition_met(self.store, state, q.condition):
                        return cid, state.exit_code
                elif state.state in (EXITED, REMOVED) and state.exit_code is not None:
                    return cid, state.exit_code
                self._unless_closing(f"waiting for {cid[:12]}")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise Timeout(f"container {cid[:12]} did not {_WAITED[q.condition]} "
                                  f"within {q.timeout:g}s")
                self.service.changed.wait(min(left, 1.0) if left is not None else 1.0)

