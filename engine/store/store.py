"""``EventStore``: the one object the worker and the CLI hold.

It only composes the parts (recorder, reader, read model, audit, time travel) and owns
the Engine; each part lives in its own module so each can be read in one sitting.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from sqlalchemy import Engine, select

from engine import events as ev
from engine.audit import chain as audit
from engine.audit import merkle, transparency, vouch
from engine.audit.treehead import InclusionProof, Signer, TreeHead, key_id, signature_ok
from engine.containers.projection import ContainerState, fold
from engine.errors import InvalidArgument, StoreError
from engine.store import readmodel, timetravel
from engine.store.db import make_engine, translated
from engine.store.mapper import Mapper
from engine.store.postgres import PostgresRecorder
from engine.store.reader import Reader
from engine.store.recorder import AppendRequest, CommandOutcome, Recorder
from engine.store.retry import RetryPolicy, retried
from engine.store.schema import commands, events, to_micros, tree_heads
from engine.store.sqlite import SQLiteRecorder

# The one place a dialect is chosen (make_engine has already refused any other).
RECORDERS: dict[str, type[Recorder]] = {
    "sqlite": SQLiteRecorder,
    "postgresql": PostgresRecorder,
}


def recorder_for(engine: Engine, mapper: Mapper) -> Recorder:
    return RECORDERS[engine.dialect.name](engine, mapper)


class EventStore:
    """The event log with its read model. Thread-safe; open one per process.

    The schema must already be at head. The store never changes it: Alembic in the
    ``migrations`` package owns it, and the programs that open a store (a worker
    starting, ``berth db upgrade``) upgrade the database first.
    """

    def __init__(self, url: str, *, synchronous: str = "NORMAL",
                 retry: RetryPolicy | None = None, signer: Signer | None = None) -> None:
        self.url = url
        # Calls that lose their connection are retried (engine.store.retry); the
        # decorated methods below are the store's whole public surface.
        self.retry_policy = retry if retry is not None else RetryPolicy.from_env()
        self._engine = make_engine(url, synchronous=synchronous)
        self._mapper = Mapper()
        self._recorder = recorder_for(self._engine, self._mapper)
        self._trusted: dict[str, bytes] = {}
        self.sign_appends_with(signer)
        self._reader = Reader(self._engine, self._mapper)
        # The tree of the leaves this process has read, the chain hash after them and
        # how many unsigned rows, and rows without a commands row, open the log: heads
        # and proofs extend it by the new rows only (see ``checkpoint``).
        self._read: tuple[merkle.Tree, bytes, int, int] = (merkle.Tree([]), audit.GENESIS,
                                                           0, 0)
        self._reading = threading.Lock()

    def sign_appends_with(self, signer: Signer | None,
                          trusted: Iterable[bytes] = ()) -> None:
        """Sign every transaction this store appends from now on with ``signer`` (a worker's
        auditor key, engine.audit.vouch), and vouch in tree heads only for rows whose
        writer is that key, ``trusted`` (other writers' public keys) or the head's own."""
        self._recorder.writer = signer
        self._trusted = {key_id(public): public for public in trusted}
        if signer is not None:
            self._trusted[signer.key_id] = signer.public

    def trusted_keys(self) -> dict[str, bytes]:
        """Key id to public key of the writers this store's heads vouch for."""
        return dict(self._trusted)

    def _trust(self, signer: Signer | None) -> vouch.Trust | None:
        keys = dict(self._trusted)
        if signer is not None:
            keys[signer.key_id] = signer.public
        return vouch.Trust(keys) if keys else None

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- writes ---------------------------------------------------------------

    @retried
    def append(self, stream: str, expected_version: int | None,
               events: Sequence[ev.Event], *, command_id: str, command_type: str,
               correlation_id: str = "", actor: str = "", node: str = "",
               ) -> list[ev.RecordedEvent]:
        """Append one command's events to one stream, atomically with its outcome
        and the read model.

        A command id seen before returns what it recorded then and writes nothing,
        so a publisher's retry is harmless. A stream at a version other than
        ``expected_version`` raises ConcurrencyError and writes nothing; a name
        already used by a live container raises AlreadyExists.
        """
        request = AppendRequest(stream, expected_version, tuple(events), command_id,
                                command_type, correlation_id, actor, node)
        return self._recorder.append([request])[0]

    @retried
    def append_batch(self, requests: Sequence[AppendRequest],
                     ) -> list[list[ev.RecordedEvent]]:
        """Several commands in one transaction, for throughput. All or nothing: one
        conflict refuses the whole batch, so retry the rest one by one."""
        return self._recorder.append(requests)

    @retried
    def record_failure(self, command_id: str, command_type: str, stream: str, code: str,
                       message: str, *, correlation_id: str = "", actor: str = "",
                       node: str = "") -> list[ev.RecordedEvent]:
        """Record that a command failed: a ``command.failed`` event in ``stream`` plus an
        error outcome, so a retry gets the same error and the history shows it.

        The failure is appended whatever the stream's version: it reports a decision
        that was not taken, so it cannot conflict with one that was.
        """
        failed = ev.CommandFailed(command_type=command_type, code=code, message=message)
        request = AppendRequest(stream, None, (failed,), command_id, command_type,
                                correlation_id, actor, node)
        return self._recorder.record_failure(request, code, message)

    @retried
    def record_refusal(self, command_id: str, command_type: str, container: str, code: str,
                       message: str, *, correlation_id: str = "", actor: str = "",
                       node: str = "") -> list[ev.RecordedEvent]:
        """Record that the rules refused a command: a ``command.refused`` event in the
        refusals stream (never the container's: nothing about it changed) plus an error
        outcome, so a retry gets the same error and the audit trail shows who asked."""
        refused = ev.CommandRefused(command_type=command_type, container=container, code=code,
                                    message=message)
        request = AppendRequest(ev.REFUSALS_STREAM, None, (refused,), command_id, command_type,
                                correlation_id, actor, node)
        return self._recorder.record_failure(request, code, message)

    @retried
    def outcome(self, command_id: str) -> CommandOutcome | None:
        return self._recorder.outcome(command_id)

    # -- reads of the log -----------------------------------------------------

    @retried
    def read_stream(self, stream: str, from_version: int = 1) -> list[ev.RecordedEvent]:
        return self._reader.read_stream(stream, from_version)

    @retried
    def read_all(self, from_position: int = 1,
                 limit: int | None = None) -> list[ev.RecordedEvent]:
        return self._reader.read_all(from_position, limit)

    def iter_all(self, from_position: int = 1) -> Iterator[ev.RecordedEvent]:
        return self._reader.iter_all(from_position=from_position)

    @retried
    def query(self, container: str | None = None, types: Sequence[str] | None = None,
              since: datetime | None = None, until: datetime | None = None,
              newest_first: bool = False, limit: int | None = None, after: int = 0,
              ) -> list[ev.RecordedEvent]:
        return self._reader.query(container, types, since, until, newest_first, limit,
                                  after)

    @retried
    def max_position(self) -> int:
        return self._reader.max_position()

    @property
    def reader(self) -> Reader:
        return self._reader

    # -- read model -----------------------------------------------------------

    @retried
    def list_containers(self, all: bool = False,
                        node: str | None = None) -> list[ContainerState]:
        with translated("list containers"), self._engine.connect() as conn:
            return readmodel.list_containers(conn, all=all, node=node)

    @retried
    def get_container(self, container_id: str, *,
                      include_removed: bool = False) -> ContainerState:
        with translated("get container"), self._engine.connect() as conn:
            return readmodel.get_container(conn, container_id,
                                           include_removed=include_removed)

    @retried
    def resolve(self, ref: str, *, include_removed: bool = False) -> str:
        with translated("resolve"), self._engine.connect() as conn:
            return readmodel.resolve(conn, ref, include_removed=include_removed)

    def named(self, name: str) -> list[str]:
        """Every container that ever had ``name``, newest first."""
        with translated("named"), self._engine.connect() as conn:
            return readmodel.named(conn, name)

    @retried
    def rebuild_read_model(self) -> int:
        """Drop every row and replay the whole log, under the writer lock so no append
        interleaves. Returns the number of containers written."""
        with translated("rebuild read model"), self._recorder.writing() as conn:
            states = fold(self._reader.iter_all(conn=conn))
            readmodel.replace_all(conn, states)
            self._recorder.forget_states()
            return len(states)

    @retried
    def verify_read_model(self) -> list[str]:
        """Differences between the rows and a fresh fold of the log (empty if none)."""
        with translated("verify read model"), self._recorder.snapshot() as conn:
            states = fold(self._reader.iter_all(conn=conn))
            rows = readmodel.all_states(conn)
        return readmodel.differences(states, rows)

    # -- time travel and audit --------------------------------------------------

    @retried
    def state_at(self, position: int | None = None, time: datetime | None = None,
                 container: str | None = None) -> dict[str, ContainerState]:
        return timetravel.state_at(self._reader, position, time, container)

    @retried
    def verify_chain(self) -> int | None:
        """None if the hash chain holds; else the first position where it breaks."""
        with translated("verify chain"), self._recorder.snapshot() as conn:
            return audit.first_break(audit.chain_rows(conn))

    @retried
    def head(self) -> tuple[int, str]:
        """(position, hex hash) of the last event: anchor it elsewhere for audits."""
        with translated("head"), self._engine.connect() as conn:
            row = conn.execute(select(events.c.position, events.c.hash)
                               .order_by(events.c.position.desc()).limit(1)).first()
        if row is None:
            return 0, audit.GENESIS.hex()
        if row.hash is None:
            raise StoreError(f"event {row.position} has no hash")
        return int(row.position), bytes(row.hash).hex()


    # -- the Merkle tree and its signed heads (engine.audit.transparency) -----------

    @retried
    def scan_log(self, keys: Mapping[str, bytes] | None = None) -> transparency.LogScan:
        """The log's leaves and its chain and commands checks, from one snapshot; with
        ``keys`` (key id to public key), the writers' signatures too."""
        with translated("scan log"), self._recorder.snapshot() as conn:
            return transparency.scan(conn, trust=vouch.Trust(keys) if keys else None)

    @retried
    def tree_heads(self, *, key_id: str | None = None,
                   newest: int | None = None) -> list[TreeHead]:
        """Stored heads, oldest first; or (``newest``) the last few, newest first."""
        query = select(tree_heads)
        if key_id is not None:
            query = query.where(tree_heads.c.key_id == key_id)
        if newest is not None:
            query = query.order_by(tree_heads.c.id.desc()).limit(newest)
        else:
            query = query.order_by(tree_heads.c.id)
        with translated("tree heads"), self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [TreeHead(int(r.tree_size), bytes(r.root_hash), int(r.timestamp_us),
                         r.key_id, bytes(r.signature), r.node) for r in rows]

    @retried
    def record_head(self, head: TreeHead) -> None:
        with translated("record tree head"), self._engine.begin() as conn:
            conn.execute(tree_heads.insert().values(
                tree_size=head.size, root_hash=head.root, timestamp_us=head.timestamp_us,
                key_id=head.key_id, signature=head.signature, node=head.node))

    def checkpoint(self, signer: Signer | None, node: str = "",
                   after: TreeHead | None = None) -> TreeHead:
        """A tree head over the log as it is now, signed if ``signer`` is given, and
        kept in the ``tree_heads`` table.

        The head extends the leaves this store already signed over with the rows
        appended since (read once, checked against the chain hash it ended on), so
        it costs the new rows, not the log, and it signs what this process read: a
        row rewritten behind it never enters a head, and rows appended after a
        rewritten chain do not link and are refused. A process that has read nothing
        yet (a worker just started) reads the whole log and refuses it if it no
        longer holds the last head this signer made (``after``, as the caller
        remembers it, or the newest stored one its key signed). No head covers a row
        whose writer signature does not check (engine.audit.vouch).
        """
        with self._reading:
            earlier = [after] if after is not None else []
            if signer is not None:
                earlier += self._newest_head({signer.key_id: signer.public})
            return self._sign(self._tree("not signing it", signer, earlier), signer, node)

    def _newest_head(self, keys: Mapping[str, bytes]) -> list[TreeHead]:
        """The newest stored head of each of ``keys`` whose signature checks (of its
        last ten): heads whose rows were checked when they were signed."""
        found = []
        for kid, public in keys.items():
            found += [h for h in self.tree_heads(key_id=kid, newest=10)
                      if signature_ok(h, public)][:1]
        return found

    def _tree(self, refusal: str, signer: Signer | None = None,
              earlier: Sequence[TreeHead] = ()) -> merkle.Tree:
        """The tree read so far, extended by the rows appended since (under the lock).

        Rows enter it only if their writer signatures check with a trusted key (when
        any is known): a head never vouches for a row no trusted writer vouched for.
        A process reading the log for the first time skips that check for the rows
        ``earlier`` cover (heads of trusted keys, which were signed over checked rows),
        and keeps what it read only if the log still holds each of them. No row after
        the smallest of them may be unsigned (``transparency.scan``'s ``sealed``)."""
        tree, chain, legacy, bare = self._read
        covered = max((h.size for h in earlier), default=0) if tree.size == 0 else 0
        sealed = min((h.size for h in earlier), default=None)
        with translated("scan log"), self._recorder.snapshot() as conn:
            tail = transparency.scan(conn, tree.size, chain, self._trust(signer), legacy,
                                     covered, sealed=sealed, bare=bare)
        broken = tail.chain_break or tail.command_break
        if broken is not None:
            raise StoreError(f"the log is broken at position {broken}: {refusal}")
        if tail.missing_command is not None:
            raise StoreError(f"command {tail.missing_command_id} has events but no row in "
                             "the commands table (its first event is at position "
                             f"{tail.missing_command}): {refusal}")
        if tail.forged is not None:
            raise StoreError(f"forged at position {tail.forged}: {tail.forged_reason}: "
                             f"{refusal}")
        if tree.size == 0:
            tree = merkle.Tree(tail.leaves)
            _still_holds(tree, earlier, refusal)  # before keeping rows left unchecked
        else:
            tree.extend(tail.leaves)
        self._read = (tree, tail.chain, tail.legacy, tail.bare)
        _still_holds(tree, earlier, refusal)
        return tree

    def _sign(self, tree: merkle.Tree, signer: Signer | None, node: str) -> TreeHead:
        size, root = tree.size, tree.root()
        now = to_micros(datetime.now(UTC))
        head = (signer.sign(size, root, now, node) if signer is not None
                else TreeHead(size, root, now, "", b"", node))
        self.record_head(head)
        return head

    @retried
    def assess(self, given: Sequence[tuple[TreeHead, str]],
               keys: dict[str, bytes]) -> transparency.Assessment:
        """The log checked against the heads given (files) and the stored ones, its
        rows after the largest trusted head against their writers' signatures, and no
        row after the smallest one unsigned or without its commands row."""
        heads = [*given, *((h, "stored") for h in self.tree_heads())]
        sizes = transparency.trusted_sizes([h for h, _ in heads], keys)
        with translated("scan log"), self._recorder.snapshot() as conn:
            log = transparency.scan(conn, trust=vouch.Trust(keys) if keys else None,
                                    covered=max(sizes, default=0),
                                    sealed=min(sizes, default=None))
        return transparency.assess(log, heads, keys)

    @retried
    def prove(self, position: int, size: int | None = None) -> InclusionProof:
        """An inclusion proof of event ``position`` in the tree of ``size`` events
        (the whole log by default), with the row it proves, from the tree this
        process has read (extended by the new rows): a row rewritten behind it then
        no longer matches its proof's leaf, and the proof fails for what it shows."""
        with self._reading:
            tree = self._tree("no proof from it", None, self._newest_head(self._trusted))
            n = tree.size if size is None else size
            if not 1 <= position <= n <= tree.size:
                raise InvalidArgument(f"no event {position} in a log of {n} events "
                                      f"(it has {tree.size})")
            path = tree.inclusion_proof(position - 1, n)
            leaf_hash = tree.leaf(position - 1)
        with translated("prove"), self._engine.connect() as conn:
            row = next(transparency.log_rows(conn, after=position - 1, page=1))
        prev = (audit.GENESIS if row["prev_hash"] is None else bytes(row["prev_hash"]))
        leaf = transparency.leaf_of(audit.link(prev, row), row)
        if merkle.leaf_hash(leaf) != leaf_hash:
            raise StoreError(f"event {position} was changed after it was read: the "
                             "log has been tampered with (run berth audit verify)")
        event = {"position": position, "stream": row["stream"], "type": row["type"],
                 "actor": row["actor"], "node": row["node"],
                 "causation_id": row["causation_id"], "recorded_at_us": row["recorded_at"],
                 "prev_hash": prev.hex(), "canonical": audit.canonical(row).hex()}
        return InclusionProof(position, n, leaf, tuple(path), event)

    def consistency(self, first: int, second: int) -> list[bytes]:
        """PROOF(first, D[second]) of RFC 9162 §2.1.4 over the tree this process read."""
        with self._reading:
            tree = self._tree("no proof from it", None, self._newest_head(self._trusted))
            if not 0 <= first <= second <= tree.size:
                raise InvalidArgument(f"no consistency proof from {first} to {second} "
                                      f"events (the log has {tree.size})")
            return tree.consistency_proof(first, second)

    @retried
    def export_page(self, after: int, limit: int) -> list[dict[str, Any]]:
        """Rows after position ``after`` as they are stored, each with its leaf and its
        command's row: what ``berth log import`` writes back, byte for byte."""
        with translated("export"), self._recorder.snapshot() as conn:
            rows = list(itertools.islice(transparency.log_rows(conn, after, page=limit),
                                         limit))
        return [transparency.export_row(r) for r in rows]

    def import_rows(self, rows: Iterable[dict[str, Any]], head: TreeHead | None) -> int:
        """Write exported rows (``engine.audit.exchange``) into this EMPTY store as they
        were stored, commands and head included, then replay the read model. Returns
        the number of events. Refuses a store holding anything."""
        count = 0
        with translated("import"), self._recorder.writing() as conn:
            for table in (events, commands, tree_heads):
                if conn.execute(select(table).limit(1)).first() is not None:
                    raise InvalidArgument(f"the store is not empty (its {table.name} table "
                                          "has rows): import only into a new database")
            seen: set[str] = set()
            batch: list[dict[str, Any]] = []
            outcomes: list[dict[str, Any]] = []
            for row in rows:
                count += 1
                batch.append({name: row[name] for name in (*audit.CONTENT, "prev_hash",
                                                           "hash")}
                             | {name: row.get(name)
                                for name in ("signer", "signature", "signed_from")})
                command = row["command"]
                if command is not None and command["command_id"] not in seen:
                    seen.add(command["command_id"])
                    outcomes.append({"signer": None, "signature": None, **command})
                if len(batch) >= 5000:
                    conn.execute(events.insert(), batch)
                    batch = []
            if batch:
                conn.execute(events.insert(), batch)
            if outcomes:
                conn.execute(commands.insert(), outcomes)
            if head is not None:
                conn.execute(tree_heads.insert().values(
                    tree_size=head.size, root_hash=head.root, timestamp_us=head.timestamp_us,
                    key_id=head.key_id, signature=head.signature, node=head.node))
        self.rebuild_read_model()
        return count


def _still_holds(tree: merkle.Tree, heads: Sequence[TreeHead], refusal: str) -> None:
    for head in heads:
        if head.size > tree.size or not merkle.verify_consistency(
                head.size, tree.size, head.root, tree.root(),
                tree.consistency_proof(head.size)):
            raise StoreError(f"the log no longer holds the {head.size} events of the last "
                             f"head signed: {refusal} (run berth audit verify)")
