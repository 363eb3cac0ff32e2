"""The broker's routing rules, pure: no sockets, the clock passed in.

tests/bus/test_routing.py holds the queue and reply-cache bounds and
tests/bus/test_broker.py the rules at work over real sockets; these pin each rule on
its own (which worker, which node, what a lost worker gives back, what the reply
cache forgets), fast enough to run under mutation testing.
"""

from __future__ import annotations

import uuid
from typing import Any

from bus.protocol import Command, now_iso
from bus.routing import Pending, RecentReplies, Router, WorkerState
from engine import command_types as t
from engine.errors import RateLimited, Unavailable

TIMEOUT = 10.0
PENDING = 5.0


def router(cache_size: int = 4) -> Router:
    return Router(worker_timeout=TIMEOUT, pending_timeout=PENDING, cache_size=cache_size)


def command(type: str = t.START, container: str | None = "web", node: str | None = None,
            **changes: Any) -> Command:
    fields: dict[str, Any] = {"id": str(uuid.uuid4()), "type": type, "container": container,
                              "node": node, "args": {}, "actor": "root@host",
                              "correlation_id": str(uuid.uuid4()), "sent_at": now_iso()}
    fields.update(changes)
    return Command(**fields)


def dispatch(r: Router, cmd: Command, worker: WorkerState) -> Pending:
    pending = Pending(cmd, b"frame", [(b"client",)])
    r.assign(pending, worker)
    return pending


# ------------------------------------------------------------------ the reply cache


def test_recent_replies_forget_the_oldest_first() -> None:
    replies = RecentReplies(2)
    replies.put("a", b"1")
    replies.put("b", b"2")
    assert len(replies) == 2
    replies.put("c", b"3")
    assert len(replies) == 2
    assert "a" not in replies and replies.get("a") is None
    assert replies.get("b") == b"2" and replies.get("c") == b"3"
    assert "b" in replies and "c" in replies


def test_recent_replies_put_again_refreshes_the_entry() -> None:
    replies = RecentReplies(2)
    replies.put("a", b"1")
    replies.put("b", b"2")
    replies.put("a", b"1'")  # a is now the newest
    replies.put("c", b"3")
    assert replies.get("a") == b"1'"
    assert "b" not in replies
    assert len(replies) == 2


def test_recent_replies_hold_exactly_their_size() -> None:
    replies = RecentReplies(3)
    for i in range(3):
        replies.put(str(i), b"x")
    assert len(replies) == 3 and "0" in replies


# ------------------------------------------------------------------ workers


def test_register_sets_liveness_from_now() -> None:
    r = router()
    w = r.register(b"w1", "n1", 4, now=100.0)
    assert (w.identity, w.node, w.capacity) == (b"w1", "n1", 4)
    assert w.expires_at == 100.0 + TIMEOUT
    assert w.outstanding == set() and w.last_dispatch == 0
    assert r.workers == {b"w1": w}


def test_register_again_on_the_same_node_keeps_the_worker_and_its_work() -> None:
    r = router()
    w = r.register(b"w1", "n1", 4, now=100.0)
    pending = dispatch(r, command(), w)
    again = r.register(b"w1", "n1", 8, now=150.0)
    assert again is w
    assert w.capacity == 8
    assert w.expires_at == 150.0 + TIMEOUT
    assert w.outstanding == {pending.command.id}
    assert pending.worker == b"w1"


def test_a_worker_that_changes_node_gives_its_work_back() -> None:
    r = router()
    w = r.register(b"w1", "n1", 4, now=100.0)
    pending = dispatch(r, command(node="n1"), w)
    moved = r.register(b"w1", "n2", 2, now=120.0)
    assert moved is not w
    assert (moved.node, moved.capacity, moved.outstanding) == ("n2", 2, set())
    assert moved.expires_at == 120.0 + TIMEOUT
    assert r.workers[b"w1"] is moved
    assert pending.worker is None
    assert pending.deadline == 120.0 + PENDING
    assert r.waiting() == [pending]


def test_touch_refreshes_a_known_worker_only() -> None:
    r = router()
    w = r.register(b"w1", "n1", 1, now=0.0)
    assert r.touch(b"w1", now=50.0) is True
    assert w.expires_at == 50.0 + TIMEOUT
    assert r.touch(b"stranger", now=50.0) is False
    assert b"stranger" not in r.workers


def test_expired_lists_workers_past_their_deadline_only() -> None:
    r = router()
    r.register(b"old", "n1", 1, now=0.0)
    r.register(b"new", "n1", 1, now=5.0)
    assert r.expired(TIMEOUT) == []  # exactly at the deadline is still alive
    assert r.expired(TIMEOUT + 1.0) == [b"old"]
    assert sorted(r.expired(100.0)) == [b"new", b"old"]


def test_remove_returns_the_unanswered_commands() -> None:
    r = router()
    w = r.register(b"w1", "n1", 4, now=0.0)
    other = r.register(b"w2", "n1", 4, now=0.0)
    first = dispatch(r, command(container="a"), w)
    second = dispatch(r, command(container="b"), w)
    kept = dispatch(r, command(container="c"), other)
    r.complete(first.command.id)
    orphans = r.remove(b"w1")
    assert orphans == [second]
    assert second.worker is None
    assert kept.worker == b"w2"
    assert b"w1" not in r.workers
    assert r.remove(b"w1") == []
    assert r.waiting() == [second]


