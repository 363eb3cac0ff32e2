"""An attacker who can write the database and knows every scheme (the hash chain, the
leaves, the tree), but not the auditor's signing key, against the signed tree heads
and the writers' signatures on each row.

Each case takes a signed head before the tampering, as an operator who exported it
with ``berth audit checkpoint --out`` has, and then rewrites what it likes, including
recomputing every hash in the chain and deleting the stored heads: the assessment
must fail, and name the first position affected.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings
from sqlalchemy import Connection, delete, select, update

from engine import events as ev
from engine.audit import chain as audit
from engine.audit.transparency import Assessment
from engine.audit.treehead import Signer, TreeHead
from engine.store.mapper import pack
from engine.store.schema import commands, events, tree_heads
from engine.store.store import EventStore
from migrations.runner import upgrade
from tests.store.helpers import create, forge_append, run

SIGNER = Signer(b"\x11" * 32)
KEYS = {SIGNER.key_id: SIGNER.public}
LAST = 7


@pytest.fixture
def store(db_url: str) -> Iterator[EventStore]:
    """The worker's store: it signs every row it appends with the auditor key."""
    upgrade(db_url)
    with EventStore(db_url, signer=SIGNER) as s:
        yield s


def _log(store: EventStore, *, heads_every_event: bool = False) -> TreeHead:
    """Seven events; returns a signed head over all of them (taken before tampering)."""
    steps: list[tuple[int, tuple[ev.Event, ...]]] = [
        (1, (ev.PidReceived(10, 9), ev.Started())),
        (3, (ev.Signalled(15), ev.Exited(143, None, True, "stop"))),
        (5, (ev.PidReceived(11, 8), ev.Started())),
    ]
    cid = create(store)
    if heads_every_event:
        store.checkpoint(SIGNER)
    for version, batch in steps:
        for i, event in enumerate(batch):
            run(store, cid, version + i, event)
            if heads_every_event:
                store.checkpoint(SIGNER)
    assert store.max_position() == LAST
    head = store.checkpoint(SIGNER)
    assert _assess(store, head).ok
    return head


def _assess(store: EventStore, *given: TreeHead) -> Assessment:
    return store.assess([(h, "file") for h in given], KEYS)


def _rows(conn: Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in audit.chain_rows(conn)]


def _rechain(conn: Connection) -> None:
    """What an attacker does after any change: recompute every link and hash, and make
    the commands table list the positions the events now have."""
    prev = audit.GENESIS
    owned: dict[str, list[int]] = {}
    for row in _rows(conn):
        digest = audit.link(prev, row)
        conn.execute(update(events).where(events.c.position == row["position"])
                     .values(prev_hash=prev, hash=digest))
        prev = digest
        owned.setdefault(row["causation_id"], []).append(int(row["position"]))
    conn.execute(delete(commands).where(commands.c.command_id.not_in(list(owned))))
    for cid, positions in owned.items():
        conn.execute(update(commands).where(commands.c.command_id == cid)
                     .values(positions=pack(positions)))


def _erase_heads(conn: Connection) -> None:
    conn.execute(delete(tree_heads))


def _detected(store: EventStore, head: TreeHead, first: int) -> Assessment:
    report = _assess(store, head)
    assert not report.ok
    assert report.first_affected == first, report.problems
    log = store.scan_log()
    assert (log.chain_break, log.command_break) == (None, None)  # alone, they saw nothing
    return report


def test_an_untouched_log_holds_against_its_heads(store: EventStore) -> None:
    head = _log(store)
    run(store, store.read_all()[0].stream, LAST, ev.Signalled(9))
    report = _assess(store, head)
    assert report.ok and report.vouched == LAST and report.size == LAST + 1
    assert [c.signature for c in report.heads] == ["ok", "ok"]


def test_an_edited_row_with_the_whole_chain_recomputed(store: EventStore) -> None:
    head = _log(store)
    with store._engine.begin() as conn:
        conn.execute(update(events).where(events.c.position == 4)
                     .values(data=pack({"signal": 9})))
        _rechain(conn)
        _erase_heads(conn)
    _detected(store, head, 1)  # one head: somewhere in 1..7


