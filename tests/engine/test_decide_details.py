"""``decide`` in detail: the sentence of every refusal, the replies of the plans that
reply, and the exact events a plan records from the runtime's facts.

tests/engine/test_decide.py holds the table of which (state, command) pairs are
refused and which steps run; this file pins what the caller and the log then see.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from engine import commands as c
from engine import events as ev
from engine.containers import decide as d
from engine.errors import InvalidArgument, InvalidState, NotFound
from engine.runtime.exitfile import ExitStatus
from engine.runtime.types import Created
from tests.engine.states import SPEC, recorded, state

CID = "c" * 64
WHEN = datetime(2026, 12, 1, 11, tzinfo=UTC)
FACTS = d.Facts(container_id=CID, node="local", bundle="/b", created=Created(7, 6),
                image_path="/b/checkpoint", exit=ExitStatus(0, WHEN), exec_pid=8,
                exec_exit_code=3)


@pytest.mark.parametrize(("name", "command", "sentence"), [
    ("running", c.Start(CID), "container web is running; it cannot be started"),
    ("paused", c.Stop(CID), "container web is paused: unpause it before stopping"),
    ("created", c.Kill(CID, 15), "container web is created, not running"),
    ("exited", c.Pause(CID), "container web is exited, not running"),
    ("running", c.Unpause(CID), "container web is running, not paused"),
    ("paused", c.Exec(CID, ("true",)), "container web is paused: exec needs a running container"),
    ("exited", c.Checkpoint(CID),
     "container web is exited: only a running container can be checkpointed"),
    ("exited", c.Restore(CID), "container web is exited and has no checkpoint to restore"),
    ("running", c.Remove(CID), "container web is running: stop it first or use --force"),
    ("exited", c.Create(SPEC), "container web already exists"),
])
def test_each_refusal_says_why(name: str, command: c.ContainerCommand, sentence: str) -> None:
    with pytest.raises(InvalidState) as err:
        d.decide(state(name), command)
    assert str(err.value) == sentence


def test_not_found_names_the_reference() -> None:
    with pytest.raises(NotFound) as err:
        d.decide(None, c.Start("web"))
    assert str(err.value) == "no such container: web"


def test_a_command_without_a_rule_is_a_programming_error() -> None:
    with pytest.raises(TypeError) as err:
        d.decide(state("running"), c.Ps())  # type: ignore[arg-type]
    assert str(err.value) == "no rule for Ps"


def test_stop_of_a_container_not_running_replies_its_state() -> None:
    current = state("created")
    plan = d.decide(current, c.Stop(CID))
    assert plan.noop
    assert plan.result == {"id": current.id, "state": "created"}


def test_kill_replies_the_signal() -> None:
    current = state("paused")
    plan = d.decide(current, c.Kill(CID, 10))
    assert plan.result == {"id": current.id, "signal": 10}


def test_create_without_pids_is_a_programming_error() -> None:
    plan = d.decide(None, c.Create(SPEC))
    with pytest.raises(ValueError) as err:
        plan.then(d.Facts(container_id=CID))
    assert str(err.value) == "a create step reports the pids it created"


def test_exec_started_records_the_session_argv_and_pid() -> None:
    assert d.exec_started(c.Exec(CID, ("ls", "-l")), "s1", 99) == ev.ExecStarted(
        "s1", ("ls", "-l"), 99)


def test_exec_records_the_sessions_exit_code() -> None:
    plan = d.decide(state("running"), c.Exec(CID, ("true",), session_id="s1"))
    assert plan.then(FACTS) == (ev.ExecExited("s1", 3),)


def test_an_exec_without_its_session_or_exit_code_is_a_programming_error() -> None:
    with pytest.raises(ValueError) as err:
        d.decide(state("running"), c.Exec(CID, ("true",)))
    assert str(err.value) == "the service names each exec session before deciding"
    plan = d.decide(state("running"), c.Exec(CID, ("true",), session_id="s1"))
    with pytest.raises(ValueError) as err:
        plan.then(d.Facts(exec_exit_code=None))
    assert str(err.value) == "an exec step reports its session and exit code"


def test_checkpoint_records_its_intent_the_image_and_the_exit() -> None:
    plan = d.decide(state("running"), c.Checkpoint(CID, tcp_established=True,
                                                   image_path="/b/ck1"))
    assert plan.before == (ev.CheckpointRequested("/b/ck1", False, True),)
    assert plan.then(FACTS) == (ev.Checkpointed("/b/ck1", False, True),
                                ev.Exited(0, WHEN, True, "checkpoint"))
    leave = d.decide(state("running"), c.Checkpoint(CID, leave_running=True,
                                                    image_path="/b/ck2"))
    assert leave.then(FACTS) == (ev.Checkpointed("/b/ck2", True, False),)


def test_checkpoint_without_an_exit_status() -> None:
    plan = d.decide(state("running"), c.Checkpoint(CID, image_path="/b/ck1"))
    assert plan.then(d.Facts()) == (ev.Checkpointed("/b/ck1", False, False),
                                    ev.Exited(-1, None, True, "checkpoint"))


def test_checkpoint_without_an_image_directory_is_a_programming_error() -> None:
    with pytest.raises(ValueError) as err:
        d.decide(state("running"), c.Checkpoint(CID))
    assert str(err.value) == "the service gives each checkpoint its own image directory"


def test_an_exit_event_keeps_when_the_process_ended() -> None:
    event = d.exit_event(state("running"), (ev.Started(),), ExitStatus(3, WHEN))
    assert event == ev.Exited(3, WHEN, False, "crash")
    assert d.exit_event(state("running"), (ev.Started(),), ExitStatus(3, WHEN),
                        "conmon_lost") == ev.Exited(3, WHEN, False, "conmon_lost")


# --------------------------------------------------------------------------- resends


def _at(seconds: float) -> datetime:
    return WHEN + timedelta(seconds=seconds)


def _intent(timeout: int, at: float) -> ev.RecordedEvent:
    r = recorded(CID, 4, ev.StopRequested(timeout))
    return dataclasses.replace(r, metadata=dataclasses.replace(r.metadata, recorded_at=_at(at)))


def test_a_resent_stop_goes_on_with_the_grace_period_left() -> None:
    resumed = d.resume(state("running"), c.Stop(CID, 10), [_intent(10, 0)], [], _at(4))
    assert resumed is not None
    command, plan = resumed
    assert command == c.Stop(CID, 6.0)
    assert plan.steps == (d.Step.STOP, d.Step.RECORD_EXIT)
    assert plan.before == ()
    late = d.resume(state("running"), c.Stop(CID, 10), [_intent(10, 0)], [], _at(30))
    assert late is not None and late[0].timeout == 0.0


def test_the_last_stop_intent_counts() -> None:
    resumed = d.resume(state("running"), c.Stop(CID, 10),
                       [_intent(10, 0), _intent(20, 5)], [], _at(6))
    assert resumed is not None and resumed[0].timeout == 19.0


def test_a_resend_replays_when_nothing_is_left_to_do() -> None:
    exited = recorded(CID, 5, ev.Exited(143, WHEN, True, "stop"))
    intents = [_intent(10, 0)]
    assert d.resume(state("running"), c.Stop(CID), intents, [exited], _at(1)) is None
    assert d.resume(state("exited"), c.Stop(CID), intents, [], _at(1)) is None
    assert d.resume(state("running"), c.Kill(CID, 9), intents, [], _at(1)) is None
    assert d.resume(state("running"), c.Stop(CID), [], [], _at(1)) is None
    started = recorded(CID, 4, ev.Started())
    assert d.resume(state("running"), c.Stop(CID), [started], [], _at(1)) is None


def test_exec_end_events() -> None:
    requested = ev.ExecRequested("s1", ("ls",))
    fresh = d.ExecProgress(requested=requested)
    assert d.exec_end_events(fresh, "s1", 42, 0) == (
        ev.ExecStarted("s1", ("ls",), 42), ev.ExecExited("s1", 0))
    assert d.exec_end_events(fresh, "s1", 1, 2) == (
        ev.ExecStarted("s1", ("ls",), 1), ev.ExecExited("s1", 2))
    assert d.exec_end_events(fresh, "s1", 0, 2) == (ev.ExecExited("s1", 2),)
    assert d.exec_end_events(d.ExecProgress(), "s1", 5, 1) == (
        ev.ExecStarted("s1", (), 5), ev.ExecExited("s1", 1))
    started = d.ExecProgress(requested=requested, started=True)
    assert d.exec_end_events(started, "s1", 42, 3) == (ev.ExecExited("s1", 3),)
    closed = d.ExecProgress(requested=requested, started=True, exit_code=0)
    assert d.exec_end_events(closed, "s1", 42, 3) == ()


def test_an_update_records_old_and_new_of_what_changed_only() -> None:
    spec = dataclasses.replace(SPEC, memory=32 * 1024 * 1024, restart="on-failure:2")
    current = state("running", spec=spec)
    plan = d.decide(current, c.Update(CID, memory=64 * 1024 * 1024, pids_limit=50,
                                      restart="on-failure:2"))
    assert not plan.noop and plan.steps == (d.Step.UPDATE,)
    assert plan.result == {"id": current.id, "changed": ["memory", "pids_limit"]}
    assert plan.then(FACTS) == (ev.Updated({"memory": 32 * 1024 * 1024, "pids_limit": None},
                                           {"memory": 64 * 1024 * 1024, "pids_limit": 50}),)


def test_an_update_that_changes_nothing_records_nothing() -> None:
    current = state("running", spec=dataclasses.replace(SPEC, restart="always"))
    plan = d.decide(current, c.Update(CID, restart="always"))
    assert plan.noop
    assert plan.result == {"id": current.id, "changed": []}
    assert plan.then(FACTS) == ()


def test_an_update_of_the_restart_policy_alone_is_recorded_without_runc() -> None:
    plan = d.decide(state("running"), c.Update(CID, restart="unless-stopped"))
    assert not plan.noop and plan.steps == ()
    assert plan.then(FACTS) == (ev.Updated({"restart": "no"}, {"restart": "unless-stopped"}),)


def test_an_update_the_spec_rules_refuse_is_bad_input() -> None:
    current = state("exited", spec=dataclasses.replace(SPEC, auto_remove=True))
    with pytest.raises(InvalidArgument, match="conflicts with --rm"):
        d.decide(current, c.Update(CID, restart="always"))


def test_stop_of_an_exited_container_with_a_restart_policy_records_the_wish() -> None:
    current = state("exited", spec=dataclasses.replace(SPEC, restart="always"))
    plan = d.decide(current, c.Stop(CID, 7))
    assert not plan.noop and plan.steps == ()
    assert plan.before == (ev.StopRequested(7),)
    assert plan.result == {"id": current.id, "state": "exited"}
    assert d.decide(state("exited"), c.Stop(CID, 7)).noop  # no policy: nothing to tell
    created = state("created", spec=dataclasses.replace(SPEC, restart="always"))
    assert d.decide(created, c.Stop(CID, 7)).noop