# ------------------------------------------------------------------ routing


def test_target_node_is_the_commands_own_node_or_any() -> None:
    """A command that names no node goes to any worker (the worker answers
    wrong_node for a container that lives elsewhere)."""
    r = router()
    r.register(b"w1", "n1", 1, now=0.0)
    r.register(b"w2", "n2", 1, now=0.0)
    assert r.target_node(command(node="n2")) == "n2"
    assert r.target_node(command()) is None


def test_choose_finds_nothing_without_a_worker_of_the_node() -> None:
    r = router()
    assert r.choose(command(), None) is None
    r.register(b"w1", "n1", 1, now=0.0)
    assert r.choose(command(), "n2") is None


def test_choose_keeps_to_the_node() -> None:
    r = router()
    r.register(b"w1", "n1", 1, now=0.0)
    w2 = r.register(b"w2", "n2", 1, now=0.0)
    assert r.choose(command(node="n2"), "n2") is w2


def test_choose_picks_the_least_loaded_then_the_least_recently_used() -> None:
    r = router()
    w1 = r.register(b"w1", "n1", 4, now=0.0)
    w2 = r.register(b"w2", "n1", 4, now=0.0)
    dispatch(r, command(container="a"), w1)
    assert r.choose(command(container="b"), None) is w2  # fewer outstanding
    dispatch(r, command(container="b"), w2)
    # Both have one outstanding: w1 was used longer ago.
    assert r.choose(command(container="c"), None) is w1
    assert w1.last_dispatch < w2.last_dispatch


def test_choose_ranks_load_before_recency() -> None:
    r = router()
    w1 = r.register(b"w1", "n1", 4, now=0.0)
    w2 = r.register(b"w2", "n1", 4, now=0.0)
    dispatch(r, command(container="a"), w2)
    dispatch(r, command(container="b"), w2)
    dispatch(r, command(container="c"), w1)
    # w1 was used last but carries less.
    assert w1.last_dispatch > w2.last_dispatch
    assert r.choose(command(container="d"), None) is w1


def test_choose_keeps_one_containers_commands_on_one_worker() -> None:
    r = router()
    w1 = r.register(b"w1", "n1", 4, now=0.0)
    w2 = r.register(b"w2", "n1", 4, now=0.0)
    dispatch(r, command(container="a"), w1)
    dispatch(r, command(container="a"), w1)
    dispatch(r, command(container="b"), w2)
    # w1 is busier, but it already works on "a".
    assert r.choose(command(container="a"), None) is w1
    assert r.choose(command(container="c"), None) is w2


def test_choose_ignores_a_forgotten_command_of_the_container() -> None:
    r = router()
    w1 = r.register(b"w1", "n1", 4, now=0.0)
    w2 = r.register(b"w2", "n1", 4, now=0.0)
    stale = dispatch(r, command(container="a"), w1)
    dispatch(r, command(container="z"), w1)
    del r.outstanding[stale.command.id]  # answered elsewhere; the id lingers on w1
    assert r.choose(command(container="a"), None) is w2


def test_choose_without_a_container_uses_load_only() -> None:
    r = router()
    w1 = r.register(b"w1", "n1", 4, now=0.0)
    w2 = r.register(b"w2", "n1", 4, now=0.0)
    dispatch(r, command(type=t.CREATE, container=None), w1)
    assert r.choose(command(type=t.CREATE, container=None), None) is w2
    assert r.choose(command(type=t.PS, container=None), None) is w2


def test_assign_records_the_dispatch() -> None:
    r = router()
    w = r.register(b"w1", "n1", 4, now=0.0)
    pending = Pending(command(), b"frame", [(b"client",)], deadline=3.0)
    r.assign(pending, w)
    assert pending.worker == b"w1"
    assert pending.deadline is None
    assert w.outstanding == {pending.command.id}
    assert w.last_dispatch == 1
    assert r.outstanding == {pending.command.id: pending}
    assert r.waiting() == []
    second = Pending(command(), b"frame", [(b"client",)])
    r.assign(second, w)
    assert w.last_dispatch == 2


def test_unavailable_says_which_node() -> None:
    r = router()
    anywhere = r.unavailable(command(), None)
    assert isinstance(anywhere, Unavailable)
    assert str(anywhere) == "no live worker is connected to the broker"
    assert str(r.unavailable(command(), "n2")) == "no live worker for node 'n2'"


def test_complete_frees_the_workers_slot() -> None:
    r = router()
    w = r.register(b"w1", "n1", 4, now=0.0)
    pending = dispatch(r, command(), w)
    other = dispatch(r, command(container="other"), w)
    assert r.complete(pending.command.id) is pending
    assert w.outstanding == {other.command.id}
    assert pending.command.id not in r.outstanding
    assert r.complete(pending.command.id) is None