def test_rewritten_actors_are_pinned_to_the_position_by_frequent_heads(
        store: EventStore) -> None:
    """The worker's regular heads stay in the table; the attacker cannot forge them,
    and deleting them only widens the window: here they pin the position."""
    head = _log(store, heads_every_event=True)
    with store._engine.begin() as conn:
        conn.execute(update(events).where(events.c.position >= 3).values(actor="mallory"))
        _rechain(conn)
    report = _detected(store, head, 3)
    assert [m for _, m in report.problems] == [
        "rewritten: the log no longer contains the 3 events a signed head vouches for (the "
        "change is in positions 3..3; 7 signed head(s) no longer hold)"]


def test_a_deleted_middle_event_renumbered_and_rehashed(store: EventStore) -> None:
    head = _log(store, heads_every_event=True)
    with store._engine.begin() as conn:
        conn.execute(delete(events).where(events.c.position == 4))
        for position in range(5, LAST + 1):
            conn.execute(update(events).where(events.c.position == position)
                         .values(position=position - 1))
        _rechain(conn)
    _detected(store, head, 4)


@pytest.mark.parametrize("n", [1, 3])
def test_the_last_events_truncated(store: EventStore, n: int) -> None:
    """The stored head at the new size still holds, so the cut is exact."""
    head = _log(store, heads_every_event=True)
    with store._engine.begin() as conn:
        conn.execute(delete(events).where(events.c.position > LAST - n))
        _rechain(conn)
    report = _detected(store, head, LAST - n + 1)
    assert any("truncated" in message for _, message in report.problems)


def test_the_last_events_truncated_and_the_stored_heads_erased(store: EventStore) -> None:
    """Only the exported head is left: the events it covers are all in doubt."""
    head = _log(store)
    with store._engine.begin() as conn:
        conn.execute(delete(events).where(events.c.position > LAST - 2))
        _rechain(conn)
        _erase_heads(conn)
    report = _detected(store, head, 1)
    assert any("truncated" in message for _, message in report.problems)


@pytest.mark.parametrize(("how", "why"), [
    ("unsigned", f"carries no writer signature, after a head signed by a trusted key over "
                 f"{LAST} events"),
    ("copied", f"carries a signature by key {SIGNER.key_id} that does not verify"),
    ("own key", "is signed by key " + Signer(b"\x66" * 32).key_id + ", which is not trusted"),
])
def test_a_forged_append_with_a_valid_hash_is_reported_forged(
        store: EventStore, how: str, why: str) -> None:
    """Consistent with the old head (it only extends the log), and so no head can see
    it; the writers' signatures do, and no head is ever signed over it."""
    from engine.errors import StoreError

    head = _log(store)
    with store._engine.begin() as conn:
        forge_append(conn, how)
    report = _assess(store, head)
    assert report.size == LAST + 1 and report.vouched == LAST
    assert report.first_affected == LAST + 1
    assert [m for _, m in report.problems] == [
        f"forged at position {LAST + 1}: the event row {why}"]
    assert store.scan_log().chain_break is None  # the chain alone sees nothing
    stored = len(store.tree_heads())
    with pytest.raises(StoreError, match=f"forged at position {LAST + 1}: .*not signing"):
        store.checkpoint(SIGNER)  # the running worker, which had read up to the head
    with EventStore(store.url) as fresh, pytest.raises(StoreError, match="forged at"):
        fresh.checkpoint(SIGNER)  # a worker just started, which reads the whole log
    assert len(store.tree_heads()) == stored  # nothing recorded, nothing signed
    run(store, store.read_all()[0].stream, LAST + 1, ev.Signalled(9))
    with pytest.raises(StoreError, match=f"forged at position {LAST + 1}"):
        store.checkpoint(SIGNER)  # nor later, over a real row appended after it


def test_an_outcome_edited_after_the_newest_head_is_reported_forged(
        store: EventStore) -> None:
    head = _log(store)
    run(store, store.read_all()[0].stream, LAST, ev.Signalled(9))
    cid = store.read_all()[LAST].metadata.causation_id
    with store._engine.begin() as conn:
        conn.execute(update(commands).where(commands.c.command_id == cid)
                     .values(message="never happened"))
    report = _assess(store, head)
    assert [m for _, m in report.problems] == [  # its outcome is signed with its events
        f"forged at position {LAST + 1}: the transaction of positions {LAST + 1}..{LAST + 1} "
        f"carries a signature by key {SIGNER.key_id} that does not verify"]


