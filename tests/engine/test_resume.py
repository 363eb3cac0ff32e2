"""``decide.resume``: what a resent command id does when its first attempt recorded
an outcome. Only a stop whose intent is recorded, with no exit after it and the
container still running, is finished; everything else replays its outcome."""

from __future__ import annotations

from datetime import timedelta

import pytest

from engine import commands as c
from engine import events as ev
from engine.containers import decide as d
from tests.engine.states import NOW, recorded, state


def _intent(cid: str, timeout: int = 10) -> list[ev.RecordedEvent]:
    return [recorded(cid, 4, ev.StopRequested(timeout))]


def test_an_interrupted_stop_goes_on_with_what_is_left_of_its_grace_period() -> None:
    running = state("running")
    resumed = d.resume(running, c.Stop(running.id, 10.0), _intent(running.id), [],
                       NOW + timedelta(seconds=4))
    assert resumed is not None
    command, plan = resumed
    assert command == c.Stop(running.id, 6.0)
    assert plan.steps == (d.Step.STOP, d.Step.RECORD_EXIT) and plan.before == ()
    assert plan.then(d.Facts()) == ()


def test_a_grace_period_that_is_over_kills_at_once() -> None:
    running = state("running")
    resumed = d.resume(running, c.Stop(running.id, 10.0), _intent(running.id), [],
                       NOW + timedelta(seconds=30))
    assert resumed is not None and resumed[0].timeout == 0.0


@pytest.mark.parametrize("name", ["created", "paused", "exited"])
def test_a_stop_whose_container_no_longer_runs_replays(name: str) -> None:
    s = state(name)
    assert d.resume(s, c.Stop(s.id), _intent(s.id), [], NOW) is None


def test_a_stop_followed_by_an_exit_replays_even_if_the_container_runs_again() -> None:
    running = state("running")
    since = [recorded(running.id, 5, ev.Exited(143, NOW, True, "stop")),
             recorded(running.id, 6, ev.Started())]
    assert d.resume(running, c.Stop(running.id), _intent(running.id), since, NOW) is None


def test_only_a_recorded_stop_intent_is_resumed() -> None:
    running = state("running")
    signalled = [recorded(running.id, 4, ev.Signalled(10))]
    assert d.resume(running, c.Kill(running.id, 10), signalled, [], NOW) is None
    assert d.resume(running, c.Stop(running.id), signalled, [], NOW) is None
