"""The one place where typed events and stored rows meet.

Storage sees msgpack bytes and column values; the domain sees typed events. Payloads
written by an older berth are upcast here, on read, one version step at a time, so the
log is never rewritten and ``Event.from_data`` only ever knows the current version.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import msgpack  # type: ignore[import-untyped]

from engine import events as ev
from engine.errors import StoreError
from engine.store.schema import from_micros

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


def _exited_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    # v1 knew only the exit code. Nothing recorded then says why the process ended,
    # so the honest upcast is "unknown", not a guess from the code.
    return {"exit_code": data["exit_code"], "finished_at": data.get("finished_at"),
            "expected": False, "reason": "unknown"}


# (type, version it upcasts FROM) -> function giving the next version's payload.
UPCASTERS: dict[tuple[str, int], Upcaster] = {
    (ev.CONTAINER_EXITED, 1): _exited_v1_to_v2,
}


def pack(data: Mapping[str, Any] | list[Any]) -> bytes:
    packed: bytes = msgpack.packb(data, use_bin_type=True)
    return packed


def unpack(blob: bytes) -> Any:
    return msgpack.unpackb(blob, raw=False)


class SpecCache:
    """Decoded ``RunSpec`` objects by their packed bytes.

    Specs never change after create and most containers share a handful of them, yet
    both a replay (one created event per container) and ``ps`` (one row per container)
    would validate each again: that was the single dearest step of a replay. Keeping one
    object per distinct spec also keeps a big fold's heap small. Safe to share between
    threads: the dict only gains entries, or is cleared whole when full.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self._capacity = capacity
        self._specs: dict[bytes, ev.RunSpec] = {}

    def decode(self, packed: bytes, data: dict[str, Any] | None = None) -> ev.RunSpec:
        """The spec packed as ``packed``; ``data`` is its unpacked form if the caller
        already has it."""
        spec = self._specs.get(packed)
        if spec is None:
            if len(self._specs) >= self._capacity:
                self._specs.clear()
            spec = ev.RunSpec.from_data(unpack(packed) if data is None else data)
            self._specs[packed] = spec
        return spec


SPECS = SpecCache()
"""The process's one spec cache: the mapper's and the read model's decodes share it."""


class Mapper:
    """Converts between ``NewEvent``/``RecordedEvent`` and ``events`` rows."""

    def __init__(self, upcasters: Mapping[tuple[str, int], Upcaster] | None = None) -> None:
        self._upcasters = dict(UPCASTERS if upcasters is None else upcasters)
        # A decode cache, safe to share between threads: replaced whole, never
        # half-updated. Specs are cached in SPECS.
        self._last_time: tuple[int, datetime] = (-1, from_micros(0))

    def to_values(self, new: ev.NewEvent, *, position: int, version: int,
                  recorded_at_us: int) -> tuple[Any, ...]:
        """An events row's content columns in ``audit.CONTENT`` order (the hash
        columns are the recorder's)."""
        event = new.event
        return (position, new.stream, version, event.type, event.schema_version,
                pack(event.to_data()), recorded_at_us, new.causation_id,
                new.correlation_id, new.actor, new.node)

    def upcast(self, event_type: str, version: int, data: dict[str, Any]) -> dict[str, Any]:
        cls = ev.event_class(event_type)
        if version > cls.schema_version:
            raise StoreError(f"{event_type} v{version} was written by a newer berth "
                             f"(this one reads up to v{cls.schema_version})")
        while version < cls.schema_version:
            step = self._upcasters.get((event_type, version))
            if step is None:
                raise StoreError(f"no upcaster for {event_type} v{version}")
            data = step(data)
            version += 1
        return data

    def from_values(self, row: Sequence[Any]) -> ev.RecordedEvent:
        """Decode one stored row given as values in ``reader.COLUMNS`` order
        (position, stream, stream_version, type, schema_version, data, recorded_at,
        causation_id, correlation_id, actor, node). Positional so that bulk replays
        build no per-row dicts."""
        event_type = row[3]
        cls = ev.EVENT_TYPES.get(event_type) or ev.event_class(event_type)
        payload = unpack(row[5])
        if row[4] != cls.schema_version:
            payload = self.upcast(event_type, row[4], payload)
        recorded_at = row[6]
        if isinstance(recorded_at, int):
            # Events of one transaction share their time: reuse the datetime.
            last_us, last_at = self._last_time
            if recorded_at == last_us:
                recorded_at = last_at
            else:
                at = from_micros(recorded_at)
                self._last_time = (recorded_at, at)
                recorded_at = at
        meta = ev.Metadata(row[1], row[2], row[0], event_type, recorded_at,
                           row[7], row[8], row[9], row[10])
        if cls is ev.ContainerCreated:
            return ev.RecordedEvent(meta, self._created(payload))
        return ev.RecordedEvent(meta, cls.from_data(payload))

    def _created(self, payload: dict[str, Any]) -> ev.ContainerCreated:
        """Decode a created event, sharing RunSpec objects between equal specs
        (``SpecCache`` says why)."""
        raw_spec = payload.get("spec")
        if not isinstance(raw_spec, dict):
            return ev.ContainerCreated.from_data(payload)
        spec = SPECS.decode(pack(raw_spec), raw_spec)
        try:
            return ev.ContainerCreated(name=payload["name"], node=payload["node"],
                                       bundle=payload["bundle"], spec=spec)
        except KeyError:
            return ev.ContainerCreated.from_data(payload)  # raises the usual error

    def from_row(self, row: Any) -> ev.RecordedEvent:
        return self.from_values((row.position, row.stream, row.stream_version, row.type,
                                 row.schema_version, row.data, row.recorded_at,
                                 row.causation_id, row.correlation_id, row.actor, row.node))