def test_rows_from_before_writer_signatures_open_the_log_and_nowhere_else(
        store: EventStore) -> None:
    """Revision 0005 leaves older rows unsigned (NULL): they are reported as covered by
    heads only. An unsigned row after a signed one cannot be older: it is forged."""
    _log(store)
    with store._engine.begin() as conn:
        for table in (events, commands):
            conn.execute(update(table).values(signer=None, signature=None))
    run(store, store.read_all()[0].stream, LAST, ev.Signalled(9))
    report = _assess(store)
    assert report.ok and report.legacy == LAST and report.writers_checked
    run(store, store.read_all()[0].stream, LAST + 1, ev.Signalled(9))
    with store._engine.begin() as conn:
        conn.execute(update(events).where(events.c.position == LAST + 2)
                     .values(signer=None, signature=None))
    report = _assess(store)
    assert report.first_affected == LAST + 2 and report.legacy == LAST
    assert "carries no writer signature" in report.problems[0][1]


def test_the_rows_a_trusted_head_covers_are_vouched_for_by_it(store: EventStore) -> None:
    """verify checks writer signatures after the largest trusted head only: a head
    that holds proves the rows it covers; one that does not is reported itself."""
    _log(store)
    with store._engine.begin() as conn:
        conn.execute(update(events).where(events.c.position == 3)
                     .values(signature=b"\x00" * 64))
    assert _assess(store).ok  # the stored head over all 7 holds
    with store._engine.begin() as conn:
        _erase_heads(conn)
    report = _assess(store)
    assert report.first_affected == 3 and "does not verify" in report.problems[0][1]


def test_writer_signatures_are_not_checked_without_a_trusted_key(store: EventStore) -> None:
    _log(store)
    with store._engine.begin() as conn:
        forge_append(conn, "unsigned")
    report = store.assess([], {})
    assert report.ok and not report.writers_checked  # nothing to check them with


def test_two_events_reordered_and_rehashed(store: EventStore) -> None:
    head = _log(store, heads_every_event=True)
    with store._engine.begin() as conn:
        for a, b in ((5, -5), (6, 5), (-5, 6)):
            conn.execute(update(events).where(events.c.position == a).values(position=b))
        _rechain(conn)
    _detected(store, head, 5)


def test_an_edited_outcome_in_the_commands_table(store: EventStore) -> None:
    """Retried commands are answered from this table: editing it is a rewrite too."""
    head = _log(store)
    cid = store.read_all()[3].metadata.causation_id
    with store._engine.begin() as conn:
        conn.execute(update(commands).where(commands.c.command_id == cid)
                     .values(outcome="error", error_code="forged", message="never happened"))
    _detected(store, head, 1)
    assert store.scan_log().command_break is None  # its positions still agree


def test_an_outcome_listing_other_positions(store: EventStore) -> None:
    _log(store)
    cid = store.read_all()[3].metadata.causation_id
    with store._engine.begin() as conn:
        conn.execute(update(commands).where(commands.c.command_id == cid)
                     .values(positions=pack([4, 5])))
    assert store.scan_log().command_break == 5
    assert not _assess(store).ok


def test_an_invented_outcome_has_no_event(store: EventStore) -> None:
    _log(store)
    with store._engine.begin() as conn:
        conn.execute(commands.insert().values(
            command_id="invented", command_type="container.kill", stream="x", outcome="ok",
            error_code=None, message=None, positions=pack([]), recorded_at=0))
    report = _assess(store)
    assert any("invented" in message for _, message in report.problems)


def test_a_forged_stored_head_is_reported(store: EventStore) -> None:
    """A head row with the signer's key id but a signature made without the key."""
    _log(store)
    store.record_head(TreeHead(3, b"\x01" * 32, 0, SIGNER.key_id, b"\x02" * 64))
    report = _assess(store)
    assert not report.ok
    assert "bad" in [c.signature for c in report.heads]


def test_a_head_from_an_unknown_key_counts_for_nothing(store: EventStore) -> None:
    _log(store)
    other = Signer(b"\x22" * 32)
    forged = other.sign(LAST, b"\x03" * 32, 0)
    report = _assess(store, forged)
    assert report.ok  # not trusted: neither a proof nor a problem
    assert [c.signature for c in report.heads][0] == "unknown key"


def test_a_broken_log_is_not_signed(store: EventStore) -> None:
    from engine.errors import StoreError

    _log(store)
    with store._engine.begin() as conn:
        conn.execute(update(events).where(events.c.position == 2).values(actor="mallory"))
    with EventStore(store.url) as fresh, pytest.raises(StoreError,
                                                        match="broken at position 2"):
        fresh.checkpoint(SIGNER)


# --------------------------------------------------------------------- random tampering

