"""Catch-up subscriptions against the real store, through a real worker and broker.

tests/bus/test_subscription.py drives the subscription with an in-memory log; here
the pages come from SQLite through the worker's ``query.events``, and the gap is
made by a second writer on the same store whose events are never published on this
bus (what a concurrent writer's lost or late publication looks like).
"""

from __future__ import annotations

import uuid

from bus.protocol import EventMessage
from bus.subscription import Subscription
from tests.e2e.conftest import Engine


def _collect(sub: Subscription, count: int, timeout: float = 10.0) -> list[EventMessage]:
    got: list[EventMessage] = []
    while len(got) < count:
        event = sub.get(timeout)
        assert event is not None, f"only {[(e.position, e.type) for e in got]} of {count}"
        got.append(event)
    return got


def test_catch_up_pages_and_a_gap_come_from_the_store(up: Engine) -> None:
    c = up.client()
    for _ in range(3):
        # positions 1..6, published to nobody (no network: no network_attached event)
        c.create(rootfs=up.rootfs, args=["true"], network="none")
    fetcher = up.client()
    # The idle poll is pushed past the test: stored events can reach the subscriber
    # only by the catch-up at start (in pages of 2) and by the fill that a jump in
    # live positions triggers.
    sub = Subscription(fetcher.events, up.endpoints.events, from_position=1, page_size=2,
                       idle_check=600)
    try:
        stored = _collect(sub, 6)
        assert [e.position for e in stored] == [1, 2, 3, 4, 5, 6]
        assert [e.type for e in stored] == ["container.created", "container.pid_received"] * 3

        with up.store() as other_writer:
            hidden = [other_writer.record_failure(
                str(uuid.uuid4()), "container.start", uuid.uuid4().hex * 2, "not_found",
                "hidden from the bus", actor="someone", node="elsewhere")[0]
                for _ in range(2)]
        assert [r.position for r in hidden] == [7, 8]
        created = c.create(rootfs=up.rootfs, args=["true"],
                           network="none").result["id"]  # live: 9, 10

        rest = _collect(sub, 4)
        assert [e.position for e in rest] == [7, 8, 9, 10]
        assert [(e.type, e.stream) for e in rest[:2]] == [
            ("command.failed", r.stream) for r in hidden]
        assert [(e.type, e.stream) for e in rest[2:]] == [
            ("container.created", created), ("container.pid_received", created)]
        assert sub.get(0.3) is None  # nothing twice
    finally:
        sub.close()
