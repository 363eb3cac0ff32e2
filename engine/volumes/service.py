"""Carries out the volume rules of ``engine.volumes.rules``: the one writer of ``volume:NAME``.

Each change takes the volume's lock, folds its stream, asks the pure rules what to
record, then records and touches the disk in the order that a crash cannot make lie:
a volume is recorded before its directory is made (a use after a crash makes it), and
set aside before its removal is recorded (put back if the record fails), so no
volume's name ever shows another volume's data.

A container's create holds the locks of the volumes it mounts from before the volumes
are provided until its ``container.created`` is recorded, so a ``volume rm`` either
sees the container that mounts the volume or runs before the volume is provided again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from engine import commands as c
from engine import events as ev
from engine.containers.mountspec import VOLUME, volume_names
from engine.containers.ocimounts import volume_data
from engine.containers.spec import RunSpec
from engine.errors import BerthError, NotFound
from engine.locks import ContainerLocks
from engine.store.caused import CausedWrites
from engine.store.store import EventStore
from engine.volumes import files
from engine.volumes import rules as v

Announce = Callable[[Sequence[ev.RecordedEvent]], None]
VOLUME_EVENTS = (ev.VOLUME_CREATED, ev.VOLUME_REMOVED)


def _step_id(command_id: str, *parts: object) -> str:
    return c.system_command_id(command_id, *parts)


@dataclass
class VolumeService:
    """The named volumes of one node, kept under ``root`` ($BERTH_ROOT/volumes)."""

    store: EventStore
    root: str
    node: str
    announce: Announce = lambda _recorded: None
    locks: ContainerLocks = field(default_factory=ContainerLocks)

    # -- reads -----------------------------------------------------------------------

    def state(self, name: str) -> v.VolumeState:
        return v.fold_volume(name, self.store.read_stream(v.stream_of(name)))

    def all(self) -> dict[str, v.VolumeState]:
        return v.project(self.store.query(types=list(VOLUME_EVENTS)))

    def containers(self) -> list[Any]:
        return self.store.list_containers(all=True)

    def describe(self, state: v.VolumeState, *, users: Sequence[Any] = ()) -> dict[str, Any]:
        return {"name": state.name, "node": state.node, "driver": "local",
                "mountpoint": volume_data(self.root, state.name),
                "labels": dict(state.labels),
                "created_at": state.created_at.isoformat() if state.created_at else None,
                "implicit": state.implicit, "containers": [u.name for u in users]}

    def inspect(self, q: c.VolumeInspect) -> dict[str, Any]:
        state = self.state(q.name)
        if not state.exists:
            raise NotFound(f"no such volume: {q.name}")
        return self.describe(state, users=v.users(q.name, self.containers()))

    def ls(self, _q: c.VolumeLs) -> dict[str, Any]:
        return {"volumes": [self.describe(s) for s in self.all().values()]}

    # -- changes ---------------------------------------------------------------------

    @property
    def writes(self) -> CausedWrites:
        return CausedWrites(self.store, self.node, self.announce)

    def _append(self, state: v.VolumeState, events: Sequence[ev.Event], command_id: str,
                causation: c.Causation) -> list[ev.RecordedEvent]:
        return self.writes.append(v.stream_of(state.name), state.version, events, causation,
                                  command_id=command_id)

    def create(self, q: c.VolumeCreate, causation: c.Causation
               ) -> tuple[list[ev.RecordedEvent], dict[str, Any]]:
        with self.locks.hold(q.name):
            done = self.writes.done(causation)
            state = self.state(q.name)
            if done is None or not done.ok:
                events = v.decide_create(state, self.node, q.labels)
                recorded = self._append(state, events, causation.command_id, causation)
                state = self.state(q.name)
            else:  # a resend of a create recorded before: the same answer
                recorded = []
            files.ensure(self.root, q.name)
        return recorded, self.describe(state)

    def remove(self, q: c.VolumeRemove, causation: c.Causation
               ) -> tuple[list[ev.RecordedEvent], dict[str, Any]]:
        """Each name in turn; the first refusal stops the rest (those before it are gone)."""
        recorded: list[ev.RecordedEvent] = []
        removed: list[str] = []
        for name in q.names:
            got = self._remove_one(name, _step_id(causation.command_id, "volume", name),
                                   causation, force=q.force)
            if got:
                recorded += got
                removed.append(name)
        return recorded, {"removed": removed}

    def prune(self, _q: c.VolumePrune, causation: c.Causation
              ) -> tuple[list[ev.RecordedEvent], dict[str, Any]]:
        recorded: list[ev.RecordedEvent] = []
        removed: list[str] = []
        for name in v.prunable(self.all(), self.node, self.containers()):
            try:
                got = self._remove_one(name, _step_id(causation.command_id, "volume", name),
                                       causation, force=True)
            except BerthError:  # mounted by a container created since: it stays
                continue
            if got:
                recorded += got
                removed.append(name)
        files.sweep(self.root)
        return recorded, {"removed": removed}

    def _remove_one(self, name: str, command_id: str, causation: c.Causation, *,
                    force: bool) -> list[ev.RecordedEvent]:
        with self.locks.hold(name):
            if self.store.outcome(command_id) is not None:
                return []  # this command removed it before (a resend)
            state = self.state(name)
            events = v.decide_remove(state, self.node, v.users(name, self.containers()),
                                     force=force)
            if not events:
                return []
            aside = files.set_aside(self.root, name)
            try:
                recorded = self._append(state, events, command_id, causation)
            except BaseException:
                files.put_back(self.root, name, aside)
                raise
        files.sweep(self.root)
        return recorded

    # -- a container's volumes -------------------------------------------------------

    @contextmanager
    def provide(self, spec: RunSpec, causation: c.Causation) -> Iterator[None]:
        """Hold the locks of the volumes ``spec`` mounts, made (recorded as ``implicit``)
        and filled from the rootfs as needed, until the caller has recorded the
        container that mounts them."""
        names = volume_names(spec.mounts)
        with ExitStack() as held:
            for name in names:
                held.enter_context(self.locks.hold(name))
            for name in names:
                state = self.state(name)
                events = v.decide_create(state, self.node, (), implicit=True)
                if events:
                    self._append(state, events, _step_id(causation.command_id, "volume", name),
                                 causation)
                files.ensure(self.root, name)
            for mount in spec.mounts:
                if mount.type == VOLUME:
                    files.fill(self.root, mount.source, spec.rootfs, mount.target)
            yield

    def sweep(self) -> int:
        """Finish removals a crash cut short (at worker start)."""
        return files.sweep(self.root)
