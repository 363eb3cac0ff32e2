"""How states and events look in replies: plain msgpack-able maps, built in one place."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bus.protocol import EventMessage
from engine import events as ev
from engine.containers.projection import ContainerState


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def summary(s: ContainerState) -> dict[str, Any]:
    """What ``ps`` shows."""
    return {
        "id": s.id,
        "name": s.name,
        "node": s.node,
        "state": s.state,
        "pid": s.pid,
        "exit_code": s.exit_code,
        "exit_reason": s.exit_reason,
        "created_at": _time(s.created_at),
        "started_at": _time(s.started_at),
        "finished_at": _time(s.finished_at),
        "rootfs": s.rootfs,
        "image": s.spec.image or None,
        "ports": [list(p) for p in s.spec.ports],
        "command": list(s.command),
        "restart_count": s.restart_count,
        "labels": dict(s.spec.labels),
    }


def detail(s: ContainerState) -> dict[str, Any]:
    """What ``inspect`` shows: the summary plus everything the log knows."""
    out = summary(s)
    out.update(
        {
            "conmon_pid": s.conmon_pid,
            "bundle": s.bundle,
            "spec": s.spec.to_data(),
            "checkpoint_path": s.checkpoint_path,
            "exec_sessions": list(s.exec_sessions),
            "version": s.version,
            "last_position": s.last_position,
        }
    )
    return out


def event_message(r: ev.RecordedEvent) -> EventMessage:
    m = r.metadata
    return EventMessage(
        position=m.position,
        stream=m.stream,
        stream_version=m.stream_version,
        type=m.type,
        data=r.event.to_data(),
        recorded_at=m.recorded_at.isoformat(),
        command_id=m.causation_id or None,
        correlation_id=m.correlation_id or None,
        actor=m.actor,
        node=m.node or None,
    )