ACTIONS = st.sampled_from(["edit", "delete", "insert", "reorder", "truncate", "outcome",
                           "forge", "slip", "strip"])


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(action=ACTIONS, data=st.data())
def test_random_tampering_with_a_rehashed_chain_is_detected(
        store: EventStore, action: str, data: st.DataObject) -> None:
    """Whatever the attacker does to the vouched events, and then rehashes, or a row it
    appends after them: the heads (one every event, as a busy worker makes them) or
    the writers' signatures show it at the position changed."""
    with store._engine.begin() as conn:
        conn.execute(delete(tree_heads))
        conn.execute(delete(commands))
        conn.execute(delete(events))
        conn.exec_driver_sql("DELETE FROM containers")
    store._recorder.forget_states()
    with EventStore(store.url, signer=SIGNER) as signer:  # one that has read nothing
        head = _log(signer, heads_every_event=True)
    at = data.draw(st.integers(1, LAST), label="position")
    if action in ("slip", "strip"):  # two signed transactions after every head
        _two_transactions(store)
    with store._engine.begin() as conn:
        rows = _rows(conn)
        if action == "slip":
            first = _slip(conn, LAST + 1 + data.draw(st.integers(0, 1), label="offset"))
        elif action == "strip":
            first = _strip_transaction(conn, data.draw(st.booleans(), label="the last"))
        elif action == "edit":
            column = data.draw(st.sampled_from(["actor", "node", "data", "type",
                                                "correlation_id"]))
            value: Any = pack({"forged": 1}) if column == "data" else "forged"
            conn.execute(update(events).where(events.c.position == at)
                         .values({column: value}))
            first = at
        elif action == "delete":
            conn.execute(delete(events).where(events.c.position == at))
            for position in range(at + 1, LAST + 1):
                conn.execute(update(events).where(events.c.position == position)
                             .values(position=position - 1))
            first = at
        elif action == "insert":
            for position in range(LAST, at - 1, -1):
                conn.execute(update(events).where(events.c.position == position)
                             .values(position=position + 1))
            copy = rows[at - 1] | {"position": at, "stream": "f" * 64, "stream_version": 1}
            del copy["prev_hash"], copy["hash"]
            conn.execute(events.insert().values(**copy))
            first = at
        elif action == "reorder":
            other = data.draw(st.integers(1, LAST).filter(lambda p: p != at), label="other")
            for a, b in ((at, -1), (other, at), (-1, other)):
                conn.execute(update(events).where(events.c.position == a).values(position=b))
            first = min(at, other)
        elif action == "truncate":
            conn.execute(delete(events).where(events.c.position >= at))
            first = at
        elif action == "forge":
            for _ in range(data.draw(st.integers(1, 3), label="forged rows")):
                forge_append(conn, data.draw(st.sampled_from(["unsigned", "copied",
                                                               "own key"]), label="how"))
            first = LAST + 1
        else:
            cid = rows[at - 1]["causation_id"]
            conn.execute(update(commands).where(commands.c.command_id == cid)
                         .values(message="forged"))
            owned = [r["position"] for r in rows if r["causation_id"] == cid]
            first = min(owned)
        _rechain(conn)
        if data.draw(st.booleans(), label="erase stored heads"):
            _erase_heads(conn)
            if action not in ("forge", "slip", "strip"):  # changes after every head
                first = 1  # only the exported head is left: all it covers is in doubt
    report = _assess(store, head)
    assert not report.ok
    assert report.first_affected == first, (action, report.problems)


def test_the_signer_signs_what_it_read_never_a_rewrite(store: EventStore) -> None:
    """A head extends the leaves this process already read: rows rewritten behind it
    do not enter a head; rows appended after a rewritten chain do not link to it."""
    from engine.errors import StoreError

    head = _log(store)
    with store._engine.begin() as conn:
        conn.execute(update(events).where(events.c.position == 2).values(actor="mallory"))
        _rechain(conn)
    again = store.checkpoint(SIGNER)
    assert (again.size, again.root) == (head.size, head.root)  # the honest tree
    run(store, store.read_all()[0].stream, LAST, ev.Signalled(9))
    with pytest.raises(StoreError, match=f"broken at position {LAST + 1}"):
        store.checkpoint(SIGNER)


