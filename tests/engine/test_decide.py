"""``decide`` against an explicit table: every (state, command) pair, no processes.

The table below is the expected behaviour written out by hand from podman's
semantics, not derived from ``engine.containers.decide``: a rule changed by mistake there shows
up here as a row that no longer matches.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from engine import commands as c
from engine import events as ev
from engine.containers import decide as d
from engine.containers.projection import ALIVE, STATES, ContainerState, apply
from engine.containers.spec import RunSpec
from engine.errors import InvalidState, NotFound
from engine.runtime.exitfile import ExitStatus
from engine.runtime.types import Created, DumpReport, ExecSession, Status, StatusReport
from tests.budget import examples
from tests.engine.states import SPEC, recorded, state

S = d.Step
CID = "c" * 64
R = InvalidState  # a refusal

IMAGE = "/b/checkpoints/c1"
COMMANDS: dict[str, c.ContainerCommand] = {
    "start": c.Start(CID),
    "stop": c.Stop(CID, 5),
    "kill": c.Kill(CID, 15),
    "pause": c.Pause(CID),
    "unpause": c.Unpause(CID),
    "exec": c.Exec(CID, ("true",), session_id="s1"),
    "checkpoint": c.Checkpoint(CID, image_path=IMAGE),
    "checkpoint-leave": c.Checkpoint(CID, leave_running=True, image_path=IMAGE),
    "restore": c.Restore(CID),
    "rm": c.Remove(CID),
    "rm-f": c.Remove(CID, force=True),
    "update-memory": c.Update(CID, memory=64 * 1024 * 1024),
    "update-restart": c.Update(CID, restart="always"),
}

# (state, command) -> refusal, or (steps, events before, event types after)
NOOP = ((), (), ())
EXPECTED: dict[tuple[str, str], object] = {
    ("created", "start"): ((S.START,), (), (ev.Started,)),
    ("running", "start"): R,
    ("paused", "start"): R,
    ("exited", "start"): ((S.DELETE, S.CREATE, S.START), (), (ev.PidReceived, ev.Started)),
    ("created", "stop"): NOOP,
    ("running", "stop"): ((S.STOP, S.RECORD_EXIT), (ev.StopRequested,), ()),
    ("paused", "stop"): R,
    ("exited", "stop"): NOOP,
    ("created", "kill"): R,
    ("running", "kill"): ((S.KILL,), (ev.Signalled,), ()),  # recorded before it is sent
    ("paused", "kill"): ((S.KILL,), (ev.Signalled,), ()),
    ("exited", "kill"): R,
    ("created", "pause"): R,
    ("running", "pause"): ((S.PAUSE,), (), (ev.Paused,)),
    ("paused", "pause"): R,
    ("exited", "pause"): R,
    ("created", "unpause"): R,
    ("running", "unpause"): R,
    ("paused", "unpause"): ((S.UNPAUSE,), (), (ev.Unpaused,)),
    ("exited", "unpause"): R,
    ("created", "exec"): R,
    ("running", "exec"): ((S.EXEC,), (ev.ExecRequested,), (ev.ExecExited,)),
    ("paused", "exec"): R,
    ("exited", "exec"): R,
    ("created", "checkpoint"): R,
    ("running", "checkpoint"): ((S.CHECKPOINT,), (ev.CheckpointRequested,),
                                (ev.Checkpointed, ev.Exited)),
    ("paused", "checkpoint"): R,
    ("exited", "checkpoint"): R,
    ("running", "checkpoint-leave"): ((S.CHECKPOINT,), (ev.CheckpointRequested,),
                                      (ev.Checkpointed,)),
    ("created", "checkpoint-leave"): R,
    ("paused", "checkpoint-leave"): R,
    ("exited", "checkpoint-leave"): R,
    ("created", "restore"): R,
    ("running", "restore"): R,
    ("paused", "restore"): R,
    ("exited", "restore"): R,  # exited without a checkpoint
    ("created", "rm"): ((S.DELETE, S.CLEANUP), (), (ev.Removed,)),
    ("running", "rm"): R,
    ("paused", "rm"): R,
    ("exited", "rm"): ((S.DELETE, S.CLEANUP), (), (ev.Removed,)),
    ("created", "rm-f"): ((S.DELETE, S.CLEANUP), (), (ev.Removed,)),
    ("running", "rm-f"): ((S.STOP, S.RECORD_EXIT, S.DELETE, S.CLEANUP), (ev.StopRequested,),
                         (ev.Removed,)),
    ("paused", "rm-f"): ((S.UNPAUSE, S.STOP, S.RECORD_EXIT, S.DELETE, S.CLEANUP),
                         (ev.StopRequested,), (ev.Removed,)),
    ("exited", "rm-f"): ((S.DELETE, S.CLEANUP), (), (ev.Removed,)),
    # resources through runc update while there is a process; the log alone otherwise
    ("created", "update-memory"): ((S.UPDATE,), (), (ev.Updated,)),
    ("running", "update-memory"): ((S.UPDATE,), (), (ev.Updated,)),
    ("paused", "update-memory"): ((S.UPDATE,), (), (ev.Updated,)),
    ("exited", "update-memory"): ((), (), (ev.Updated,)),
    ("created", "update-restart"): ((), (), (ev.Updated,)),
    ("running", "update-restart"): ((), (), (ev.Updated,)),
    ("paused", "update-restart"): ((), (), (ev.Updated,)),
    ("exited", "update-restart"): ((), (), (ev.Updated,)),
}

FACTS = d.Facts(container_id=CID, node="local", bundle="/b", created=Created(7, 6),
                image_path="/b/checkpoint", exit=ExitStatus(0, datetime.now(UTC)),
                exec_pid=8, exec_exit_code=3)


def test_the_table_covers_every_pair() -> None:
    assert set(EXPECTED) == {(s, k) for s in ("created", "running", "paused", "exited")
                             for k in COMMANDS}


@pytest.mark.parametrize(("name", "kind"), sorted(EXPECTED))
def test_decide_matches_the_table(name: str, kind: str) -> None:
    expected = EXPECTED[(name, kind)]
    current = state(name)
    if expected is R:
        with pytest.raises(InvalidState):
            d.decide(current, COMMANDS[kind])
        return
    assert isinstance(expected, tuple)
    steps, before, after = expected
    plan = d.decide(current, COMMANDS[kind])
    assert plan.steps == steps
    assert tuple(type(e) for e in plan.before) == before
    assert tuple(type(e) for e in plan.then(FACTS)) == after


@pytest.mark.parametrize("kind", sorted(COMMANDS))
def test_a_removed_or_unknown_container_is_not_found(kind: str) -> None:
    for current in (None, state("removed")):
        with pytest.raises(NotFound):
            d.decide(current, COMMANDS[kind])


def test_restore_needs_a_checkpoint_and_records_the_new_pids() -> None:
    plan = d.decide(state("exited", checkpoint="/b/checkpoint"), c.Restore(CID))
    assert plan.steps == (S.RESTORE,)
    assert plan.then(FACTS) == (ev.Restored(7, 6),)


def test_create_records_created_then_pids_and_names_by_default() -> None:
    plan = d.decide(None, c.Create(SPEC))
    assert plan.steps == (S.CREATE,)
    created, pids = plan.then(FACTS)
    assert created == ev.ContainerCreated(name=f"berth-{CID[:12]}", node="local", bundle="/b",
                                          spec=SPEC)
    assert pids == ev.PidReceived(7, 6)
    assert d.decide(None, c.Create(SPEC, "web")).then(FACTS)[0].name == "web"  # type: ignore[attr-defined]
    with pytest.raises(InvalidState):
        d.decide(state("exited"), c.Create(SPEC))


def test_stop_asks_with_its_timeout_and_replies_the_state_when_nothing_runs() -> None:
    plan = d.decide(state("running"), c.Stop(CID, 7.9))
    assert plan.before == (ev.StopRequested(7),)
    noop = d.decide(state("exited"), c.Stop(CID))
    assert noop.noop and noop.result["state"] == "exited"


def test_kill_records_the_signal_it_sent() -> None:
    plan = d.decide(state("running"), c.Kill(CID, 10))
    assert plan.before == (ev.Signalled(10),) and plan.then(FACTS) == ()


def test_checkpoint_exit_is_expected_with_reason_checkpoint() -> None:
    plan = d.decide(state("running"), COMMANDS["checkpoint"])
    assert plan.before == (ev.CheckpointRequested(IMAGE, False, False),)
    checkpointed, exited = plan.then(FACTS)
    assert checkpointed == ev.Checkpointed(IMAGE, False, False)
    assert isinstance(exited, ev.Exited)
    assert (exited.exit_code, exited.expected, exited.reason) == (0, True, "checkpoint")
    lost = plan.then(d.Facts(image_path="/i"))[1]
    assert isinstance(lost, ev.Exited) and lost.exit_code == -1


def test_an_exec_records_its_intent_before_its_process_can_exist() -> None:
    plan = d.decide(state("running"), COMMANDS["exec"])
    assert plan.before == (ev.ExecRequested("s1", ("true",)),)
    assert plan.then(FACTS) == (ev.ExecExited("s1", 3),)


def test_a_session_is_closed_once_whoever_learns_its_end() -> None:
    requested = ev.ExecRequested("s1", ("sleep", "9"))
    fresh = d.exec_progress(_stream(requested), "s1")
    assert fresh == d.ExecProgress(requested, False, None)
    # A worker died before recording the start: the end records both, with the real code.
    assert d.exec_end_events(fresh, "s1", 77, 4) == (ev.ExecStarted("s1", ("sleep", "9"), 77),
                                                     ev.ExecExited("s1", 4))
    started = d.exec_progress(_stream(requested, ev.ExecStarted("s1", ("sleep", "9"), 77)), "s1")
    assert d.exec_end_events(started, "s1", 77, 4) == (ev.ExecExited("s1", 4),)
    closed = d.exec_progress(_stream(requested, ev.ExecExited("s1", 4)), "s1")
    assert closed.exit_code == 4 and d.exec_end_events(closed, "s1", 77, 0) == ()
    assert d.exec_progress(_stream(requested), "other") == d.ExecProgress()


@pytest.mark.parametrize(("found", "expected"), [
    (ExecSession(True, 5, 0, True), d.SettleExec.RECORD_EXIT),
    (ExecSession(True, 5, 3, False), d.SettleExec.RECORD_EXIT),
    (ExecSession(True, 5, None, True), d.SettleExec.WAIT),
    (ExecSession(True, 0, None, True), d.SettleExec.WAIT),   # runc has not reported yet
    (ExecSession(False, 0, None, False), d.SettleExec.NEVER_STARTED),
    (ExecSession(True, 5, None, False), d.SettleExec.LOST),
])
def test_reconciliation_settles_a_session_from_its_files(found: ExecSession,
                                                         expected: d.SettleExec) -> None:
    assert d.settle_exec(found) is expected


# --------------------------------------------------------------------------- exits

STARTED, STOP, KILL = ev.Started(), ev.StopRequested(5), ev.Signalled(15)


@pytest.mark.parametrize(("stream", "code", "reason", "expected"), [
    ((STARTED,), 0, "exit", False),
    ((STARTED,), 2, "crash", False),
    ((STARTED,), -1, "unknown", False),
    ((STARTED, STOP), 137, "stop", True),
    ((STARTED, KILL), 137, "stop", True),
    ((STARTED, ev.Checkpointed("/i", False, False)), 0, "checkpoint", True),
    ((STARTED, ev.Checkpointed("/i", True, False)), 0, "exit", False),
    ((STARTED, STOP, ev.PidReceived(1, 2), STARTED), 1, "crash", False),  # restarted since
    ((STOP, ev.Restored(3, 4)), 0, "exit", False),
])
def test_exit_reason(stream: tuple[ev.Event, ...], code: int, reason: str,
                     expected: bool) -> None:
    assert d.exit_reason(stream, code) == (reason, expected)


def test_an_exit_is_recorded_only_while_the_log_has_the_container_alive() -> None:
    status = ExitStatus(3, datetime.now(UTC))
    for name in ALIVE:
        event = d.exit_event(state(name), (STARTED,), status)
        assert event is not None and (event.exit_code, event.reason) == (3, "crash")
    for name in ("exited", "removed"):
        assert d.exit_event(state(name), (STARTED,), status) is None
    lost = d.exit_event(state("running"), (STARTED,), status, reason="conmon_lost")
    assert lost is not None and lost.reason == "conmon_lost"


def test_auto_remove_only_for_ended_rm_containers() -> None:
    rm = RunSpec(rootfs="/r", args=("true",), auto_remove=True)
    assert d.auto_remove_due(state("exited", spec=rm))
    assert not d.auto_remove_due(state("running", spec=rm))
    assert not d.auto_remove_due(state("exited"))


@pytest.mark.parametrize(("name", "conmon", "exit_file", "alive", "expected"), [
    ("running", 4241, True, False, d.ConmonGone.RECORD_EXIT),
    ("running", 4241, False, True, d.ConmonGone.KILL_AND_LOSE),
    ("running", 4241, False, False, d.ConmonGone.LOSE),
    ("paused", 4241, False, True, d.ConmonGone.KILL_AND_LOSE),
    ("running", 9999, False, True, d.ConmonGone.NOTHING),  # restarted: another conmon now
    ("exited", 4241, False, False, d.ConmonGone.NOTHING),
    ("running", None, False, False, d.ConmonGone.LOSE),
])
def test_conmon_gone(name: str, conmon: int | None, exit_file: bool, alive: bool,
                     expected: d.ConmonGone) -> None:
    assert d.conmon_gone(state(name), conmon, exit_file, alive) is expected


RUNNING_REPORT = StatusReport(Status.RUNNING, 4242)


@pytest.mark.parametrize(("name", "exit_file", "conmon", "status", "expected"), [
    ("running", True, False, None, d.Reconcile.RECORD_EXIT),
    ("running", False, False, None, d.Reconcile.SETTLE_CONMON),
    ("running", False, True, RUNNING_REPORT, d.Reconcile.NOTHING),
    ("running", False, True, StatusReport(Status.STOPPED, 1, 0), d.Reconcile.WAIT_EXIT),
    ("running", False, True, StatusReport(Status.STOPPED, 1, -1), d.Reconcile.LOSE),
    ("running", False, True, None, d.Reconcile.LOSE),
    ("created", False, True, StatusReport(Status.CREATED, 1), d.Reconcile.NOTHING),
    ("exited", False, False, None, d.Reconcile.NOTHING),
])
def test_reconcile(name: str, exit_file: bool, conmon: bool, status: StatusReport | None,
                   expected: d.Reconcile) -> None:
    assert d.reconcile(state(name), has_exit_file=exit_file, conmon_alive=conmon,
                       status=status) is expected


def test_reconcile_removes_a_due_rm_container_and_asks_runc_only_when_needed() -> None:
    rm = RunSpec(rootfs="/r", args=("true",), auto_remove=True)
    assert d.reconcile(state("exited", spec=rm), has_exit_file=False, conmon_alive=False,
                       status=None) is d.Reconcile.AUTO_REMOVE
    assert d.needs_runtime_status(state("running"), has_exit_file=False, conmon_alive=True)
    assert not d.needs_runtime_status(state("running"), has_exit_file=True, conmon_alive=True)
    assert not d.needs_runtime_status(state("running"), has_exit_file=False,
                                      conmon_alive=False)
    assert not d.needs_runtime_status(state("exited"), has_exit_file=False, conmon_alive=True)


# --------------------------------------------------------------------------- decide + fold


EXPECTED_AFTER: dict[str, str] = {
    "start": "running", "stop": "exited", "kill": "", "pause": "paused",
    "unpause": "running", "exec": "running", "checkpoint": "exited",
    "checkpoint-leave": "running", "restore": "running", "rm": "removed", "rm-f": "removed",
    "update-memory": "", "update-restart": "",  # an update changes the spec, not the state
}


class DecideAndFold(RuleBasedStateMachine):
    """Random commands through ``decide``; the planned events folded with ``apply``.

    The fold of what a plan records must always be a state ``decide`` accepts (it
    answers every command with a plan or a clean refusal), and it must be the state
    the command promises (a paused container after pause, and so on).
    """

    def __init__(self) -> None:
        super().__init__()
        self.version = 0
        self.current: ContainerState | None = None
        self._fresh()

    def _fresh(self) -> None:
        self.version, self.current = 0, None
        for e in d.decide(None, c.Create(SPEC, "web")).then(FACTS):
            self._record(e)

    def _record(self, event: ev.Event) -> None:
        self.version += 1
        self.current = apply(self.current, recorded(CID, self.version, event))

    @precondition(lambda self: self.current is not None and not self.current.removed)
    @rule(kind=st.sampled_from(sorted(COMMANDS)), code=st.integers(0, 255))
    def command(self, kind: str, code: int) -> None:
        assert self.current is not None
        before = self.current.state
        try:
            plan = d.decide(self.current, COMMANDS[kind])
        except InvalidState:
            assert self.current.state == before  # a refusal changes nothing
            return
        if plan.noop:
            return
        for e in plan.before:
            self._record(e)
        facts = d.Facts(container_id=CID, node="local", bundle="/b", created=Created(7, 6),
                        image_path="/b/checkpoint", exit=ExitStatus(code, datetime.now(UTC)),
                        exec_exit_code=code)
        if S.RECORD_EXIT in plan.steps:
            exited = d.exit_event(self.current, (e for e in plan.before),
                                  ExitStatus(code, datetime.now(UTC)))
            assert exited is not None
            self._record(exited)
        for e in plan.then(facts):
            self._record(e)
        # a kill's effect is the exit that follows (or not): the state stays until then
        assert self.current.state == (EXPECTED_AFTER[kind] or before), (kind, before)

    @precondition(lambda self: self.current is not None and self.current.removed)
    @rule()
    def create_another(self) -> None:
        self._fresh()  # the next container: the same rules again

    @precondition(lambda self: self.current is not None and self.current.state in ALIVE)
    @rule(code=st.integers(0, 255))
    def process_ends(self, code: int) -> None:
        assert self.current is not None
        exited = d.exit_event(self.current, (ev.Started(),), ExitStatus(code, datetime.now(UTC)))
        assert exited is not None
        self._record(exited)
        assert self.current.state == "exited" and self.current.exit_code == code

    @invariant()
    def decide_accepts_the_folded_state(self) -> None:
        assert self.current is not None
        assert self.current.state in STATES
        assert self.current.version == self.version
        for command in COMMANDS.values():
            try:
                d.decide(self.current, command)
            except (InvalidState, NotFound):
                pass
        if self.current.state == "exited":
            assert self.current.pid is None and self.current.exit_code is not None


TestDecideAndFold = DecideAndFold.TestCase
TestDecideAndFold.settings = settings(max_examples=examples(150), stateful_step_count=30,
                                     deadline=None)


@given(st.sampled_from(["created", "running", "paused", "exited", "removed"]),
       st.sampled_from(sorted(COMMANDS)))
def test_decide_is_total(name: str, kind: str) -> None:
    """Every pair gives a plan or one of the two refusals, nothing else."""
    try:
        d.decide(state(name), COMMANDS[kind])
    except (InvalidState, NotFound):
        pass


# ---------------------------------------------------------------- interrupted checkpoints

INTENT = ev.CheckpointRequested(IMAGE, False, False)


def _stream(*events: ev.Event) -> list[ev.RecordedEvent]:
    return [recorded(CID, i + 1, e) for i, e in enumerate(events)]


def test_a_checkpoint_without_an_end_is_pending_until_image_or_failure_is_recorded() -> None:
    assert d.pending_checkpoint(_stream(ev.Started())) is None
    pending = d.pending_checkpoint(_stream(ev.Started(), INTENT))
    assert pending is not None and pending.event == INTENT
    assert d.pending_checkpoint(_stream(INTENT, ev.Checkpointed(IMAGE, False, False))) is None
    assert d.pending_checkpoint(_stream(INTENT, ev.CommandFailed("container.checkpoint",
                                                                 "runtime", "x"))) is None
    # A later request after a settled one is pending again.
    later = ev.CheckpointRequested("/b/checkpoints/c2", True, False)
    found = d.pending_checkpoint(_stream(INTENT, ev.Checkpointed(IMAGE, False, False), later))
    assert found is not None and found.event == later


@pytest.mark.parametrize(("dump", "alive", "leave", "expected"), [
    # CRIU finished, the image is complete, the container is gone: checkpointed.
    (DumpReport(True, 0, True), False, False, d.SettleCheckpoint.CHECKPOINTED),
    # The dump's exit status died with nobody to write it, but the image is complete.
    (DumpReport(True, None, True), False, False, d.SettleCheckpoint.CHECKPOINTED),
    # Left running on purpose: the image alone decides.
    (DumpReport(True, 0, True), True, True, d.SettleCheckpoint.CHECKPOINTED),
    # The container still runs: CRIU gave up (or never began); never lose the process.
    (DumpReport(True, 0, True), True, False, d.SettleCheckpoint.FAILED),
    (DumpReport(True, None, False), True, False, d.SettleCheckpoint.FAILED),
    # runc reported failure, or no inventory: no image, whatever became of the process.
    (DumpReport(True, 1, True), False, False, d.SettleCheckpoint.FAILED),
    (DumpReport(True, 0, False), False, False, d.SettleCheckpoint.FAILED),
    # Still dumping after the bound: not judged complete.
    (DumpReport(False, None, True), False, False, d.SettleCheckpoint.FAILED),
])
def test_an_interrupted_checkpoint_is_settled_from_disk(dump: DumpReport, alive: bool,
                                                          leave: bool,
                                                          expected: d.SettleCheckpoint) -> None:
    intent = ev.CheckpointRequested(IMAGE, leave, False)
    assert d.settle_checkpoint(intent, dump, alive) is expected
