"""The projection: container state as a pure fold over recorded events.

State is never written directly anywhere in berth; the read model rows are this fold's
output stored for fast queries. Because ``apply`` is total and pure, the same log always
gives the same state, which is what makes rebuild, verification and time travel possible.

``apply`` records facts, it does not judge them: deciding whether a transition is
allowed is ``engine.containers.decide``'s job before anything is appended, so an event that looks
odd (a pause of an exited container, say) still moves the fold, exactly as the log
says it happened.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any, Protocol, cast

from engine import events as ev

CREATED = "created"
RUNNING = "running"
PAUSED = "paused"
EXITED = "exited"
REMOVED = "removed"
STATES = (CREATED, RUNNING, PAUSED, EXITED, REMOVED)
ALIVE = (CREATED, RUNNING, PAUSED)
"""States in which the container's process exists (or is about to): an exit is due."""


@dataclass(frozen=True, slots=True)
class ContainerState:
    """One container as the log says it is, after the event at ``last_position``."""

    id: str
    name: str
    node: str
    bundle: str
    spec: ev.RunSpec
    state: str
    created_at: datetime
    version: int
    last_position: int
    started_at: datetime | None = None
    finished_at: datetime | None = None
    pid: int | None = None
    conmon_pid: int | None = None
    exit_code: int | None = None
    exit_reason: str | None = None
    restart_count: int = 0
    checkpoint_path: str | None = None
    exec_sessions: tuple[str, ...] = ()

    @property
    def paused(self) -> bool:
        return self.state == PAUSED

    @property
    def removed(self) -> bool:
        return self.state == REMOVED

    @property
    def rootfs(self) -> str:
        return self.spec.rootfs

    @property
    def command(self) -> tuple[str, ...]:
        return self.spec.argv

    @property
    def auto_remove(self) -> bool:
        return self.spec.auto_remove


class StateView(Protocol):
    """What transitions read: a ContainerState, or the mutable draft of a bulk fold."""

    @property
    def started_at(self) -> datetime | None: ...
    @property
    def restart_count(self) -> int: ...
    @property
    def conmon_pid(self) -> int | None: ...
    @property
    def exec_sessions(self) -> tuple[str, ...]: ...
    @property
    def spec(self) -> ev.RunSpec: ...


# A transition names the fields it changes; apply() and fold() both use the same
# transitions, and differ only in how they carry state (frozen copy vs. draft).
Changes = dict[str, Any]
Transition = Callable[[StateView, ev.Event, ev.Metadata], Changes]
FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ContainerState))


def _pid(s: StateView, e: ev.Event, m: ev.Metadata) -> Changes:
    # runc create is done. Starting an exited container creates it again first, and
    # like podman's init() that makes it "created" and forgets the old exit: a state
    # read between this event and the start shows no exited container with a live pid.
    assert isinstance(e, ev.PidReceived)
    return {"state": CREATED, "pid": e.pid, "conmon_pid": e.conmon_pid, "exit_code": None,
            "exit_reason": None}


def _started(s: StateView, e: ev.Event, m: ev.Metadata) -> Changes:
    # A second start is a restart: podman counts those, and ps shows the count.
    restarts = s.restart_count + (1 if s.started_at is not None else 0)
    return {"state": RUNNING, "started_at": m.recorded_at, "finished_at": None,
            "exit_code": None, "exit_reason": None, "restart_count": restarts}


def _exited(s: StateView, e: ev.Event, m: ev.Metadata) -> Changes:
    assert isinstance(e, ev.Exited)
    finished = e.finished_at if e.finished_at is not None else m.recorded_at
    return {"state": EXITED, "exit_code": e.exit_code, "exit_reason": e.reason,
            "finished_at": finished, "pid": None, "conmon_pid": None, "exec_sessions": ()}


def _paused(s: StateView, e: ev.Event, m: ev.Metadata) -> Changes:
    return {"state": PAUSED}


