"""The pure rules of a network given back on exit: when it is due,
whether the stream says it was done, and what a start after it records."""

from __future__ import annotations

from dataclasses import replace

from engine import commands as c
from engine import events as ev
from engine.containers import decide as d
from engine.networks.rules import Attachment
from engine.runtime.types import Created
from tests.engine.states import state

ATTACHED = ev.NetworkAttached("berth", "eth0", ("10.89.0.7/24",), "10.89.0.1", "aa:bb")
DETACHED = ev.NetworkDetached("berth", ("10.89.0.7/24",))


def test_release_is_due_for_an_ended_container_but_not_after_a_checkpoint() -> None:
    assert d.network_release_due(state("exited"))
    for alive in ("created", "running", "paused", "removed"):
        assert not d.network_release_due(state(alive)), alive
    stopped_by_dump = replace(state("exited"), exit_reason="checkpoint")
    assert not d.network_release_due(stopped_by_dump)  # its restore needs the address


def test_the_last_network_event_says_whether_it_was_released() -> None:
    assert not d.network_released([])
    assert not d.network_released([ATTACHED])
    assert d.network_released([ATTACHED, ev.Exited(0, None, False, "exit"), DETACHED])
    assert not d.network_released([ATTACHED, DETACHED, ev.Started(), ATTACHED])


def test_a_start_after_an_exit_records_the_new_attachment() -> None:
    exited = state("exited")
    plan = d.decide(exited, c.Start(exited.id))
    attachment = Attachment("berth", "eth0", ("10.89.0.9/24",), "10.89.0.1", "cc:dd")
    facts = d.Facts(container_id="x", node="local", created=Created(7, 6, attachment))
    kinds = [type(e).__name__ for e in plan.then(facts)]
    assert kinds == ["PidReceived", "NetworkAttached", "Started"]
    bare = d.Facts(container_id="x", node="local", created=Created(7, 6, None))
    assert [type(e).__name__ for e in plan.then(bare)] == ["PidReceived", "Started"]
