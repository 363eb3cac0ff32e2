"""Every Alembic revision upgrades a database seeded at that revision to head, and head
matches the tables the store is written against."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from engine import events as ev
from engine.audit.treehead import Signer
from engine.store.db import make_engine
from engine.store.mapper import pack
from engine.store.schema import metadata
from engine.store.store import EventStore
from migrations.runner import current_revision, head_revision, revisions, upgrade
from tests.store.helpers import SPEC

CID = "f" * 64
WRITER = Signer(b"\x07" * 32)
T = 1_700_000_000_000_000  # epoch micros

_events_v1 = sa.table("events", *(sa.column(c) for c in (
    "position", "stream", "stream_version", "type", "schema_version", "data", "recorded_at",
    "causation_id", "correlation_id", "actor", "node")))
_containers = sa.table("containers", *(sa.column(c) for c in (
    "id", "name", "state", "node", "bundle", "rootfs", "command", "spec", "pid",
    "conmon_pid", "exit_code", "exit_reason", "created_at", "started_at", "finished_at",
    "restart_count", "paused", "auto_remove", "removed", "checkpoint_path", "exec_sessions",
    "version", "last_position")))
_commands = sa.table("commands", *(sa.column(c) for c in (
    "command_id", "command_type", "stream", "outcome", "error_code", "message", "positions",
    "recorded_at")))


def _seed_0001(conn: sa.Connection) -> None:
    """A container that ran and exited, as berth 0001 wrote it: ``exited`` still v1."""
    rows = [
        (1, ev.CONTAINER_CREATED, 1,
         ev.ContainerCreated("old", "n1", "/b", SPEC).to_data()),
        (2, ev.CONTAINER_PID_RECEIVED, 1, {"pid": 10, "conmon_pid": 9}),
        (3, ev.CONTAINER_STARTED, 1, {}),
        (4, ev.CONTAINER_EXITED, 1, {"exit_code": 3}),
    ]
    conn.execute(_events_v1.insert(), [
        {"position": p, "stream": CID, "stream_version": p, "type": t, "schema_version": v,
         "data": pack(d), "recorded_at": T + p,
         "causation_id": "c2" if p == 3 else f"c{p}",  # one start: pid and started
         "correlation_id": "", "actor": "old-cli", "node": "n1"} for p, t, v, d in rows])
    conn.execute(_containers.insert().values(
        id=CID, name="old", state="exited", node="n1", bundle="/b", rootfs=SPEC.rootfs,
        command="sleep 1000", spec=pack(SPEC.to_data()), pid=None, conmon_pid=None,
        exit_code=3, exit_reason="unknown", created_at=T + 1, started_at=T + 3,
        finished_at=T + 4, restart_count=0, paused=False, auto_remove=False, removed=False,
        checkpoint_path=None, exec_sessions=pack([]), version=4, last_position=4))


def _seed_0002(conn: sa.Connection) -> None:
    """0002 records each command's outcome: the create (position 1) was written
    before it and has no row; the start and the exit after it have theirs."""
    _seed_0001(conn)
    conn.execute(_commands.insert().values(
        command_id="c2", command_type="container.start", stream=CID, outcome="ok",
        error_code=None, message=None, positions=pack([2, 3]), recorded_at=T + 3))
    conn.execute(_commands.insert().values(
        command_id="c4", command_type="container.exit", stream=CID, outcome="ok",
        error_code=None, message=None, positions=pack([4]), recorded_at=T + 4))


def _seed_0003(conn: sa.Connection) -> None:
    _seed_0002(conn)
    from engine.audit.chain import GENESIS, link
    rows = conn.execute(sa.text("SELECT * FROM events ORDER BY position")).mappings().all()
    prev = GENESIS
    for row in rows:
        digest = link(prev, row)
        conn.execute(sa.text("UPDATE events SET prev_hash = :ph, hash = :h "
                             "WHERE position = :p"),
                     {"ph": prev, "h": digest, "p": row["position"]})
        prev = digest


def _seed_0004(conn: sa.Connection) -> None:
    """0004 adds the tree heads table; an unsigned head over the seeded log."""
    _seed_0003(conn)
    conn.execute(sa.text("INSERT INTO tree_heads (tree_size, root_hash, timestamp_us, key_id, "
                         "signature, node) VALUES (4, :r, :t, '', :s, 'n1')"),
                 {"r": b"\x00" * 32, "t": T + 5, "s": b""})


def _seed_0005(conn: sa.Connection) -> None:
    """0005 adds writer signatures: the same log, each row signed by its writer but
    the create, which is older than the commands table (0002) and so unsigned."""
    from engine.audit import vouch
    from engine.audit.transparency import OUTCOME_COLUMNS, outcome_digest

    _seed_0004(conn)
    for row in conn.execute(sa.text("SELECT position, hash FROM events "
                                    "WHERE position > 1")).all():
        signer, signature = vouch.stamp(WRITER, vouch.EVENT, bytes(row.hash))
        conn.execute(sa.text("UPDATE events SET signer = :k, signature = :s "
                             "WHERE position = :p"),
                     {"k": signer, "s": signature, "p": row.position})
    for row in conn.execute(sa.select(_commands)).all():
        signer, signature = vouch.stamp(WRITER, vouch.OUTCOME, outcome_digest(
            [getattr(row, name) for name in OUTCOME_COLUMNS]))
        conn.execute(sa.text("UPDATE commands SET signer = :k, signature = :s "
                             "WHERE command_id = :c"),
                     {"k": signer, "s": signature, "c": row.command_id})


SEEDERS: dict[str, Callable[[sa.Connection], None]] = {
    "0001": _seed_0001, "0002": _seed_0002, "0003": _seed_0003, "0004": _seed_0004,
    "0005": _seed_0005, "0006": _seed_0005,  # 0006 adds an index: the same rows
    "0007": _seed_0005,  # 0007 adds a column, NULL on rows signed one by one
}


def test_every_revision_has_a_seeded_upgrade_test() -> None:
    assert list(SEEDERS) == revisions()
    assert revisions()[-1] == head_revision()


def test_upgrade_from_each_revision_with_data(db_url: str) -> None:
    for revision in revisions():
        _reset(db_url)
        upgrade(db_url, revision)
        assert current_revision(db_url) == revision
        engine = make_engine(db_url)
        with engine.begin() as conn:
            SEEDERS[revision](conn)
        engine.dispose()

        upgrade(db_url)
        store = EventStore(db_url, signer=WRITER)
        try:
            assert current_revision(db_url) == head_revision()
            history = store.read_stream(CID)
            assert [r.type for r in history][-1] == ev.CONTAINER_EXITED
            # The v1 exited row comes back as a typed v2 event (the upcaster).
            assert history[-1].event == ev.Exited(3, None, False, "unknown")
            assert history[0].metadata.actor == "old-cli"
            assert store.verify_chain() is None
            assert store.verify_read_model() == []
            assert store.get_container(CID).exit_code == 3
            if revision >= "0002":
                outcome = store.outcome("c2")
                assert outcome is not None and outcome.positions == (2, 3)
            # Life goes on after the upgrade, chained onto the old rows.
            more = store.append(CID, 4, [ev.Removed()], command_id="after",
                                command_type="container.rm")
            assert more[0].position == 5 and more[0].metadata.stream_version == 5
            assert store.verify_chain() is None
            log = store.scan_log({WRITER.key_id: WRITER.public})
            assert (log.size, log.chain_break, log.command_break) == (5, None, None)
            # Rows written before 0005 stay unsigned, covered by heads only; the
            # writer signs from the upgrade on.
            assert (log.legacy, log.forged) == (1 if revision >= "0005" else 4, None)
            # Events older than the commands table open the log without a row.
            assert log.missing_command is None
            assert log.bare == (4 if revision == "0001" else 1)
            assert store.get_container(CID, include_removed=True).removed
        finally:
            store.close()


def test_head_matches_the_store_tables(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_upgrade_is_idempotent(db_url: str) -> None:
    upgrade(db_url)
    upgrade(db_url)
    assert current_revision(db_url) == head_revision()


def _reset(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        for table in ("tree_heads", "containers", "commands", "events", "alembic_version"):
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
    engine.dispose()