def _unpaused(s: StateView, e: ev.Event, m: ev.Metadata) -> Changes:
    return {"state": RUNNING}


def _exec_opened(s: StateView, e: ev.Event, m: ev.Metadata) -> Changes:
    # A session is open from its intent on (exec_requested), so one whose worker died
    # before it started is still listed until it is settled; exec_started adds nothing new.
    assert isinstance(e, (ev.ExecRequested, ev.ExecStarted))
    if e.session_id in s.exec_sessions:
        return {}
    return {"exec_sessions": (*s.exec_sessions, e.session_id)}


def _exec_exited(s: StateView, e: ev.Event, m: ev.Metadata) -> Changes:
    assert isinstance(e, ev.ExecExited)
    return {"exec_sessions": tuple(x for x in s.exec_sessions if x != e.session_id)}


def _checkpointed(s: StateView, e: ev.Event, m: ev.Metadata) -> Changes:
    assert isinstance(e, ev.Checkpointed)
    return {"checkpoint_path": e.image_path}


def _restored(s: StateView, e: ev.Event, m: ev.Metadata) -> Changes:
    assert isinstance(e, ev.Restored)
    conmon = e.conmon_pid if e.conmon_pid is not None else s.conmon_pid
    return {"state": RUNNING, "pid": e.pid, "conmon_pid": conmon,
            "started_at": m.recorded_at, "finished_at": None, "exit_code": None,
            "exit_reason": None}


def _removed(s: StateView, e: ev.Event, m: ev.Metadata) -> Changes:
    return {"state": REMOVED, "pid": None, "conmon_pid": None, "exec_sessions": ()}


def _updated(s: StateView, e: ev.Event, m: ev.Metadata) -> Changes:
    assert isinstance(e, ev.Updated)
    return {"spec": ev.RunSpec.from_data({**s.spec.to_data(), **e.new})}
def _renamed(s: StateView, e: ev.Event, m: ev.Metadata) -> Changes:
    assert isinstance(e, ev.Renamed)
    return {"name": e.name}


def _audit_only(s: StateView, e: ev.Event, m: ev.Metadata) -> Changes:
    # signalled, stop_requested, checkpoint_requested, command.failed: part of the
    # history, not of the state (a pending checkpoint is found in the stream).
    return {}


_TRANSITIONS: dict[str, Transition] = {
    ev.CONTAINER_PID_RECEIVED: _pid,
    ev.CONTAINER_STARTED: _started,
    ev.CONTAINER_SIGNALLED: _audit_only,
    ev.CONTAINER_STOP_REQUESTED: _audit_only,
    ev.CONTAINER_EXITED: _exited,
    ev.CONTAINER_PAUSED: _paused,
    ev.CONTAINER_UNPAUSED: _unpaused,
    ev.CONTAINER_EXEC_REQUESTED: _exec_opened,
    ev.CONTAINER_EXEC_STARTED: _exec_opened,
    ev.CONTAINER_EXEC_EXITED: _exec_exited,
    ev.CONTAINER_CHECKPOINT_REQUESTED: _audit_only,
    ev.CONTAINER_CHECKPOINTED: _checkpointed,
    ev.CONTAINER_RESTORED: _restored,
    ev.CONTAINER_REMOVED: _removed,
    ev.COMMAND_FAILED: _audit_only,
    ev.COMMAND_REFUSED: _audit_only,  # written in no container's stream; inert if it were
    # restart policies and health checks: the count of restarts is the starts' (a
    # restart is a start again), a health status is read from the stream
    ev.CONTAINER_RESTARTING: _audit_only,
    ev.CONTAINER_HEALTH_STATUS: _audit_only,
    ev.CONTAINER_UPDATED: _updated,  # berth update: the spec's options, as recorded
    # networks: a network's events are in its own stream; an attachment is
    # part of the container's history (docs/events.md), not of its row.
    ev.NETWORK_CREATED: _audit_only,
    ev.NETWORK_REMOVED: _audit_only,
    ev.CONTAINER_NETWORK_ATTACHED: _audit_only,
    ev.CONTAINER_NETWORK_DETACHED: _audit_only,
    # CLI verbs (podman's)
    ev.CONTAINER_RENAMED: _renamed,
    ev.CONTAINER_COPIED_IN: _audit_only,
    ev.CONTAINER_COPY_FINISHED: _audit_only,
}


