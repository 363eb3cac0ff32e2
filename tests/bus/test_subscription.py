"""Catch-up subscriptions: stored then live events, no gap, no duplicate."""

from __future__ import annotations

from collections.abc import Callable

from bus.broker import Broker
from bus.client import Client
from bus.protocol import EventMessage
from bus.worker_link import WorkerLink
from tests.bus.helpers import MemoryLog


def collect(sub: object, count: int, timeout: float = 5.0) -> list[EventMessage]:
    got: list[EventMessage] = []
    while len(got) < count:
        event = sub.get(timeout)  # type: ignore[attr-defined]
        assert event is not None, f"only {len(got)} of {count} events"
        got.append(event)
    return got


def test_catch_up_then_live_without_gap_or_duplicate(
        broker: Broker, client: Client, make_worker: Callable[..., WorkerLink]) -> None:
    log = MemoryLog()
    log.link = make_worker("n1", log)
    for _ in range(7):
        log.append("container.created")
    during: list[int] = []

    def commit_during_catch_up(after: int) -> None:
        if len(during) < 3:  # events committed and published while pages are read
            during.append(log.append("container.started").position)

    log.on_query = commit_during_catch_up
    with client.subscribe(from_position=1, page_size=3) as sub:
        log.on_query = None
        assert during == [8, 9, 10]
        for _ in range(5):
            log.append("container.stopped")
        got = collect(sub, 15)
        assert [e.position for e in got] == list(range(1, 16))
        assert sub.get(0.3) is None  # and nothing twice


def test_live_gaps_are_filled_from_the_store(
        broker: Broker, client: Client, make_worker: Callable[..., WorkerLink]) -> None:
    log = MemoryLog()
    log.link = make_worker("n1", log)
    log.append("container.created")
    with client.subscribe(from_position=1) as sub:
        assert [e.position for e in collect(sub, 1)] == [1]
        log.append("container.started", publish=False)  # lost on the bus
        log.append("container.paused", publish=False)
        log.append("container.unpaused")  # the jump 1 -> 4 reveals the gap
        assert [e.position for e in collect(sub, 3)] == [2, 3, 4]


def test_from_now_and_filters(broker: Broker, client: Client,
                              make_worker: Callable[..., WorkerLink]) -> None:
    log = MemoryLog()
    log.link = make_worker("n1", log)
    log.append("container.created", "old")
    with client.subscribe(types=["container.started"], container="c2") as sub:
        log.append("container.started", "c1")
        log.append("container.created", "c2")
        log.append("container.started", "c2")
        [event] = collect(sub, 1)
        assert (event.position, event.type, event.stream) == (
            4, "container.started", "container-c2")
        assert sub.last_position == 4


def test_wait_for_sees_an_event_from_before_the_call(
        broker: Broker, client: Client, make_worker: Callable[..., WorkerLink]) -> None:
    log = MemoryLog()
    log.link = make_worker("n1", log)
    start = log.append("container.started").position
    log.append("container.exited")
    event = client.wait_for(lambda e: e.type == "container.exited", 5, from_position=start)
    assert event.position == start + 1
