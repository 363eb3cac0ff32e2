"""Export and import of the log, on each backend: the copy has the same hashes, the same
root and the same read model; an export checks out offline, and a tampered one does not."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from engine import events as ev
from engine.audit import chain as audit
from engine.audit import exchange, merkle
from engine.audit.treehead import Signer, TreeHead
from engine.errors import InvalidArgument
from engine.store import readmodel
from engine.store.schema import events
from engine.store.store import EventStore
from migrations.runner import upgrade
from tests import pgserver
from tests.store.helpers import create, run

SIGNER = Signer(b"\x09" * 32)


@pytest.fixture
def other(db_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[EventStore]:
    """A second, empty store on the same backend as ``store``."""
    if db_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'copy.db'}"
        upgrade(url)
        with EventStore(url) as s:
            yield s
        return
    server: pgserver.PgServer = request.getfixturevalue("pg")
    with server.fresh_database() as url:
        upgrade(url)
        with EventStore(url) as s:
            yield s


def _log(store: EventStore) -> TreeHead:
    a = create(store, "a")
    b = create(store, "b")
    run(store, a, 1, ev.PidReceived(10, 9), ev.Started())
    run(store, b, 1, ev.PidReceived(11, 9), ev.Started())
    run(store, a, 3, ev.Signalled(15), ev.Exited(143, None, True, "stop"))
    store.record_failure(uuid.uuid4().hex, "container.kill", b, "conflict", "nope")
    run(store, a, 5, ev.Removed())
    return store.checkpoint(SIGNER)


def _export(store: EventStore, head: TreeHead) -> list[str]:
    """The JSON lines ``berth events export`` writes, paged as it pages."""
    lines = [json.dumps(exchange.header(head))]
    after = 0
    while after < head.size:
        rows = store.export_page(after, 3)
        lines += [json.dumps(exchange.encode_row(r)) for r in rows]
        after = rows[-1]["position"]
    return lines


def _states(store: EventStore) -> dict[str, Any]:
    with store._engine.connect() as conn:
        return readmodel.all_states(conn)


def test_an_export_imports_to_identical_hashes_and_read_model(
        store: EventStore, other: EventStore) -> None:
    head = _log(store)
    source_head, rows = exchange.read_jsonl(_export(store, head))
    loaded = list(rows)
    assert exchange.check(loaded, source_head, SIGNER.public)[0] == []
    assert other.import_rows(loaded, source_head) == head.size
    with store._engine.connect() as a, other._engine.connect() as b:
        assert list(audit.chain_rows(a)) == list(audit.chain_rows(b))
    assert merkle.root(other.scan_log().leaves) == head.root
    assert _states(other) == _states(store)
    assert other.outcome(store.read_all()[0].metadata.causation_id) == store.outcome(
        store.read_all()[0].metadata.causation_id)
    assert other.verify_read_model() == []
    assert other.assess([], {SIGNER.key_id: SIGNER.public}).ok  # the head came along
    # and the copy is a live log: appends chain onto it
    run(other, create(other, "c"), 1, ev.Started())
    assert other.verify_chain() is None
    with pytest.raises(InvalidArgument, match="not empty"):
        other.import_rows(loaded, source_head)


def test_csv_rows_round_trip(store: EventStore) -> None:
    head = _log(store)
    rows = store.export_page(0, 100)
    import csv
    import io

    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(exchange.CSV_COLUMNS)
    for row in rows:
        writer.writerow(exchange.csv_record(row))
    text.seek(0)
    back = [exchange.from_csv_record(r) for r in csv.DictReader(text)]
    assert exchange.check(back, head, SIGNER.public)[0] == []


@pytest.mark.parametrize("form", ["jsonl", "csv"])
def test_writer_signatures_travel_with_an_export(db_url: str, other: EventStore,
                                                 form: str) -> None:
    """Each row's writer signature (engine.audit.vouch) is exported and imported as it
    was: the copy's rows still check against the writer's key, none left unsigned."""
    import csv
    import io

    upgrade(db_url)
    with EventStore(db_url, signer=SIGNER) as signed:
        head = _log(signed)
        if form == "jsonl":
            _, rows = exchange.read_jsonl(_export(signed, head))
            loaded = list(rows)
        else:
            text = io.StringIO()
            writer = csv.writer(text)
            writer.writerow(exchange.CSV_COLUMNS)
            for row in signed.export_page(0, 100):
                writer.writerow(exchange.csv_record(row))
            text.seek(0)
            loaded = [exchange.from_csv_record(r) for r in csv.DictReader(text)]
    other.import_rows(loaded, head)
    log = other.scan_log({SIGNER.key_id: SIGNER.public})
    assert (log.size, log.legacy, log.forged) == (head.size, 0, None)
    with other._engine.begin() as conn:
        conn.execute(update(events).where(events.c.position == 3).values(signature=b"x" * 64))
    assert other.scan_log({SIGNER.key_id: SIGNER.public}).forged == 3


@pytest.mark.parametrize("change", ["actor", "rehashed actor", "drop", "outcome", "head"])
def test_a_tampered_export_does_not_check_out(store: EventStore, change: str) -> None:
    head = _log(store)
    lines = _export(store, head)
    objs = [json.loads(x) for x in lines]
    if change == "actor":
        objs[3]["actor"] = "mallory"
    elif change == "rehashed actor":  # and every hash and leaf recomputed after it
        objs[3]["actor"] = "mallory"
        prev = audit.GENESIS
        for obj in objs[1:]:
            row = exchange.decode_row(obj)
            row["prev_hash"] = prev
            row["hash"] = prev = audit.link(prev, row)
            obj.update(exchange.encode_row(row))
    elif change == "drop":
        del objs[-1]
    elif change == "outcome":
        objs[3]["command"]["message"] = "forged"
    else:
        objs[0]["head"]["size"] = head.size - 1
    head2, rows = exchange.read_jsonl([json.dumps(o) for o in objs])
    problems, _, _ = exchange.check(rows, head2, SIGNER.public)
    assert problems


def test_not_an_export_is_one_sentence() -> None:
    with pytest.raises(InvalidArgument, match="no header line"):
        exchange.read_jsonl(['{"a": 1}'])
    head, rows = exchange.read_jsonl([json.dumps(exchange.header(
        SIGNER.sign(0, merkle.EMPTY_ROOT, 0))), '{"position": 1}'])
    with pytest.raises(InvalidArgument, match="not an exported event row"):
        list(rows)


@pytest.mark.parametrize("bad", ["x", 0, -5, 2**63, 1.5, True, [3]])
def test_a_bad_signed_from_is_one_sentence(store: EventStore, bad: Any) -> None:
    """An export row's ``signed_from`` (revision 0007) must be a position, or absent:
    anything else is refused before it reaches the database."""
    head = _log(store)
    objs = [json.loads(x) for x in _export(store, head)]
    objs[2]["signed_from"] = bad
    _, rows = exchange.read_jsonl([json.dumps(o) for o in objs])
    with pytest.raises(InvalidArgument, match="not an exported event row: .*signed_from"):
        list(rows)