@pytest.mark.parametrize("heads_erased", [False, True])
@pytest.mark.parametrize("rewrite", ["edit", "truncate"])
def test_a_new_signer_refuses_to_bless_a_rewrite(store: EventStore, heads_erased: bool,
                                                 rewrite: str) -> None:
    """A process that has read nothing yet (a worker just started) checks the log
    against the newest head of its key in the table, or the one it is given, and the
    writer signatures of the rows after it; and it keeps nothing it read from a log
    that fails, so without any head left it still checks every row."""
    from engine.errors import StoreError

    head = _log(store)
    with store._engine.begin() as conn:
        if rewrite == "edit":
            conn.execute(update(events).where(events.c.position == 2)
                         .values(actor="mallory"))
        else:
            conn.execute(delete(events).where(events.c.position > LAST - 2))
        _rechain(conn)
        if heads_erased:
            _erase_heads(conn)
    remembered = head if heads_erased else None
    with EventStore(store.url, signer=SIGNER) as fresh:
        with pytest.raises(StoreError, match="no longer holds the 7 events"):
            fresh.checkpoint(SIGNER, after=remembered)
        run(fresh, fresh.read_all()[0].stream, fresh.max_position(), ev.Signalled(9))
        with pytest.raises(StoreError, match="no longer holds the 7 events"):
            fresh.checkpoint(SIGNER, after=remembered)
        if rewrite == "edit":  # rechained: the writer signatures give it away
            with fresh._engine.begin() as conn:
                _erase_heads(conn)
            with pytest.raises(StoreError, match="forged at position 2"):
                fresh.checkpoint(SIGNER)


def test_a_row_rewritten_behind_the_reader_gets_no_proof(store: EventStore) -> None:
    from engine.errors import StoreError

    _log(store)
    store.prove(2)
    with store._engine.begin() as conn:
        conn.execute(update(events).where(events.c.position == 2).values(actor="mallory"))
        _rechain(conn)
    with pytest.raises(StoreError, match="event 2 was changed after it was read"):
        store.prove(2)
    assert store.prove(1).position == 1


# ------------------------------------------------- a deleted commands row (defect 11)

def _delete_outcome(conn: Connection, position: int) -> str:
    """What an attacker does: delete the commands row of the command that wrote the
    event at ``position``, and nothing else."""
    cid = conn.execute(select(events.c.causation_id)
                       .where(events.c.position == position)).scalar_one()
    conn.execute(delete(commands).where(commands.c.command_id == cid))
    return str(cid)


def _missing(cid: str, position: int) -> str:
    return (f"command {cid} has events but no row in the commands table (its first event "
            f"is at position {position}): the row was deleted")


def test_a_deleted_commands_row_after_the_newest_head_is_reported_and_never_signed(
        store: EventStore) -> None:
    """A start (two events) after the newest head: its leaves are in no head; the
    missing row gives it away, and so does the transaction's signature, which signs
    the outcome with the events."""
    from engine.errors import StoreError

    head = _log(store)
    cid = store.read_all()[0].stream
    run(store, cid, LAST, ev.Signalled(9), ev.Exited(137, None, False, "crash"))
    run(store, cid, LAST + 2, ev.PidReceived(12, 7), ev.Started())
    with store._engine.begin() as conn:
        command = _delete_outcome(conn, LAST + 3)
    report = _assess(store, head)
    assert [(p, m) for p, m in report.problems] == [
        (LAST + 3, _missing(command, LAST + 3)),
        (LAST + 3, f"forged at position {LAST + 3}: the transaction of positions "
                   f"{LAST + 3}..{LAST + 4} carries a signature by key {SIGNER.key_id} "
                   "that does not verify")]
    assert report.first_affected == LAST + 3
    assert store.scan_log().missing_command == LAST + 3  # no key needed to see it
    with pytest.raises(StoreError, match=f"command {command} has events but no row .*"
                                         "not signing it"):
        store.checkpoint(SIGNER)  # the running worker
    with EventStore(store.url) as fresh, pytest.raises(StoreError, match="no row in the"):
        fresh.checkpoint(SIGNER)  # one just started
    with pytest.raises(StoreError, match="no row in the commands table"):
        store.prove(1)


@pytest.mark.parametrize("where", [1, 4, LAST])
def test_an_event_without_its_commands_row_is_reported_anywhere_in_the_log(
        store: EventStore, where: int) -> None:
    """Only events older than the table open the log without one; a signed event, or
    one after an event with its row, or after a trusted head, is not one of them."""
    _log(store)
    with store._engine.begin() as conn:
        command = _delete_outcome(conn, where)
        _erase_heads(conn)
    first = min(e.metadata.position for e in store.read_all()
                if e.metadata.causation_id == command)
    log = store.scan_log()
    assert (log.missing_command, log.missing_command_id, log.bare) == (first, command, 0)
    assert _assess(store).first_affected == first


