"""Named volumes: their state folded from the log, and the rules for changing them (pure).

A volume is not a container: its events live in a stream of its own, ``volume:NAME``
(a container's name can never hold a colon, so the two never meet), and its state is
projected from those few events here, without a table of its own. The decisions take
a volume's state and the containers that mount it and return the events to record or
a refusal; ``engine.volumes.service`` carries them out (the directory on disk, the
append) and is the only writer of these streams.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from engine import events as ev
from engine.containers.mountspec import VOLUME, validate_volume_name
from engine.containers.projection import ContainerState
from engine.errors import AlreadyExists, InvalidArgument, NotFound, Refused, WrongNode

STREAM_PREFIX: Final = "volume:"
MAX_LABELS: Final = 64
MAX_LABEL_BYTES: Final = 4096


def stream_of(name: str) -> str:
    return STREAM_PREFIX + name


@dataclass(frozen=True, slots=True)
class VolumeState:
    """A volume as its stream tells it; ``exists`` False once removed (or never made)."""

    name: str
    version: int = 0
    exists: bool = False
    node: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    created_at: datetime | None = None
    implicit: bool = False


def fold_volume(name: str, records: Iterable[ev.RecordedEvent]) -> VolumeState:
    """The state of one volume from its stream (a volume removed and made again is new)."""
    state = VolumeState(name)
    for r in records:
        event = r.event
        if isinstance(event, ev.VolumeCreated):
            state = VolumeState(name, r.metadata.stream_version, True, event.node,
                                event.labels, r.metadata.recorded_at, event.implicit)
        elif isinstance(event, ev.VolumeRemoved):
            state = VolumeState(name, r.metadata.stream_version)
        else:
            state = VolumeState(state.name, r.metadata.stream_version, state.exists,
                                state.node, state.labels, state.created_at, state.implicit)
    return state


def project(records: Iterable[ev.RecordedEvent]) -> dict[str, VolumeState]:
    """Every volume that exists now, by name, from the ``volume.*`` events in log order."""
    streams: dict[str, list[ev.RecordedEvent]] = {}
    for r in records:
        if r.metadata.stream.startswith(STREAM_PREFIX):
            streams.setdefault(r.metadata.stream[len(STREAM_PREFIX):], []).append(r)
    states = {name: fold_volume(name, rs) for name, rs in streams.items()}
    return {name: s for name, s in sorted(states.items()) if s.exists}


def users(name: str, containers: Iterable[ContainerState]) -> list[ContainerState]:
    """The containers (running or not, not removed) that mount volume ``name``."""
    return [s for s in containers if not s.removed
            and any(m.type == VOLUME and m.source == name for m in s.spec.mounts)]


def check_labels(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """``k=v`` labels: string keys and values, bounded, no NUL byte."""
    if not isinstance(labels, Mapping) or len(labels) > MAX_LABELS:
        raise InvalidArgument(f"volume labels must be a map of at most {MAX_LABELS} entries")
    for key, value in labels.items():
        if (not isinstance(key, str) or not key or not isinstance(value, str)
                or "\0" in key + value or len(key) + len(value) > MAX_LABEL_BYTES):
            raise InvalidArgument(f"invalid volume label {key!r}: use KEY=VALUE strings")
    return tuple(sorted(labels.items()))


# --------------------------------------------------------------------------- decisions


def decide_create(state: VolumeState, node: str, labels: tuple[tuple[str, str], ...],
                  *, implicit: bool = False) -> list[ev.Event]:
    """``volume create``: refused if the name is taken; nothing to record for a
    container's volume that exists (``implicit``) on this node."""
    validate_volume_name(state.name)
    if state.exists:
        if state.node != node:
            raise WrongNode(f"volume {state.name} lives on node {state.node!r}, not {node!r}",
                            state.node)
        if implicit:
            return []
        raise AlreadyExists(f"volume {state.name} already exists")
    return [ev.VolumeCreated(state.name, node, labels, implicit)]


def decide_remove(state: VolumeState, node: str, used_by: Sequence[ContainerState], *,
                  force: bool = False) -> list[ev.Event]:
    """``volume rm``: refused while any container mounts it; ``force`` makes a volume
    that does not exist no error (nothing to record), never removes one in use."""
    if not state.exists:
        if force:
            return []
        raise NotFound(f"no such volume: {state.name}")
    if state.node != node:
        raise WrongNode(f"volume {state.name} lives on node {state.node!r}, not {node!r}",
                        state.node)
    if used_by:
        names = ", ".join(s.name for s in used_by[:5])
        more = f" and {len(used_by) - 5} more" if len(used_by) > 5 else ""
        raise Refused(f"volume {state.name} is in use by container(s) {names}{more}: "
                      "remove them first")
    return [ev.VolumeRemoved(state.name)]


def prunable(volumes: Mapping[str, VolumeState], node: str,
             containers: Iterable[ContainerState]) -> list[str]:
    """The volumes of ``node`` no container mounts: what ``volume prune`` removes."""
    used = {m.source for s in containers if not s.removed
            for m in s.spec.mounts if m.type == VOLUME}
    return [name for name, s in volumes.items() if s.node == node and name not in used]
