"""Details of the fold that the property tests reach too rarely to pin down."""

from __future__ import annotations

import gc

from engine import events as ev
from engine.containers import projection as pj
from tests.engine.states import SPEC, recorded

CID = "c" * 64


def _checkpointed_then(restored: ev.Restored) -> list[ev.RecordedEvent]:
    """A checkpoint that left the container running (conmon 9 still there), then a
    restore: the fold is total, so it must say what the conmon pid becomes."""
    events: list[ev.Event] = [
        ev.ContainerCreated(name="web", node="local", bundle="/b", spec=SPEC),
        ev.PidReceived(10, 9), ev.Started(), ev.Checkpointed("/b/ck", True, False), restored,
    ]
    return [recorded(CID, i, e) for i, e in enumerate(events, start=1)]


def test_a_restore_without_a_new_conmon_keeps_the_old_one() -> None:
    s = pj.fold_stream(_checkpointed_then(ev.Restored(20)))
    assert s is not None
    assert (s.state, s.pid, s.conmon_pid) == ("running", 20, 9)
    s = pj.fold_stream(_checkpointed_then(ev.Restored(20, 19)))
    assert s is not None and (s.pid, s.conmon_pid) == (20, 19)


def test_the_fold_of_nothing_is_no_container() -> None:
    assert pj.fold_stream([]) is None
    assert pj.fold([]) == {}


def test_fold_gives_the_garbage_collector_back_as_it_found_it() -> None:
    log = _checkpointed_then(ev.Restored(20))
    was = gc.isenabled()
    try:
        gc.enable()
        pj.fold(log)
        assert gc.isenabled()
        gc.disable()
        pj.fold(log)
        assert not gc.isenabled()
    finally:
        if was:
            gc.enable()