def test_every_commands_row_deleted_is_not_mistaken_for_a_log_older_than_the_table(
        store: EventStore) -> None:
    head = _log(store)
    with store._engine.begin() as conn:
        conn.execute(delete(commands))
        for table in (events,):  # and the signatures stripped, so the rows look old
            conn.execute(update(table).values(signer=None, signature=None))
        _erase_heads(conn)
    run(store, store.read_all()[0].stream, LAST, ev.Signalled(9))
    with store._engine.begin() as conn:
        command = _delete_outcome(conn, LAST + 1)
    report = _assess(store, head)  # the head the operator kept
    assert (LAST + 1, _missing(command, LAST + 1)) in report.problems
    assert report.first_affected == 1  # the leaves under the head changed too
    assert report.bare == LAST  # what the head covers may predate the table; not after


def test_a_resent_command_whose_row_was_deleted_is_refused_never_written_twice(
        store: EventStore) -> None:
    """The dedup does not rest on the commands row alone: the events name their
    command, and a command that has events is refused, neither run nor recorded."""
    from engine.errors import StoreError
    from engine.store.recorder import AppendRequest

    cid = create(store)
    store.append(cid, 1, [ev.PidReceived(10, 9), ev.Started()], command_id="start-1",
                 command_type="container.start")
    store.append(cid, 3, [ev.Exited(0, None, False, "exit")], command_id="exit-1",
                 command_type="container.exit")
    with store._engine.begin() as conn:
        conn.execute(delete(commands).where(commands.c.command_id == "start-1"))
    refusal = ("command start-1 was carried out before \\(its events begin at position 2\\) "
               "but its row in the commands table is gone, so what it answered is unknown: "
               "it is not run again")
    with pytest.raises(StoreError, match=refusal):
        store.outcome("start-1")  # what a worker asks before running a command
    with pytest.raises(StoreError, match=refusal):
        store.append(cid, 4, [ev.PidReceived(11, 9), ev.Started()], command_id="start-1",
                     command_type="container.start")
    with pytest.raises(StoreError, match=refusal):  # the whole batch, not only that one
        store.append_batch([
            AppendRequest(cid, 4, (ev.Signalled(9),), "other", "container.kill"),
            AppendRequest(cid, 5, (ev.PidReceived(11, 9), ev.Started()), "start-1",
                          "container.start")])
    assert store.max_position() == 4
    assert [e.type for e in store.read_stream(cid)].count(ev.CONTAINER_STARTED) == 1
    assert store.outcome("never-sent") is None  # a new command is not held up
    assert store.outcome("exit-1") is not None


# ------------------------------------------- one writer signature per transaction (0007)

def _two_transactions(store: EventStore) -> None:
    """After the log and its heads: a transaction of positions LAST+1..LAST+2 (one
    command, two events), then one of LAST+3, each signed once by its writer."""
    cid = store.read_all()[0].stream
    run(store, cid, LAST, ev.Signalled(9), ev.Exited(137, None, False, "crash"))
    run(store, cid, LAST + 2, ev.PidReceived(12, 7))


def _slip(conn: Connection, at: int) -> int:
    """A row slipped in at ``at`` inside the transaction LAST+1..LAST+2, carrying the
    writer's key id like its neighbours; the rows after it renumbered (the caller
    rechains). Returns the position verify must name: the transaction's first."""
    rows = _rows(conn)
    for position in range(len(rows), at - 1, -1):
        conn.execute(update(events).where(events.c.position == position)
                     .values(position=position + 1))
    copy = rows[at - 1] | {"position": at, "stream": "f" * 64, "stream_version": 1,
                           "signer": SIGNER.key_id, "signature": None, "signed_from": None}
    del copy["prev_hash"], copy["hash"]
    conn.execute(events.insert().values(**copy))
    return LAST + 1


def _strip_transaction(conn: Connection, last: bool) -> int:
    """The signature of the first (LAST+1..LAST+2) or the last (LAST+3) transaction
    removed, its rows left with the writer's key id. Returns its first position."""
    closing = LAST + 3 if last else LAST + 2
    conn.execute(update(events).where(events.c.position == closing)
                 .values(signature=None, signed_from=None))
    return LAST + 3 if last else LAST + 1


