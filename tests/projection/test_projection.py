"""The fold: pure, total, resumable, and right about each transition."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings

from engine import events as ev
from engine.containers import projection as pj
from tests.budget import examples
from tests.projection.histories import STEPS, history

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def recorded(steps_events: list[tuple[str, ev.Event]]) -> list[ev.RecordedEvent]:
    """Give events positions, versions and times, as the store would."""
    versions: dict[str, int] = {}
    out = []
    for position, (stream, event) in enumerate(steps_events, start=1):
        versions[stream] = versions.get(stream, 0) + 1
        meta = ev.Metadata(stream, versions[stream], position, event.type,
                           T0 + timedelta(seconds=position), f"cmd{position}", "corr",
                           "tester", "node0")
        out.append(ev.RecordedEvent(meta, event))
    return out


SPEC = ev.RunSpec(rootfs="/r", args=("sleep", "100"))


def test_lifecycle_transitions() -> None:
    log = recorded([
        ("a", ev.ContainerCreated("web", "n1", "/b/a", SPEC)),
        ("a", ev.PidReceived(42, 41)),
        ("a", ev.Started()),
        ("a", ev.Paused()),
        ("a", ev.Unpaused()),
        ("a", ev.ExecStarted("s1", ("ls",), 50)),
        ("a", ev.Exited(137, None, True, "stop")),
        ("a", ev.PidReceived(43, 40)),
        ("a", ev.Started()),
        ("a", ev.Exited(0, T0, False, "exit")),
        ("a", ev.Removed()),
    ])
    states = [pj.fold_stream(log[:k]) for k in range(1, len(log) + 1)]
    assert [s.state for s in states if s] == [
        "created", "created", "running", "paused", "running", "running", "exited",
        "created", "running", "exited", "removed"]
    running = states[2]
    assert running is not None and running.pid == 42
    assert running.started_at == log[2].metadata.recorded_at
    stopped = states[6]
    assert stopped is not None
    assert (stopped.exit_code, stopped.exit_reason, stopped.pid) == (137, "stop", None)
    assert stopped.finished_at == log[6].metadata.recorded_at  # no exit-file time: recorded
    assert stopped.exec_sessions == ()
    restarted = states[8]
    assert restarted is not None and restarted.restart_count == 1 and restarted.exit_code is None
    final = states[-1]
    assert final is not None and final.removed and final.version == 11 and final.last_position == 11
    assert states[9] is not None and states[9].finished_at == T0


def test_starting_an_exited_container_creates_it_again() -> None:
    """Between the new runc create and the start the container is "created" with its
    new pid, as podman's init() leaves it; not "exited" with a live pid and an old
    exit code, which time travel to that position would otherwise show."""
    log = recorded([
        ("a", ev.ContainerCreated("web", "n1", "/b/a", SPEC)),
        ("a", ev.PidReceived(42, 41)), ("a", ev.Started()),
        ("a", ev.Exited(3, T0, False, "crash")),
        ("a", ev.PidReceived(43, 40)),
        ("a", ev.Started()),
    ])
    between = pj.fold_stream(log[:5])
    assert between is not None
    assert (between.state, between.pid, between.conmon_pid) == ("created", 43, 40)
    assert (between.exit_code, between.exit_reason) == (None, None)
    assert between.restart_count == 0
    again = pj.fold_stream(log)
    assert again is not None
    assert (again.state, again.pid, again.restart_count) == ("running", 43, 1)


def test_failure_on_unknown_stream_creates_nothing() -> None:
    log = recorded([("ghost", ev.CommandFailed("container.start", "not_found", "no"))])
    assert pj.fold(log) == {}


def test_a_refusal_changes_no_container() -> None:
    """Refusals live in their own stream: the container they name keeps its version."""
    log = recorded([
        ("a", ev.ContainerCreated("web", "n1", "/b/a", SPEC)),
        (ev.REFUSALS_STREAM, ev.CommandRefused("container.exec", "a", "invalid_state", "no")),
    ])
    states = pj.fold(log)
    assert set(states) == {"a"} and states["a"].version == 1
    assert states["a"].last_position == 1


def test_checkpoint_then_restore() -> None:
    log = recorded([
        ("a", ev.ContainerCreated("web", "n1", "/b/a", SPEC)),
        ("a", ev.PidReceived(42, 41)), ("a", ev.Started()),
        ("a", ev.Checkpointed("/ck/1", False, False)),
        ("a", ev.Exited(0, None, True, "checkpoint")),
        ("a", ev.Restored(77)),
    ])
    s = pj.fold_stream(log)
    assert s is not None
    assert (s.state, s.pid, s.conmon_pid, s.checkpoint_path) == ("running", 77, None, "/ck/1")


def _log_of(steps: list[tuple[int, int]]) -> list[ev.RecordedEvent]:
    pairs: list[tuple[str, ev.Event]] = []
    for cmd in history(steps):
        if cmd.failure:
            pairs.append((cmd.stream, ev.CommandFailed("x", *cmd.failure)))
        pairs.extend((cmd.stream, e) for e in cmd.events)
    return recorded(pairs)


@settings(max_examples=examples(200), deadline=None)
@given(STEPS, STEPS)
def test_fold_is_resumable(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> None:
    """Folding a prefix then the rest equals folding everything: the read model's
    incremental update relies on exactly this."""
    log = _log_of(a + b)
    cut = len(_log_of(a)) if log else 0
    cut = min(cut, len(log))
    whole = pj.fold(log)
    resumed = pj.fold(log[cut:], dict(pj.fold(log[:cut])))
    assert resumed == whole


@settings(max_examples=examples(200), deadline=None)
@given(STEPS)
def test_states_are_consistent(steps: list[tuple[int, int]]) -> None:
    log = _log_of(steps)
    for cid, s in pj.fold(log).items():
        stream = [r for r in log if r.stream == cid]
        assert s.version == len(stream)
        assert s.last_position == stream[-1].position
        assert s.state in pj.STATES
        if s.state in ("exited", "removed"):
            assert s.pid is None and s.exec_sessions == ()
        if s.state in ("running", "paused"):
            assert s.pid is not None
        if s.state == "exited":
            assert s.exit_code is not None and s.finished_at is not None
        starts = sum(1 for r in stream if r.type == ev.CONTAINER_STARTED)
        assert s.restart_count == max(0, starts - 1)
    names = [s.name for s in pj.fold(log).values() if not s.removed]
    assert len(names) == len(set(names))


@settings(max_examples=examples(200), deadline=None)
@given(STEPS, STEPS)
def test_bulk_fold_equals_repeated_apply(a: list[tuple[int, int]],
                                         b: list[tuple[int, int]]) -> None:
    """fold() takes a faster road (mutable drafts); it must land where apply() does,
    also when it starts from states folded earlier."""
    log = _log_of(a + b)
    by_apply: dict[str, pj.ContainerState] = {}
    for item in log:
        new = pj.apply(by_apply.get(item.stream), item)
        if new is not None:
            by_apply[item.stream] = new
    assert pj.fold(log) == by_apply
    half = len(log) // 2
    start = pj.fold(log[:half])
    assert pj.fold(log[half:], start) == by_apply
    assert pj.fold(log[:half]) == start  # the given states were not modified
