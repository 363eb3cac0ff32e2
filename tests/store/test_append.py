"""The append contract: versions, idempotency, failures, atomicity, reads."""

from __future__ import annotations

from datetime import timedelta

import pytest

from engine import events as ev
from engine.errors import AlreadyExists, ConcurrencyError, InvalidArgument
from engine.store.recorder import AppendRequest
from engine.store.store import EventStore
from tests.store.helpers import SPEC, create, new_id, run


def test_append_assigns_versions_positions_and_metadata(store: EventStore) -> None:
    cid = new_id()
    first = store.append(cid, 0, [ev.ContainerCreated("web", "n1", "/b", SPEC)],
                         command_id="cmd-1", command_type="container.create",
                         correlation_id="corr-1", actor="alice", node="n1")
    more = run(store, cid, 1, ev.PidReceived(10, 9), ev.Started())
    assert [r.metadata.stream_version for r in first + more] == [1, 2, 3]
    assert [r.position for r in first + more] == [1, 2, 3]
    meta = first[0].metadata
    assert (meta.causation_id, meta.correlation_id, meta.actor, meta.node) == (
        "cmd-1", "corr-1", "alice", "n1")
    assert meta.recorded_at.utcoffset() == timedelta(0)
    assert store.read_stream(cid) == first + more
    assert store.read_stream(cid, from_version=3) == more[1:]
    assert store.max_position() == 3


def test_wrong_expected_version_writes_nothing(store: EventStore) -> None:
    cid = create(store)
    with pytest.raises(ConcurrencyError):
        run(store, cid, 0, ev.Started())
    with pytest.raises(ConcurrencyError):
        run(store, cid, 2, ev.Started())
    with pytest.raises(ConcurrencyError):
        create(store, name="other", cid=cid)  # a stream can only be opened once
    assert store.max_position() == 1
    assert store.get_container(cid).state == "created"


def test_same_command_id_is_answered_not_repeated(store: EventStore) -> None:
    cid = create(store)
    first = store.append(cid, 1, [ev.PidReceived(5, 4), ev.Started()], command_id="start-1",
                         command_type="container.start")
    # A retry arrives after the stream moved on: still the recorded answer, no conflict.
    run(store, cid, 3, ev.Paused())
    again = store.append(cid, 1, [ev.PidReceived(5, 4), ev.Started()], command_id="start-1",
                         command_type="container.start")
    assert again == first
    assert store.max_position() == 4
    outcome = store.outcome("start-1")
    assert outcome is not None and outcome.ok and outcome.positions == (2, 3)
    assert store.outcome("never-sent") is None


def test_failures_are_recorded_and_replayed(store: EventStore) -> None:
    failed = store.record_failure("cmd-f", "container.start", "ghost", "not_found",
                                  "no such container: ghost", actor="bob")
    assert len(failed) == 1
    assert failed[0].event == ev.CommandFailed("container.start", "not_found",
                                               "no such container: ghost")
    outcome = store.outcome("cmd-f")
    assert outcome is not None and not outcome.ok
    assert (outcome.error_code, outcome.message) == ("not_found", "no such container: ghost")
    # Same id again, even as an append: the failure is the answer, nothing new written.
    assert store.record_failure("cmd-f", "container.start", "ghost", "x", "y") == failed
    assert store.append("ghost", 1, [ev.Started()], command_id="cmd-f",
                        command_type="container.start") == failed
    assert store.max_position() == 1
    assert store.list_containers(all=True) == []
    # Failures land in the container's own stream, without a version check.
    cid = create(store)
    store.record_failure("cmd-g", "container.pause", cid, "invalid_state", "not running")
    assert [r.type for r in store.read_stream(cid)] == ["container.created", "command.failed"]
    assert store.get_container(cid).version == 2


def test_live_names_are_unique_and_freed_by_remove(store: EventStore) -> None:
    first = create(store, "web")
    with pytest.raises(AlreadyExists):
        create(store, "web")
    assert store.max_position() == 1
    run(store, first, 1, ev.Removed())
    second = create(store, "web")
    assert store.resolve("web") == second


def test_batch_is_atomic(store: EventStore) -> None:
    a, b = new_id(), new_id()
    good = AppendRequest(a, 0, (ev.ContainerCreated("a", "n", "/b", SPEC),), "b1", "create")
    bad = AppendRequest(b, 5, (ev.Started(),), "b2", "start")
    with pytest.raises(ConcurrencyError):
        store.append_batch([good, bad])
    assert store.max_position() == 0 and store.outcome("b1") is None
    ok = AppendRequest(b, 0, (ev.ContainerCreated("b", "n", "/b", SPEC),), "b2", "create")
    results = store.append_batch([good, ok, good])
    assert [[r.position for r in res] for res in results] == [[1], [2], [1]]
    assert {c.name for c in store.list_containers(all=True)} == {"a", "b"}


def test_bad_appends_are_refused(store: EventStore) -> None:
    with pytest.raises(InvalidArgument):
        store.append("", 0, [ev.Started()], command_id="x", command_type="t")
    with pytest.raises(InvalidArgument):
        store.append("s", 0, [ev.Started()], command_id="", command_type="t")
    with pytest.raises(InvalidArgument):
        store.append("s", 3, [ev.ContainerCreated("n", "n", "/b", SPEC)], command_id="x",
                     command_type="t")
    with pytest.raises(InvalidArgument):
        store.append("s", 0, [{"type": "container.started"}],  # type: ignore[list-item]
                     command_id="x", command_type="t")
    assert store.max_position() == 0


def test_read_all_and_query(store: EventStore) -> None:
    a = create(store, "a")
    b = create(store, "b")
    run(store, a, 1, ev.PidReceived(1, 2), ev.Started())
    run(store, b, 1, ev.Removed())
    assert [r.position for r in store.read_all()] == [1, 2, 3, 4, 5]
    assert [r.position for r in store.read_all(3, limit=2)] == [3, 4]
    assert store.read_all(6) == []
    assert [r.type for r in store.query(container=a)] == [
        "container.created", "container.pid_received", "container.started"]
    assert [r.position for r in store.query(types=["container.created"], newest_first=True)] \
        == [2, 1]
    assert [r.position for r in store.query(limit=2, newest_first=True)] == [5, 4]
    t3 = store.read_all(3)[0].metadata.recorded_at
    assert all(r.metadata.recorded_at >= t3 for r in store.query(since=t3))
    assert {r.position for r in store.query(until=t3)} >= {1, 2, 3}
    with pytest.raises(InvalidArgument):
        store.query(types=["container.exploded"])
