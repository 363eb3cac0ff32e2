"""The read model: queries for ps/inspect, and rebuild == incremental, exactly."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from sqlalchemy import select, text

from engine import events as ev
from engine.errors import InvalidArgument, NotFound
from engine.store.recorder import AppendRequest
from engine.store.schema import containers
from engine.store.store import EventStore
from tests.projection.histories import STEPS, history
from tests.store.helpers import create, run


def test_ps_queries(store: EventStore) -> None:
    a = create(store, "a")
    b = create(store, "b")
    c = create(store, "c")
    run(store, a, 1, ev.PidReceived(10, 9), ev.Started())
    run(store, b, 1, ev.PidReceived(11, 8), ev.Started(), ev.Paused())
    run(store, c, 1, ev.Removed())
    assert [s.id for s in store.list_containers()] == [b, a]  # newest first
    assert {s.id for s in store.list_containers(all=True)} == {a, b}
    assert store.get_container(b).paused
    assert store.get_container(c, include_removed=True).removed
    with pytest.raises(NotFound):
        store.get_container(c)
    assert [s.id for s in store.list_containers(all=True, node="node1")] == [b, a]
    assert store.list_containers(all=True, node="elsewhere") == []


def test_resolve(store: EventStore) -> None:
    a = create(store, "web", cid="abc" + "0" * 61)
    b = create(store, "db", cid="abd" + "0" * 61)
    assert store.resolve(a) == a
    assert store.resolve("web") == a
    assert store.resolve("abd") == b
    with pytest.raises(InvalidArgument):
        store.resolve("ab")  # ambiguous
    with pytest.raises(NotFound):
        store.resolve("fff")
    with pytest.raises(InvalidArgument):
        store.resolve("../etc")
    with pytest.raises(InvalidArgument):
        store.resolve("")
    # A name that looks like a prefix of an id: names win, as in podman.
    c = create(store, "abd")
    assert store.resolve("abd") == c
    with pytest.raises(NotFound):
        store.resolve("a_")  # "_" is a LIKE wildcard: it must match only itself


def _rows(store: EventStore) -> list[tuple[object, ...]]:
    engine = store._engine
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(containers).order_by(containers.c.id))]


def _apply(store: EventStore, steps: list[tuple[int, int]], batched: bool) -> None:
    prefix = uuid.uuid4().hex[:8]
    pending: list[AppendRequest] = []
    for n, cmd in enumerate(history(steps, prefix=prefix)):
        cid = uuid.uuid4().hex
        if cmd.failure:
            if pending:  # keep log order: the failure comes after what was decided
                store.append_batch(pending)
                pending = []
            store.record_failure(cid, "container.op", cmd.stream, *cmd.failure)
            continue
        request = AppendRequest(cmd.stream, cmd.expected_version, cmd.events, cid,
                                "container.op", "corr", "prop", "node0")
        if batched and n % 3:
            pending.append(request)
            continue
        if pending:
            store.append_batch(pending)
            pending = []
        store.append_batch([request])
    if pending:
        store.append_batch(pending)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=STEPS, batched=STEPS.map(lambda s: len(s) % 2 == 0))
def test_rebuild_equals_incremental(store: EventStore, steps: list[tuple[int, int]],
                                    batched: bool) -> None:
    """Every example adds a new random valid history to the same store; after each,
    dropping the read model and replaying the log must give byte-identical rows."""
    _apply(store, steps, batched)
    assert store.verify_read_model() == []
    before = _rows(store)
    store.rebuild_read_model()
    assert _rows(store) == before
    assert store.verify_chain() is None


def test_verify_read_model_reports_drift(store: EventStore) -> None:
    a = create(store, "a")
    run(store, a, 1, ev.PidReceived(10, 9), ev.Started())
    with store._engine.begin() as conn:
        conn.execute(text("UPDATE containers SET state = 'exited', pid = NULL"))
    problems = store.verify_read_model()
    assert any("state: log='running' row='exited'" in p for p in problems)
    assert any("pid" in p for p in problems)
    assert store.rebuild_read_model() == 1
    assert store.verify_read_model() == []
    assert store.get_container(a).state == "running"
