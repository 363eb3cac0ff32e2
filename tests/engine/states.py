"""Building container states and recorded events by hand, for the pure core's tests."""

from __future__ import annotations

from datetime import UTC, datetime

from engine import events as ev
from engine.containers.projection import ContainerState
from engine.containers.spec import RunSpec
from engine.ids import new_container_id

NOW = datetime(2026, 12, 1, 10, 3, tzinfo=UTC)
SPEC = RunSpec(rootfs="/srv/rootfs", args=("sleep", "30"))


def state(name: str, *, checkpoint: str | None = None, spec: RunSpec = SPEC,
          pid: int | None = 4242) -> ContainerState:
    """A container in state ``name`` (created, running, paused, exited, removed)."""
    alive = name in ("running", "paused")
    return ContainerState(
        id=new_container_id(), name="web", node="local", bundle="/b", spec=spec, state=name,
        created_at=NOW, version=3, last_position=3, started_at=NOW if name != "created" else None,
        pid=pid if alive or name == "created" else None,
        conmon_pid=4241 if alive or name == "created" else None,
        exit_code=0 if name == "exited" else None, checkpoint_path=checkpoint,
    )


def recorded(stream: str, version: int, event: ev.Event, position: int | None = None,
             ) -> ev.RecordedEvent:
    meta = ev.Metadata(stream=stream, stream_version=version,
                       position=position if position is not None else version,
                       type=event.type, recorded_at=NOW, causation_id="c", correlation_id="c",
                       actor="tester", node="local")
    return ev.RecordedEvent(meta, event)
