"""Restart policies: whether an exited container is started again, when, and why not.

Pure rules, no I/O. The answer is judged from the container's own stream (its exits,
the restarts already recorded, the last explicit stop), never from a counter kept in
a worker's memory, so a worker killed -9 and started again counts on exactly where
the log left off and never restarts a container twice for one exit:

* each ``container.restarting`` names the exit it answers by that exit's position,
  and is appended under a command id derived from it, so a second decision about the
  same exit writes nothing;
* a ``restarting`` with no ``started`` after it is a restart still due: whoever finds
  it (the worker's scheduler, or reconciliation after a crash) carries it out when its
  delay is over; one the runtime refused (its rootfs gone, say) is closed by a
  ``command.failed`` and not tried again, so a broken container does not loop.

The semantics are Docker's and podman's:

* ``no`` (default): never; ``on-failure[:MAX]``: after a non-zero exit, at most MAX
  times since the container was last started by hand (no MAX: no limit);
  ``always`` and ``unless-stopped``: after any exit.
* An explicit ``berth stop`` or ``berth kill`` (exit reason ``stop``) is never undone,
  and neither is an exit a checkpoint caused; a ``berth stop`` of a container waiting
  out its backoff (recorded as ``stop_requested``) calls the pending restart off.
  Docker's ``always`` differs from ``unless-stopped`` only in that a *daemon*
  restart revives a manually stopped container; berth's engine going down never
  stops a container and an explicit stop is never undone, so the two behave alike
  here: both restart, after ``berth up``, a container that exited while the engine
  was down, and neither revives one stopped by hand.
* Backoff as Docker's restart manager: the first restart waits ``BACKOFF_FIRST_S``
  (100 ms), each further one twice as long, at most ``BACKOFF_MAX_S`` (1 min); a run of
  at least ``RESET_AFTER_S`` (10 s) resets the delay to the first one.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from engine.errors import InvalidArgument

NO = "no"
ON_FAILURE = "on-failure"
ALWAYS = "always"
UNLESS_STOPPED = "unless-stopped"
POLICIES = (NO, ON_FAILURE, ALWAYS, UNLESS_STOPPED)

BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 60.0
RESET_AFTER_S = 10.0
NOT_UNDONE = frozenset({"stop", "checkpoint"})
"""Exit reasons that were asked for: a policy never undoes them."""


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    name: str = NO
    max_retries: int = 0
    """For on-failure: at most this many restarts (0: no limit)."""

    def __str__(self) -> str:
        if self.name == ON_FAILURE and self.max_retries:
            return f"{ON_FAILURE}:{self.max_retries}"
        return self.name


def parse_policy(text: str) -> RestartPolicy:
    """``no``, ``on-failure``, ``on-failure:MAX``, ``always`` or ``unless-stopped``."""
    if not isinstance(text, str):
        raise InvalidArgument(f"invalid restart policy {text!r}: must be a string")
    name, sep, count = text.partition(":")
    if name not in POLICIES:
        raise InvalidArgument(f"invalid restart policy {text!r}: use no, on-failure[:MAX], "
                              "always or unless-stopped")
    if not sep:
        return RestartPolicy(name)
    if name != ON_FAILURE:
        raise InvalidArgument(f"invalid restart policy {text!r}: only on-failure takes a "
                              "maximum retry count")
    if not count.isdigit() or not 0 < int(count) <= 1_000_000:
        raise InvalidArgument(f"invalid restart policy {text!r}: the retry count must be "
                              "a positive integer")
    return RestartPolicy(name, int(count))


def check_restart_options(policy: str, auto_remove: bool) -> None:
    """A run spec's policy: valid, and not with ``--rm`` (a container removed at its
    exit cannot be restarted; Docker refuses the pair too)."""
    if parse_policy(policy).name != NO and auto_remove:
        raise InvalidArgument(f"run spec: restart policy {policy!r} conflicts with --rm: "
                              "a container removed when it exits cannot be restarted")


def backoff(streak: int) -> float:
    """The delay of a restart that follows ``streak`` restarts whose runs were short."""
    return float(min(BACKOFF_FIRST_S * 2 ** min(streak, 32), BACKOFF_MAX_S))


@dataclass(frozen=True, slots=True)
class ExitSeen:
    """An exit as the restart rules need it."""

    position: int
    exit_code: int
    reason: str
    ran_s: float | None
    """How long the run it ended lasted (None: it never started)."""


@dataclass(frozen=True, slots=True)
class PendingRestart:
    """A ``restarting`` recorded and not carried out yet."""

    position: int
    exit_position: int
    attempt: int
    delay_s: float
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class RestartHistory:
    """What a container's stream says about its restarts."""

    last_exit: ExitSeen | None = None
    answered: bool = False
    """The last exit has a ``restarting`` (carried out or pending)."""
    attempts: int = 0
    """Restarts since the container was last started by hand."""
    streak: int = 0
    """Restarts in a row that followed short runs: the backoff's exponent."""
    pending: PendingRestart | None = None
    running: bool = False


