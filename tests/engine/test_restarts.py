"""The restart rules (engine.restarts.rules) on hand-made streams: no process, no store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from engine.errors import InvalidArgument
from engine.restarts import rules as r

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Stream:
    """Builds a stream of StreamItems with increasing positions and times."""

    def __init__(self) -> None:
        self.items: list[r.StreamItem] = []
        self.clock = T0

    def _add(self, kind: str, after: float, **kw: object) -> r.StreamItem:
        self.clock += timedelta(seconds=after)
        item = r.StreamItem(len(self.items) + 1, self.clock, kind, **kw)  # type: ignore[arg-type]
        self.items.append(item)
        return item

    def start(self, after: float = 0.01) -> Stream:
        self._add("started", after)
        return self

    def exit(self, code: int = 1, reason: str = "crash", ran: float = 0.5) -> Stream:
        self._add("exited", ran, exit_code=code, reason=reason)
        return self

    def restart(self, attempt: int, delay: float = 0.1, started: bool = True) -> Stream:
        last = [i for i in self.items if i.kind == "exited"][-1]
        self._add("restarting", 0.01, exit_position=last.position, attempt=attempt,
                  delay_s=delay)
        if started:
            self.start(delay)
        return self

    def judge(self, policy: str, exited: bool = True) -> r.RestartDecision:
        return r.decide_restart(r.parse_policy(policy), r.history(self.items), exited=exited)


@pytest.mark.parametrize(("text", "policy"), [
    ("no", r.RestartPolicy("no")), ("always", r.RestartPolicy("always")),
    ("unless-stopped", r.RestartPolicy("unless-stopped")),
    ("on-failure", r.RestartPolicy("on-failure", 0)),
    ("on-failure:3", r.RestartPolicy("on-failure", 3)),
])
def test_policies_parse_and_print_back(text: str, policy: r.RestartPolicy) -> None:
    assert r.parse_policy(text) == policy
    assert str(policy) == text


@pytest.mark.parametrize("text", ["", "sometimes", "always:3", "on-failure:", "on-failure:0",
                                  "on-failure:-1", "on-failure:x", "no:1", 3])
def test_bad_policies_are_refused_in_one_sentence(text: object) -> None:
    with pytest.raises(InvalidArgument, match="restart policy"):
        r.parse_policy(text)  # type: ignore[arg-type]


def test_rm_and_a_policy_conflict() -> None:
    r.check_restart_options("no", True)
    r.check_restart_options("always", False)
    with pytest.raises(InvalidArgument, match="conflicts with --rm"):
        r.check_restart_options("on-failure", True)


def test_backoff_doubles_from_100ms_to_a_minute() -> None:
    assert [r.backoff(i) for i in range(5)] == [0.1, 0.2, 0.4, 0.8, 1.6]
    assert r.backoff(9) == 51.2
    assert r.backoff(10) == r.backoff(1000) == 60.0


def test_no_never_restarts() -> None:
    assert Stream().start().exit().judge("no").verdict is r.Verdict.NO


@pytest.mark.parametrize("policy", ["always", "unless-stopped", "on-failure"])
def test_a_crash_is_restarted_first_after_100ms(policy: str) -> None:
    s = Stream().start().exit(code=2)
    d = s.judge(policy)
    assert (d.verdict, d.attempt, d.delay_s, d.exit_position) == (
        r.Verdict.RECORD, 1, 0.1, s.items[-1].position)


def test_on_failure_leaves_exit_0_and_always_does_not() -> None:
    s = Stream().start().exit(code=0, reason="exit")
    assert s.judge("on-failure").verdict is r.Verdict.NO
    assert s.judge("always").verdict is r.Verdict.RECORD


@pytest.mark.parametrize("reason", ["stop", "checkpoint"])
@pytest.mark.parametrize("policy", ["always", "unless-stopped", "on-failure"])
def test_an_exit_asked_for_is_never_undone(reason: str, policy: str) -> None:
    assert Stream().start().exit(code=137, reason=reason).judge(policy).verdict is r.Verdict.NO


@pytest.mark.parametrize("reason", ["crash", "conmon_lost", "unknown"])
def test_other_exits_are_restarted(reason: str) -> None:
    assert Stream().start().exit(code=-1, reason=reason).judge("always").verdict \
        is r.Verdict.RECORD


def test_on_failure_max_counts_restarts_since_the_last_start_by_hand() -> None:
    s = Stream().start().exit().restart(1).exit().restart(2, 0.2).exit()
    assert s.judge("on-failure:2").verdict is r.Verdict.NO
    d = s.judge("on-failure:3")
    assert (d.verdict, d.attempt, d.delay_s) == (r.Verdict.RECORD, 3, 0.4)
    s.start().exit()  # started by hand: counting starts over
    d = s.judge("on-failure:2")
    assert (d.verdict, d.attempt, d.delay_s) == (r.Verdict.RECORD, 1, 0.1)


def test_a_long_run_resets_the_backoff_not_the_count() -> None:
    s = Stream().start().exit().restart(1).exit().restart(2, 0.2).exit(ran=r.RESET_AFTER_S)
    d = s.judge("on-failure:5")
    assert (d.attempt, d.delay_s) == (3, 0.1)
    s = Stream().start().exit().restart(1).exit().restart(2, 0.2) \
        .exit(ran=r.RESET_AFTER_S - 0.01)
    assert s.judge("on-failure:5").delay_s == 0.4


def test_an_exit_answered_is_not_answered_again() -> None:
    s = Stream().start().exit().restart(1)
    s.exit()
    h = r.history(s.items)
    assert not h.answered and h.pending is None
    s.restart(2, started=False)
    h = r.history(s.items)
    assert h.answered and h.pending is not None


def test_a_restart_recorded_and_not_carried_out_is_due() -> None:
    s = Stream().start().exit().restart(1, delay=0.1, started=False)
    pending = s.items[-1]
    d = s.judge("always")
    assert (d.verdict, d.attempt, d.delay_s, d.exit_position) == (
        r.Verdict.CARRY_OUT, 1, 0.1, pending.exit_position)
    h = r.history(s.items)
    assert h.pending == r.PendingRestart(pending.position, pending.exit_position, 1, 0.1,
                                         pending.recorded_at)
    # ...unless the policy is "no" now (berth update --restart no ends a crash loop)
    assert s.judge("on-failure:1").verdict is r.Verdict.CARRY_OUT
    assert s.judge("no").verdict is r.Verdict.NO


def test_nothing_to_do_for_a_container_not_exited_or_never_exited() -> None:
    s = Stream().start()
    assert s.judge("always").verdict is r.Verdict.NO
    s.exit()
    assert s.judge("always", exited=False).verdict is r.Verdict.NO
    assert r.history([]).last_exit is None


def test_an_exit_before_any_start_has_no_run_time() -> None:
    s = Stream().exit(code=-1, reason="conmon_lost")
    h = r.history(s.items)
    assert h.last_exit is not None and h.last_exit.ran_s is None
    assert s.judge("always").verdict is r.Verdict.RECORD


def test_a_restarting_for_an_older_exit_does_not_answer_the_last() -> None:
    s = Stream().start().exit()
    s.items.append(r.StreamItem(99, s.clock, "restarting", exit_position=1, attempt=1))
    assert not r.history(s.items).answered
    s.items.append(r.StreamItem(100, s.clock, "other"))
    assert r.history(s.items).pending is not None


def test_a_restart_the_runtime_refused_is_not_tried_again() -> None:
    s = Stream().start().exit().restart(1, started=False)
    s._add("restart_failed", 0.2)
    h = r.history(s.items)
    assert h.pending is None and h.answered
    assert s.judge("always").verdict is r.Verdict.NO
    # a failure with nothing pending changes nothing
    s = Stream().start().exit()
    s._add("restart_failed", 0.1)
    assert s.judge("always").verdict is r.Verdict.RECORD


def test_a_stop_of_an_exited_container_calls_a_pending_restart_off() -> None:
    s = Stream().start().exit().restart(1, started=False)
    s._add("stopped", 0.05)
    h = r.history(s.items)
    assert h.pending is None and h.answered
    assert s.judge("always").verdict is r.Verdict.NO
    # ...and one with nothing pending leaves the last exit unanswered by the policy
    s = Stream().start().exit()
    s._add("stopped", 0.05)
    assert s.judge("always").verdict is r.Verdict.NO
    # a stop of a running container is judged by its exit (reason "stop"), not here
    s = Stream().start()
    s._add("stopped", 0.05)
    assert not r.history(s.items).answered and r.history(s.items).running
