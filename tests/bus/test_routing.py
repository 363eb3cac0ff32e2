"""The broker's pure bookkeeping (bus.routing): bounds that need no sockets."""

from __future__ import annotations

from bus.routing import MIN_QUEUE, QUEUE_PER_SLOT, RecentReplies, WorkerState


def test_recent_replies_are_bounded_in_bytes_as_well_as_entries() -> None:
    replies = RecentReplies(size=100, max_bytes=10_000)
    for n in range(50):
        replies.put(f"id-{n}", bytes(1_000))
    assert len(replies) == 10  # ten of 1,000 bytes fit, the oldest went first
    assert "id-49" in replies and "id-39" not in replies
    replies.put("id-49", bytes(3_000))  # a replaced reply counts once, at its new size
    assert len(replies) == 8
    replies.put("huge", bytes(50_000))  # one reply over the bound is still kept alone
    assert len(replies) == 1 and replies.get("huge") is not None


def test_a_worker_queue_has_a_bound_and_each_sender_half_of_it() -> None:
    worker = WorkerState(b"w", "n1", capacity=64, expires_at=0.0)
    assert worker.queue_limit == max(MIN_QUEUE, QUEUE_PER_SLOT * 64)
    share = worker.queue_limit // 2
    worker.outstanding.update(f"a{n}" for n in range(share))
    worker.by_sender["alice"] = share
    assert "its share" in (worker.full_for("alice") or "")
    assert worker.full_for("bob") is None
    worker.outstanding.update(f"b{n}" for n in range(share))
    worker.by_sender["bob"] = share
    assert "places in its queue" in (worker.full_for("carol") or "")