@pytest.mark.parametrize("at", [LAST + 1, LAST + 2])
def test_a_row_slipped_into_a_signed_transaction_is_reported(store: EventStore,
                                                             at: int) -> None:
    """The chain rehashed around it, its commands row made to list it: only the
    transaction's signature, over its last hash, gives it away, at the transaction's
    first position (one signature cannot tell which of its rows changed)."""
    from engine.errors import StoreError

    head = _log(store)
    _two_transactions(store)
    with store._engine.begin() as conn:
        first = _slip(conn, at)
        _rechain(conn)
    report = _assess(store, head)
    assert report.problems == [(first, (
        f"forged at position {first}: the transaction of positions {LAST + 1}..{LAST + 3} "
        f"carries a signature by key {SIGNER.key_id} that does not verify"))]
    assert store.scan_log().chain_break is None  # the chain alone sees nothing
    with pytest.raises(StoreError, match=f"forged at position {first}"):
        store.checkpoint(SIGNER)


@pytest.mark.parametrize("last", [False, True])
def test_a_transaction_whose_signature_is_stripped_after_a_signed_one_is_reported(
        store: EventStore, last: bool) -> None:
    """The next transaction's signature binds the stripped one's rows through the
    chain, but signs where it begins: the stripped rows are covered by none."""
    head = _log(store)
    _two_transactions(store)
    assert _assess(store, head).signatures_checked == 3  # rows vouched for
    with store._engine.begin() as conn:
        first = _strip_transaction(conn, last)
    report = _assess(store, head)
    assert report.problems == [(first, (
        f"forged at position {first}: the rows from position {first} are covered by no "
        "transaction's writer signature (stripped, or appended without the key)"))]


def test_rows_signed_one_by_one_before_0007_still_verify(store: EventStore) -> None:
    """A log whose rows were each signed (revision 0005's writers), then rows signed
    per transaction: both verify, and a bad old signature is still found."""
    from engine.audit import vouch
    from engine.audit.transparency import outcome_digest

    _log(store)
    with store._engine.begin() as conn:  # rewrite the signatures as 0005 made them
        _erase_heads(conn)  # so that no head covers them: each is checked
        for row in conn.execute(select(events.c.position, events.c.hash)).all():
            conn.execute(update(events).where(events.c.position == row.position).values(
                signed_from=None,
                signature=vouch.stamp(SIGNER, vouch.EVENT, bytes(row.hash))[1]))
        for row in conn.execute(select(commands)).mappings().all():
            digest = outcome_digest([row[name] for name in (
                "command_id", "command_type", "stream", "outcome", "error_code", "message",
                "positions")] + [int(row["recorded_at"].timestamp() * 1e6)])
            conn.execute(update(commands).where(commands.c.command_id == row["command_id"])
                         .values(signature=vouch.stamp(SIGNER, vouch.OUTCOME, digest)[1]))
    _two_transactions(store)
    report = store.assess([], KEYS)
    assert report.ok and report.signatures_checked == LAST + 3, report.problems
    with store._engine.begin() as conn:
        conn.execute(update(events).where(events.c.position == 4)
                     .values(signature=b"\x00" * 64))
    report = store.assess([], KEYS)
    assert report.first_affected == 4 and "the event row carries a signature" in (
        report.problems[0][1])


# ---------------------------------------- stripped signatures, forged append (defect 12)

def _strip(conn: Connection) -> None:
    for table in (events, commands):
        conn.execute(update(table).values(signer=None, signature=None))


@pytest.mark.parametrize("heads_erased", [False, True])
def test_signatures_stripped_then_a_forged_append_is_reported(
        store: EventStore, heads_erased: bool) -> None:
    """Every row made to look written before revision 0005, then a row forged after
    the head: a head signed by a trusted key says a keyed writer ran, so no row after
    it may be unsigned. Nothing is said to be checked that was not."""
    from engine.errors import StoreError

    head = _log(store)
    with store._engine.begin() as conn:
        _strip(conn)
        forge_append(conn, "unsigned")
        if heads_erased:
            _erase_heads(conn)
    report = _assess(store, head)
    assert report.problems == [(LAST + 1, (
        f"forged at position {LAST + 1}: the event row carries no writer signature, after "
        f"a head signed by a trusted key over {LAST} events"))]
    assert (report.legacy, report.signatures_checked, report.writers_checked) == (
        LAST, 0, False)
    with pytest.raises(StoreError, match=f"forged at position {LAST + 1}"):
        store.checkpoint(SIGNER, after=head)


