"""A hypothesis state machine that appends plausible container events and holds every
projected field to the oracle's table (tests/projection/oracle.py).

The events are those a worker appends, command by command, in the states it appends
them in (a start of an exited container is ``pid_received`` + ``started`` in one
append, a checkpoint that stops the container is ``checkpointed`` + ``exited``, ...).
Where they go is pluggable: ``MemoryLog`` numbers them as the store would, and the
store's tests run the same machine against a real database and its read model.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from engine import events as ev
from engine.containers import projection as pj
from tests.projection import oracle
from tests.projection.oracle import CREATED, EXITED, LIVE, PAUSED, RUNNING, Expected

T0 = datetime(2024, 1, 1, tzinfo=UTC)

PIDS = st.integers(1, 4_194_304)
EXIT_CODES = st.integers(-1, 255)
FINISHED = st.none() | st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                                    timezones=st.just(UTC))


class MemoryLog:
    """Positions, stream versions and times given as the store gives them."""

    def __init__(self) -> None:
        self.position = 0
        self.versions: dict[str, int] = {}

    def append(self, stream: str, events: Sequence[ev.Event]) -> list[ev.RecordedEvent]:
        out = []
        for event in events:
            self.position += 1
            version = self.versions[stream] = self.versions.get(stream, 0) + 1
            meta = ev.Metadata(stream, version, self.position, event.type,
                               T0 + timedelta(milliseconds=7 * self.position),
                               f"cmd{self.position}", "corr", "tester", "node0")
            out.append(ev.RecordedEvent(meta, event))
        return out

    def fail(self, stream: str, code: str, message: str) -> list[ev.RecordedEvent]:
        return self.append(stream, [ev.CommandFailed("container.any", code, message)])


def differences(actual: pj.ContainerState | None, expected: Expected | None) -> list[str]:
    """Every field where the projection and the oracle disagree, in words."""
    if actual is None or expected is None:
        same = actual is None and expected is None
        return [] if same else [f"projected {actual!r}, oracle {expected!r}"]
    return [f"{name}: projected {getattr(actual, name)!r}, oracle {expected.fields[name]!r}"
            for name in oracle.FIELDS if getattr(actual, name) != expected.fields[name]]


def check(actual: pj.ContainerState | None, expected: Expected | None, where: str) -> None:
    wrong = differences(actual, expected)
    assert not wrong, f"{where}:\n  " + "\n  ".join(wrong)


class LifecycleMachine(RuleBasedStateMachine):
    """Drives containers through their lifecycle; after every event the incremental
    ``apply`` must equal the oracle, after every command the bulk ``fold`` (from
    scratch and resumed from the previous states) too, and any past prefix of the log
    must fold to the oracle's state at that point."""

    def __init__(self) -> None:
        super().__init__()
        self.prefix = uuid.uuid4().hex[:8]  # for ids and names
        self.log = self.make_log()
        self.expected: dict[str, Expected] = {}      # by container id
        self.applied: dict[str, pj.ContainerState] = {}
        self.folded: dict[str, pj.ContainerState] = {}
        self.recorded: list[ev.RecordedEvent] = []
        # after each recorded event: the oracle's states of every container so far
        self.history: list[dict[str, Expected]] = []
        self.ghosts: list[str] = []
        self.count = 0

    # -- the log behind the machine (overridden for the real store) -----------------

    def make_log(self) -> MemoryLog:
        return MemoryLog()

    def append(self, cid: str, events: Sequence[ev.Event]) -> None:
        assert isinstance(self.log, MemoryLog)
        self.take(self.log.append(cid, events))

    def refuse_in(self, stream: str, code: str) -> None:
        assert isinstance(self.log, MemoryLog)
        self.take(self.log.fail(stream, code, "refused"))

    def check_past(self, index: int) -> None:
        """The log up to ``recorded[index]`` folds to the oracle's state then."""
        past = pj.fold(self.recorded[:index + 1])
        then = self.history[index]
        assert set(past) == set(then)
        for cid, state in past.items():
            check(state, then[cid], f"fold of the first {index + 1} events, {cid}")

    # -- bookkeeping --------------------------------------------------------------------

    def take(self, recorded: list[ev.RecordedEvent]) -> None:
        for item in recorded:
            before = self.expected.get(item.stream)
            after = oracle.step(before, item)
            applied = pj.apply(self.applied.get(item.stream), item)
            check(applied, after, f"apply of {item.type} at position {item.position}")
            if after is not None and applied is not None:
                self.expected[item.stream] = after
                self.applied[item.stream] = applied
            self.recorded.append(item)
            self.history.append({k: v.copy() for k, v in self.expected.items()})
        self.folded = pj.fold(recorded, self.folded)

    def new_id(self) -> str:
        # Unique across examples (the store's tests share one database), yet drawn
        # choices depend only on the order containers were made in: hypothesis
        # replays a failing example exactly.
        self.count += 1
        return f"{self.prefix}{self.count:056x}"

    def new_name(self) -> str:
        self.count += 1
        return f"{self.prefix}-{self.count}"

    def pick(self, data: st.DataObject, *states: str) -> str:
        return data.draw(st.sampled_from(self.in_state(*states)))

    def in_state(self, *states: str) -> list[str]:
        return [c for c, e in self.expected.items() if e.fields["state"] in states]

    def has(self, *states: str) -> bool:
        return bool(self.in_state(*states))

    # -- rules: one per command a worker carries out ---------------------------------------

    @precondition(lambda self: len(self.in_state(*LIVE)) < 4)
    @rule(seed=st.integers(0, 99), pid=PIDS, conmon=PIDS, auto_remove=st.booleans())
    def create(self, seed: int, pid: int, conmon: int, auto_remove: bool) -> None:
        cid = self.new_id()
        spec = ev.RunSpec(rootfs=f"/var/lib/berth/rootfs/{seed % 3}",
                          args=("sh", "-c", f"echo {seed}"), env=(f"SEED={seed}",),
                          memory=seed * 1024 * 1024 or None, auto_remove=auto_remove)
        self.append(cid, [ev.ContainerCreated(self.new_name(), f"node{seed % 2}",
                                              f"/run/berth/{cid}", spec),
                          ev.PidReceived(pid, conmon)])

    @precondition(lambda self: self.has(CREATED, EXITED))
    @rule(data=st.data(), pid=PIDS, conmon=PIDS)
    def start(self, data: st.DataObject, pid: int, conmon: int) -> None:
        cid = self.pick(data, CREATED, EXITED)
        again = [ev.PidReceived(pid, conmon)] if cid in self.in_state(EXITED) else []
        self.append(cid, [*again, ev.Started()])

    @precondition(lambda self: self.has(RUNNING))
    @rule(data=st.data(), timeout=st.integers(0, 30), code=st.sampled_from([0, 137, 143]),
          finished=FINISHED)
    def stop(self, data: st.DataObject, timeout: int, code: int,
             finished: datetime | None) -> None:
        cid = self.pick(data, RUNNING)
        self.append(cid, [ev.StopRequested(timeout)])
        self.append(cid, [ev.Exited(code, finished, True, "stop")])

    @precondition(lambda self: self.has(RUNNING, PAUSED))
    @rule(data=st.data(), signal=st.integers(1, 31))
    def kill(self, data: st.DataObject, signal: int) -> None:
        self.append(self.pick(data, RUNNING, PAUSED), [ev.Signalled(signal)])

    @precondition(lambda self: self.has(*LIVE))
    @rule(data=st.data(), code=EXIT_CODES, finished=FINISHED,
          reason=st.sampled_from(sorted(ev.EXIT_REASONS - {"checkpoint"})))
    def exit(self, data: st.DataObject, code: int, finished: datetime | None,
             reason: str) -> None:
        """The process ended by itself, was killed, or its conmon was lost."""
        cid = self.pick(data, *LIVE)
        self.append(cid, [ev.Exited(code, finished, reason == "stop", reason)])

    @precondition(lambda self: self.has(RUNNING))
    @rule(data=st.data())
    def pause(self, data: st.DataObject) -> None:
        self.append(self.pick(data, RUNNING), [ev.Paused()])

    @precondition(lambda self: self.has(PAUSED))
    @rule(data=st.data())
    def unpause(self, data: st.DataObject) -> None:
        self.append(self.pick(data, PAUSED), [ev.Unpaused()])

    @precondition(lambda self: self.has(*LIVE, EXITED))
    @rule(data=st.data())
    def rename(self, data: st.DataObject) -> None:
        self.append(self.pick(data, *LIVE, EXITED), [ev.Renamed(self.new_name())])

    @precondition(lambda self: self.has(RUNNING))
    @rule(data=st.data(), pid=PIDS)
    def exec_start(self, data: st.DataObject, pid: int) -> None:
        self.count += 1
        self.append(self.pick(data, RUNNING),
                    [ev.ExecStarted(f"s{self.count}", ("ls", "-l"), pid)])

    @precondition(lambda self: any(e.fields["exec_sessions"] for e in self.expected.values()))
    @rule(data=st.data(), code=EXIT_CODES)
    def exec_exit(self, data: st.DataObject, code: int) -> None:
        cid = data.draw(st.sampled_from(
            [c for c, e in self.expected.items() if e.fields["exec_sessions"]]))
        session = data.draw(st.sampled_from(self.expected[cid].fields["exec_sessions"]))
        self.append(cid, [ev.ExecExited(session, code)])

    @precondition(lambda self: self.has(*LIVE, EXITED))
    @rule(data=st.data())
    def exec_interrupted(self, data: st.DataObject) -> None:
        """A resent exec whose session started before the worker died: closed with -1,
        possibly naming a session the container no longer has."""
        cid = self.pick(data, *LIVE, EXITED)
        sessions = self.expected[cid].fields["exec_sessions"]
        session = data.draw(st.sampled_from([*sessions, "", "gone"]))
        self.append(cid, [ev.ExecExited(session, -1)])

    @precondition(lambda self: self.has(RUNNING))
    @rule(data=st.data(), leave=st.booleans(), tcp=st.booleans(), code=EXIT_CODES,
          finished=FINISHED)
    def checkpoint(self, data: st.DataObject, leave: bool, tcp: bool, code: int,
                   finished: datetime | None) -> None:
        cid = self.pick(data, RUNNING)
        self.count += 1
        events: list[ev.Event] = [ev.Checkpointed(f"/ckpt/{cid[:8]}/{self.count}", leave, tcp)]
        if not leave:
            events.append(ev.Exited(code, finished, True, "checkpoint"))
        self.append(cid, events)

    def restorable(self) -> list[str]:
        return [c for c in self.in_state(EXITED) if self.expected[c].fields["checkpoint_path"]]

    @precondition(lambda self: bool(self.restorable()))
    @rule(data=st.data(), pid=PIDS, conmon=st.none() | PIDS)
    def restore(self, data: st.DataObject, pid: int, conmon: int | None) -> None:
        cid = data.draw(st.sampled_from(self.restorable()))
        self.append(cid, [ev.Restored(pid, conmon)])

    @precondition(lambda self: self.has(EXITED))
    @rule(data=st.data(), pid=PIDS, conmon=PIDS, code=EXIT_CODES)
    def restart(self, data: st.DataObject, pid: int, conmon: int, code: int) -> None:
        """A restart policy answers an exit: its intent, then a start again."""
        cid = self.pick(data, EXITED)
        self.append(cid, [ev.Restarting(1, 0.1, self.expected[cid].fields["last_position"],
                                        code, "always")])
        self.append(cid, [ev.PidReceived(pid, conmon), ev.Started()])

    @precondition(lambda self: self.has(EXITED))
    @rule(data=st.data(), timeout=st.integers(0, 30))
    def stop_exited(self, data: st.DataObject, timeout: int) -> None:
        """A stop of an exited container with a restart policy: recorded, nothing runs."""
        self.append(self.pick(data, EXITED), [ev.StopRequested(timeout)])

    @precondition(lambda self: self.has(*LIVE, EXITED))
    @rule(data=st.data(), memory=st.integers(4, 64), pids=st.none() | st.integers(1, 99))
    def update(self, data: st.DataObject, memory: int, pids: int | None) -> None:
        cid = self.pick(data, *LIVE, EXITED)
        old = self.expected[cid].fields["spec"]
        new: dict[str, object] = {"memory": memory * 1024 * 1024}
        if pids is not None:
            new["pids_limit"] = pids
        self.append(cid, [ev.Updated({k: getattr(old, k) for k in new}, new)])

    @precondition(lambda self: self.has(RUNNING))
    @rule(data=st.data(), status=st.sampled_from(sorted(ev.HEALTH_STATES)), code=EXIT_CODES)
    def health(self, data: st.DataObject, status: str, code: int) -> None:
        self.append(self.pick(data, RUNNING), [ev.HealthStatus(status, code, "out")])

    @precondition(lambda self: self.has(*LIVE, EXITED))
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        """Usually of a created or exited container; of a running one when a forced
        remove found no exit status."""
        self.append(self.pick(data, *LIVE, EXITED), [ev.Removed()])

    @rule(data=st.data(), code=st.sampled_from(["invalid_state", "not_found", "conflict"]))
    def refuse(self, data: st.DataObject, code: str) -> None:
        """A refused command is recorded in its stream, even one with no container."""
        if not self.ghosts:
            self.ghosts.append(self.new_id())
        self.refuse_in(data.draw(st.sampled_from([*self.ghosts, *self.expected])), code)

    @precondition(lambda self: bool(self.recorded))
    @rule(data=st.data())
    def look_back(self, data: st.DataObject) -> None:
        self.check_past(data.draw(st.integers(0, len(self.recorded) - 1)))

    # -- after every command -------------------------------------------------------------

    @invariant()
    def fold_agrees(self) -> None:
        whole = pj.fold(self.recorded)
        assert set(whole) == set(self.expected)  # refusals in ghost streams make nothing
        for cid, expected in self.expected.items():
            check(whole[cid], expected, f"fold of the whole log, {cid}")
            check(self.folded[cid], expected, f"fold resumed command by command, {cid}")
        assert set(self.folded) == set(self.expected)