@dataclass(frozen=True, slots=True)
class StreamItem:
    """One recorded event as these rules read it (kept apart from the event classes so
    the rules depend on nothing but their meaning)."""

    position: int
    recorded_at: datetime
    kind: str
    """"started", "exited", "restarting", "restart_failed", "stopped" (a stop asked for),
    or anything else (ignored)."""
    exit_code: int = 0
    reason: str = ""
    finished_at: datetime | None = None
    exit_position: int = 0
    attempt: int = 0
    delay_s: float = 0.0


def history(stream: Iterable[StreamItem]) -> RestartHistory:
    """Fold a container's stream into what the restart rules need."""
    last_exit: ExitSeen | None = None
    answered, attempts, streak, running = False, 0, 0, False
    pending: PendingRestart | None = None
    started_at: datetime | None = None
    for item in stream:
        if item.kind == "started":
            if pending is None:
                attempts, streak = 0, 0  # started by hand: the count starts over
            pending, running, started_at = None, True, item.recorded_at
        elif item.kind == "exited":
            finished = item.finished_at or item.recorded_at
            ran = (finished - started_at).total_seconds() if started_at is not None else None
            last_exit = ExitSeen(item.position, item.exit_code, item.reason, ran)
            answered, running, started_at = False, False, None
            if ran is not None and ran >= RESET_AFTER_S:
                streak = 0
        elif item.kind == "stopped" and not running:
            # berth stop of an exited container: a pending restart is called off, and
            # the last exit stays unanswered by the policy
            pending, answered = None, True
        elif item.kind == "restart_failed" and pending is not None:
            pending = None  # the runtime refused it: recorded, not tried again
        elif item.kind == "restarting":
            pending = PendingRestart(item.position, item.exit_position, item.attempt,
                                     item.delay_s, item.recorded_at)
            attempts, streak = item.attempt, streak + 1
            answered = last_exit is not None and item.exit_position == last_exit.position
    return RestartHistory(last_exit, answered, attempts, streak, pending, running)


class Verdict(enum.Enum):
    NO = "no"                  # nothing to do
    RECORD = "record"          # record a restarting for the last exit, then restart
    CARRY_OUT = "carry_out"    # a restarting is recorded: restart when its delay is over


@dataclass(frozen=True, slots=True)
class RestartDecision:
    verdict: Verdict
    attempt: int = 0
    delay_s: float = 0.0
    exit_position: int = 0
    why: str = ""


def decide_restart(policy: RestartPolicy, seen: RestartHistory, *, exited: bool
                   ) -> RestartDecision:
    """Whether the container (``exited``: the log has it exited, not removed) is to be
    restarted for its last exit, and how long after that exit's record."""
    if not exited:
        return RestartDecision(Verdict.NO, why="not exited")
    if policy.name == NO:  # also a pending restart: `berth update --restart no` ends a loop
        return RestartDecision(Verdict.NO, why="policy no")
    if seen.pending is not None:
        p = seen.pending
        return RestartDecision(Verdict.CARRY_OUT, p.attempt, p.delay_s, p.exit_position,
                               "recorded, not carried out")
    last = seen.last_exit
    if last is None or seen.answered:
        return RestartDecision(Verdict.NO, why="no exit left to answer")
    if last.reason in NOT_UNDONE:
        return RestartDecision(Verdict.NO, why=f"exit asked for ({last.reason})")
    if policy.name == ON_FAILURE:
        if last.exit_code == 0:
            return RestartDecision(Verdict.NO, why="exited 0")
        if policy.max_retries and seen.attempts >= policy.max_retries:
            return RestartDecision(Verdict.NO, why=f"{seen.attempts} restarts made")
    return RestartDecision(Verdict.RECORD, seen.attempts + 1, backoff(seen.streak),
                           last.position, "policy")