def test_stripped_rows_under_a_head_are_reported_though_it_vouches_for_their_content(
        store: EventStore) -> None:
    head = _log(store)
    with store._engine.begin() as conn:
        conn.execute(update(events).where(events.c.position >= 3)
                     .values(signer=None, signature=None))
    report = _assess(store, head)
    assert report.problems == [(3, "forged at position 3: the event row carries no writer "
                                   "signature, after a signed row")]


def test_heads_signed_before_row_signatures_leave_the_rows_after_them_reported(
        store: EventStore) -> None:
    """The upgrade path docs/events.md describes: heads of revision 0004 over unsigned
    rows, more unsigned rows after them. Nothing tells these from stripped rows, so
    they are reported; once those heads are set aside, the worker's next head covers
    the rows and the rule holds from there."""
    from engine.errors import StoreError

    _log(store, heads_every_event=True)  # the first head over 1 event
    with store._engine.begin() as conn:
        _strip(conn)
        conn.execute(delete(tree_heads).where(tree_heads.c.tree_size > 3))
    assert _assess(store).first_affected == 2
    with EventStore(store.url, signer=SIGNER) as fresh, pytest.raises(StoreError):
        fresh.checkpoint(SIGNER)
    with store._engine.begin() as conn:
        _erase_heads(conn)
    with EventStore(store.url, signer=SIGNER) as fresh:
        assert fresh.checkpoint(SIGNER).size == LAST
        run(fresh, fresh.read_all()[0].stream, LAST, ev.Signalled(9))
    report = _assess(store)
    assert report.ok and report.legacy == LAST and report.signatures_checked == 1


def test_a_worker_with_no_memory_blessing_stripped_rows_does_not_fool_a_kept_head(
        store: EventStore) -> None:
    """Signatures stripped, a row forged, the stored heads deleted, the worker
    restarted: with nothing left to tell it, it signs over the forged row. The head
    the operator kept still says rows after it were signed: the forgery is reported,
    the new head holding notwithstanding."""
    head = _log(store)
    with store._engine.begin() as conn:
        _strip(conn)
        forge_append(conn, "unsigned")
        _erase_heads(conn)
    with EventStore(store.url, signer=SIGNER) as restarted:
        assert restarted.checkpoint(SIGNER).size == LAST + 1
    report = _assess(store, head)
    assert report.first_affected == LAST + 1 and report.vouched == LAST + 1


def test_a_transaction_is_signed_once_on_its_last_row(store: EventStore) -> None:
    """Three commands of two events each in one transaction: one signature, on the
    last row, naming the first; no other row or commands row carries one."""
    from engine.store.recorder import AppendRequest

    cid = create(store)
    store.append_batch([AppendRequest(cid, 1 + 2 * i, (ev.Signalled(15), ev.Signalled(9)),
                                      f"batch-{i}", "container.kill") for i in range(3)])
    with store._engine.connect() as conn:
        rows = conn.execute(select(events.c.position, events.c.signer, events.c.signature,
                                   events.c.signed_from).order_by(events.c.position)).all()
        outcomes = conn.execute(select(commands.c.signer, commands.c.signature)).all()
    assert [(r.position, r.signed_from) for r in rows if r.signature] == [(1, 1), (7, 2)]
    assert {r.signer for r in rows} == {SIGNER.key_id}
    assert all(o.signature is None and o.signer == SIGNER.key_id for o in outcomes)
    report = store.assess([], KEYS)
    assert report.ok and report.signatures_checked == 7 and report.checked_from == 1


@pytest.mark.parametrize("change", [{"signed_from": "x"}, {"signature": "text"},
                                    {"data": "text"}])
def test_values_of_the_wrong_type_are_reported_not_a_crash(tmp_path: Path,
                                                          change: dict[str, Any]) -> None:
    """SQLite keeps whatever type is written into a column: verify reports the row
    instead of failing on it. (SQLite only: PostgreSQL refuses such a write.)"""
    db_url = f"sqlite:///{tmp_path / 'log.db'}"
    upgrade(db_url)
    with EventStore(db_url, signer=SIGNER) as store:
        _log(store)
        with store._engine.begin() as conn:
            _erase_heads(conn)
            conn.exec_driver_sql(
                f"UPDATE events SET {next(iter(change))} = ? WHERE position = 4",
                (next(iter(change.values())),))
        report = store.assess([], KEYS)
    assert report.first_affected == 4, report.problems
