"""The delay queue under the restart scheduler and the health monitor (workers.delays):
due order, replacement and cancellation by key, a failing action, close, bounds.

Real threads and the real monotonic clock; the delays are short but ordered far
enough apart that a loaded machine does not reorder them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from tests.helpers import wait_until
from workers.delays import Delays


@pytest.fixture
def delays() -> Iterator[Delays]:
    queue = Delays("test-delays")
    queue.start()
    yield queue
    queue.close()


def test_actions_run_in_due_order_not_scheduling_order(delays: Delays) -> None:
    ran: list[str] = []
    now = time.monotonic()
    delays.at(now + 0.3, lambda: ran.append("third"))
    delays.at(now + 0.1, lambda: ran.append("first"))
    delays.at(now + 0.2, lambda: ran.append("second"))
    wait_until(lambda: len(ran) == 3, 10, what="three actions")
    assert ran == ["first", "second", "third"]


def test_ties_run_in_the_order_they_were_scheduled() -> None:
    queue = Delays("test-delays-ties")
    ran: list[int] = []
    when = time.monotonic()
    for i in range(20):
        queue.at(when, lambda i=i: ran.append(i))
    queue.start()  # all due at once: only the tie-break orders them
    try:
        wait_until(lambda: len(ran) == 20, 10, what="twenty actions")
        assert ran == list(range(20))
    finally:
        queue.close()


def test_an_action_is_not_run_before_it_is_due(delays: Delays) -> None:
    ran = threading.Event()
    start = time.monotonic()
    delays.after(0.3, ran.set)
    assert ran.wait(10)
    assert time.monotonic() - start >= 0.3


def test_a_key_holds_one_pending_action_the_latest(delays: Delays) -> None:
    ran: list[str] = []
    delays.after(0.2, lambda: ran.append("old"), key="c1")
    delays.after(0.1, lambda: ran.append("new"), key="c1")
    delays.after(0.3, lambda: ran.append("done"))
    wait_until(lambda: "done" in ran, 10, what="the unkeyed action")
    assert ran == ["new", "done"]
    assert not delays.pending("c1")


def test_cancel_drops_the_pending_action_of_a_key(delays: Delays) -> None:
    ran: list[str] = []
    delays.after(0.1, lambda: ran.append("c1"), key="c1")
    delays.after(0.1, lambda: ran.append("c2"), key="c2")
    assert delays.cancel("c1")
    assert not delays.cancel("c1")  # nothing pending any more
    assert not delays.cancel("never")
    delays.after(0.2, lambda: ran.append("done"))
    wait_until(lambda: "done" in ran, 10, what="the last action")
    assert ran == ["c2", "done"]


def test_an_action_that_raises_does_not_stop_the_queue(delays: Delays) -> None:
    ran = threading.Event()

    def fail() -> None:
        raise RuntimeError("boom")

    delays.after(0.0, fail)
    delays.after(0.05, ran.set)
    assert ran.wait(10)


def test_close_drops_pending_work_and_refuses_more() -> None:
    queue = Delays("test-delays-close")
    queue.start()
    ran = threading.Event()
    queue.after(0.2, ran.set)
    queue.close()
    assert not ran.wait(0.5)
    assert not queue.after(0.0, ran.set)
    assert len(queue) == 0
    queue.close()  # twice is harmless


def test_close_waits_for_the_action_running() -> None:
    queue = Delays("test-delays-running")
    queue.start()
    started, finished = threading.Event(), threading.Event()

    def slow() -> None:
        started.set()
        time.sleep(0.3)
        finished.set()

    queue.after(0.0, slow)
    assert started.wait(10)
    queue.close()
    assert finished.is_set()


def test_an_action_may_schedule_and_close_from_the_queue_thread() -> None:
    queue = Delays("test-delays-self")
    queue.start()
    ran: list[str] = []

    def first() -> None:
        ran.append("first")
        queue.after(0.0, second)

    def second() -> None:
        ran.append("second")
        queue.close()  # must not wait on itself

    queue.after(0.0, first)
    wait_until(lambda: ran == ["first", "second"], 10, what="both actions")
    assert not queue.after(0.0, lambda: None)


def test_rescheduling_the_same_keys_forever_keeps_the_heap_bounded() -> None:
    queue = Delays("test-delays-bounded")  # never started: nothing comes due
    for round_ in range(2000):
        for key in range(10):
            queue.after(3600.0, lambda: None, key=(key, round_ % 2))
    assert len(queue) == 20
    assert len(queue._heap) < 200  # replaced entries compacted away
    for key in range(10):
        queue.cancel((key, 0))
    assert len(queue) == 10