def _created(recorded: ev.RecordedEvent) -> ContainerState:
    event, meta = recorded.event, recorded.metadata
    assert isinstance(event, ev.ContainerCreated)
    return ContainerState(
        id=meta.stream, name=event.name, node=event.node, bundle=event.bundle,
        spec=event.spec, state=CREATED, created_at=meta.recorded_at,
        version=meta.stream_version, last_position=meta.position,
    )


def apply(state: ContainerState | None, recorded: ev.RecordedEvent) -> ContainerState | None:
    """Fold one event into one container's state.

    Returns None only while the stream has no ``created`` event: a failed command
    aimed at an unknown container is recorded in that (otherwise empty) stream, and
    it must not conjure up a container.
    """
    meta = recorded.metadata
    if meta.type == ev.CONTAINER_CREATED:
        return _created(recorded)
    if state is None:
        return None
    changes = _TRANSITIONS[meta.type](state, recorded.event, meta)
    changes["version"] = meta.stream_version
    changes["last_position"] = meta.position
    return replace(state, **changes)


class _Draft:
    """A mutable stand-in for ContainerState inside one bulk fold.

    Building a frozen 18-field object per event is most of a replay's cost; a draft
    takes the same transitions with a few attribute writes and is frozen once, at the
    end. ``fold`` equals repeated ``apply`` (a property test holds it to that).
    """

    __slots__ = FIELDS  # the fields are ContainerState's, declared once there

    @classmethod
    def of(cls, state: ContainerState) -> _Draft:
        draft = cls.__new__(cls)
        for name in FIELDS:
            setattr(draft, name, getattr(state, name))
        return draft

    def freeze(self) -> ContainerState:
        return ContainerState(*[getattr(self, name) for name in FIELDS])


def fold(recorded: Iterable[ev.RecordedEvent],
         states: Mapping[str, ContainerState] | None = None) -> dict[str, ContainerState]:
    """Fold events of any number of streams, in log order, onto ``states`` (by
    container id; not modified) and return the resulting states.

    The cyclic garbage collector is paused meanwhile: a replay allocates millions of
    objects that live on (drafts, events) and none forms a cycle, yet each automatic
    collection rescans them all, which made a 1,000,000-event replay superlinear.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _fold(recorded, states)
    finally:
        if was_enabled:
            gc.enable()


def _fold(recorded: Iterable[ev.RecordedEvent],
          states: Mapping[str, ContainerState] | None) -> dict[str, ContainerState]:
    drafts: dict[str, _Draft] = {}
    base = states or {}
    transitions = _TRANSITIONS
    for item in recorded:
        meta = item.metadata
        stream = meta.stream
        draft = drafts.get(stream)
        if meta.type == ev.CONTAINER_CREATED:
            draft = drafts[stream] = _Draft.of(_created(item))
            continue
        if draft is None:
            known = base.get(stream)
            if known is None:
                continue  # no container (yet): see apply()
            draft = drafts[stream] = _Draft.of(known)
        view = cast(StateView, draft)
        for name, value in transitions[meta.type](view, item.event, meta).items():
            setattr(draft, name, value)
        setattr(draft, "version", meta.stream_version)  # noqa: B010 (slots, no annotations)
        setattr(draft, "last_position", meta.position)  # noqa: B010
    result = dict(base)
    for stream, draft in drafts.items():
        result[stream] = draft.freeze()
    return result


def fold_stream(recorded: Iterable[ev.RecordedEvent]) -> ContainerState | None:
    """Fold one stream's events into that container's state."""
    state: ContainerState | None = None
    for item in recorded:
        state = apply(state, item)
    return state
