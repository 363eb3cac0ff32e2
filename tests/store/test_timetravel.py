"""State at a past position or time, from the log alone."""

from __future__ import annotations

from datetime import timedelta

import pytest

from engine import events as ev
from engine.errors import InvalidArgument
from engine.store.store import EventStore
from tests.store.helpers import create, run


def test_state_at_position_time_and_container(store: EventStore) -> None:
    a = create(store, "a")                                   # 1
    run(store, a, 1, ev.PidReceived(10, 9), ev.Started())    # 2, 3
    b = create(store, "b")                                   # 4
    run(store, a, 3, ev.Exited(1, None, False, "exit"))      # 5
    run(store, b, 1, ev.Removed())                           # 6

    assert store.state_at(position=0) == {}
    assert {k: v.state for k, v in store.state_at(position=1).items()} == {a: "created"}
    at4 = store.state_at(position=4)
    assert (at4[a].state, at4[a].pid, at4[b].state) == ("running", 10, "created")
    now = store.state_at()
    assert (now[a].state, now[a].exit_code, now[b].state) == ("exited", 1, "removed")
    assert set(store.state_at(position=4, container=b)) == {b}
    # The log and the read model agree on "now".
    assert now[a] == store.get_container(a)

    times = [r.metadata.recorded_at for r in store.read_all()]
    assert times == sorted(times)  # recorded_at never runs backwards along the log
    by_time = store.state_at(time=times[2])
    last_at_t3 = max(i for i, t in enumerate(times, start=1) if t <= times[2])
    assert by_time == store.state_at(position=last_at_t3)
    assert store.state_at(time=times[0] - timedelta(seconds=1)) == {}


def test_bad_bounds(store: EventStore) -> None:
    with pytest.raises(InvalidArgument):
        store.state_at(position=-1)
    with pytest.raises(InvalidArgument):
        from datetime import datetime
        store.state_at(time=datetime(2024, 1, 1))