def test_complete_of_a_waiting_or_orphaned_command() -> None:
    r = router()
    w = r.register(b"w1", "n1", 4, now=0.0)
    pending = dispatch(r, command(), w)
    r.workers.pop(b"w1")  # the worker is gone but the command still names it
    assert r.complete(pending.command.id) is pending
    waiting = Pending(command(), b"frame", [(b"client",)], deadline=1.0)
    r.outstanding[waiting.command.id] = waiting
    assert r.waiting() == [waiting]
    assert r.complete(waiting.command.id) is waiting
    assert r.outstanding == {}


def test_the_router_keeps_replies_up_to_its_cache_size() -> None:
    r = router(cache_size=2)
    for command_id in ("a", "b", "c"):
        r.replies.put(command_id, command_id.encode())
    assert len(r.replies) == 2
    assert r.replies.get("c") == b"c" and "a" not in r.replies


# ------------------------------------------------------------------ queue shares


def test_assign_and_complete_count_each_senders_commands() -> None:
    r = router()
    w = r.register(b"w1", "n1", 4, now=0.0)
    first = dispatch(r, command(actor="alice"), w)
    second = dispatch(r, command(actor="alice"), w)
    dispatch(r, command(actor="bob"), w)
    assert w.by_sender == {"alice": 2, "bob": 1}
    r.assign(first, w)  # a re-dispatch of the same command counts once
    assert w.by_sender == {"alice": 2, "bob": 1}
    r.complete(first.command.id)
    assert w.by_sender == {"alice": 1, "bob": 1}
    r.complete(second.command.id)
    assert w.by_sender == {"bob": 1}  # a sender with nothing left is forgotten


def test_a_worker_takes_no_more_than_a_senders_share() -> None:
    r = router()
    w = r.register(b"w1", "n1", 1, now=0.0)
    share = w.queue_limit // 2
    assert share * 2 == w.queue_limit and share > 1
    for _ in range(share - 1):
        dispatch(r, command(actor="alice"), w)
    assert r.busy(command(actor="alice"), w) is None
    dispatch(r, command(actor="alice"), w)
    refusal = r.busy(command(actor="alice"), w)
    assert isinstance(refusal, RateLimited)
    assert str(refusal) == (f"the worker of node n1 is busy (alice already has {share} "
                            "commands in its queue, its share); retry later")
    assert r.busy(command(actor="bob"), w) is None


def test_a_full_queue_refuses_everyone() -> None:
    w = WorkerState(b"w1", "n1", capacity=1, expires_at=0.0)
    w.outstanding.update(f"c{n}" for n in range(w.queue_limit))
    r = router()
    refusal = r.busy(command(actor="carol"), w)
    assert refusal is not None
    assert str(refusal) == (f"the worker of node n1 is busy (all {w.queue_limit} places in "
                            "its queue are taken); retry later")
    w.outstanding.pop()
    assert r.busy(command(actor="carol"), w) is None


# ------------------------------------------------------------------ a worker that is away

def test_a_command_waits_unless_its_node_never_had_a_worker() -> None:
    r = router()
    assert not r.refuse_at_once("a") and not r.refuse_at_once(None)  # nobody seen yet
    w = r.register(b"w1", "a", 1, 0.0)
    r.remove(w.identity)
    assert not r.refuse_at_once("a")  # away: waits for it
    assert r.refuse_at_once("b")  # never seen while a was
    assert not r.refuse_at_once(None)


def test_the_nodes_remembered_are_bounded_oldest_first(monkeypatch: Any) -> None:
    monkeypatch.setattr("bus.routing.MAX_NODES_SEEN", 2)
    r = router()
    for i, node in enumerate(("a", "b", "a", "c")):
        r.register(f"w{i}".encode(), node, 1, 0.0)
    assert list(r.nodes_seen) == ["a", "c"]
    assert r.refuse_at_once("b")


def test_a_held_command_is_answered_before_its_publisher_stops_waiting() -> None:
    r = router()
    assert r.hold_until(command(), 100.0) == 100.0 + PENDING
    assert r.hold_until(command(wait=30.0), 100.0) == 129.0
    assert r.hold_until(command(wait=2.0), 100.0) == 101.8


def test_a_worker_that_hands_a_command_back_gets_no_more() -> None:
    r = router()
    stopping = r.register(b"w1", "a", 1, 0.0)
    other = r.register(b"w2", "a", 1, 0.0)
    cmd = command(node="a")
    dispatch(r, cmd, stopping)
    assert r.take_back(b"w2", cmd.id) is None  # not w2's to give back
    assert r.take_back(b"w9", cmd.id) is None  # an unknown worker
    pending = r.take_back(b"w1", cmd.id)
    assert pending is not None and pending.worker is None
    assert stopping.stopping and not stopping.outstanding and not stopping.by_sender
    assert r.waiting() == [pending]
    assert r.choose(command(node="a"), "a") is other
    r.remove(b"w2")
    assert r.choose(command(node="a"), "a") is None
    r.register(b"w1", "a", 1, 1.0)  # announced itself again
    assert not stopping.stopping
    assert r.choose(command(node="a"), "a") is stopping
    assert r.take_back(b"w1", "no-such-command") is None
