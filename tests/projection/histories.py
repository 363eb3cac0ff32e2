"""Random VALID container histories for property tests.

A history is a list of commands, each one stream's events as a handler would append
them. It is derived deterministically from a list of integer pairs that hypothesis
draws (and shrinks); a tiny model of each container's state keeps every command legal,
so the histories look like what a real worker would write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st

from engine import events as ev

STEPS = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 10_000)), max_size=40)


@dataclass
class Command:
    stream: str
    expected_version: int | None
    events: tuple[ev.Event, ...]
    failure: tuple[str, str] | None = None  # (code, message) for record_failure


@dataclass
class _Model:
    name: str
    state: str = "created"
    version: int = 0
    checkpointed: bool = False
    sessions: list[str] = field(default_factory=list)


def _spec(seed: int) -> ev.RunSpec:
    return ev.RunSpec(
        rootfs=f"/var/lib/berth/rootfs/{seed % 3}",
        args=("sh", "-c", f"echo {seed}; sleep {seed % 7}"),
        env=(f"SEED={seed}",) if seed % 2 else (),
        memory=(seed % 5 + 1) * 1024 * 1024 if seed % 3 == 0 else None,
        ports=(ev.PortMapping("127.0.0.1", 8000 + seed % 100, 80, "tcp"),) if seed % 4 == 0
        else (),
        auto_remove=seed % 5 == 0,
    )


def history(steps: list[tuple[int, int]], prefix: str = "c") -> list[Command]:
    """Interpret drawn integers as a legal sequence of commands."""
    models: dict[str, _Model] = {}
    out: list[Command] = []
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    names = [f"{prefix}-web", f"{prefix}-db", f"{prefix}-cache"]

    def emit(cid: str, *events: ev.Event) -> None:
        model = models[cid]
        out.append(Command(cid, model.version, events))
        model.version += len(events)

    for n, (a, b) in enumerate(steps):
        live = [cid for cid, m in models.items() if m.state != "removed"]
        if a % 7 == 0 or not live:
            used = {models[c].name for c in live}
            free = [x for x in names if x not in used]
            if not free:
                continue
            cid = f"{prefix}{n:04x}{a:04x}"
            models[cid] = _Model(free[b % len(free)])
            emit(cid, ev.ContainerCreated(models[cid].name, f"node{b % 2}",
                                          f"/run/berth/{cid}", _spec(b)))
            continue
        if a % 11 == 1:
            target = live[b % len(live)] if b % 2 else f"{prefix}-missing"
            out.append(Command(target, None, (), ("not_found" if b % 2 == 0
                                                  else "invalid_state", f"step {n}")))
            if target in models:
                models[target].version += 1
            continue
        cid = live[b % len(live)]
        m = models[cid]
        choice = a // 7
        if m.state == "created":
            if choice % 3 == 0:
                emit(cid, ev.Removed())
                m.state = "removed"
            else:
                emit(cid, ev.PidReceived(1000 + b, 999 + b), ev.Started())
                m.state = "running"
        elif m.state == "running":
            kind = choice % 8
            if kind == 0:
                emit(cid, ev.Paused())
                m.state = "paused"
            elif kind == 1:
                emit(cid, ev.Signalled(b % 31 + 1))
            elif kind == 2:
                emit(cid, ev.StopRequested(b % 10),
                     ev.Exited(143, t0 + timedelta(seconds=n), True, "stop"))
                m.state = "exited"
                m.sessions.clear()
            elif kind == 3:
                emit(cid, ev.Exited(b % 256, None if b % 2 else t0 + timedelta(seconds=n),
                                    False, "crash" if b % 3 == 0 else "exit"))
                m.state = "exited"
                m.sessions.clear()
            elif kind == 4:
                session = f"s{n}"
                m.sessions.append(session)
                emit(cid, ev.ExecStarted(session, ("ls", "-l"), 2000 + n))
            elif kind == 5 and m.sessions:
                emit(cid, ev.ExecExited(m.sessions.pop(0), b % 3))
            elif kind == 6:
                leave = b % 2 == 0
                emit(cid, ev.Checkpointed(f"/ckpt/{cid}/{n}", leave, b % 3 == 0))
                m.checkpointed = True
                if not leave:
                    emit(cid, ev.Exited(0, None, True, "checkpoint"))
                    m.state = "exited"
                    m.sessions.clear()
            else:
                emit(cid, ev.Signalled(9), ev.Exited(137, None, True, "stop"))
                m.state = "exited"
                m.sessions.clear()
        elif m.state == "paused":
            emit(cid, ev.Unpaused())
            m.state = "running"
        elif m.state == "exited":
            kind = choice % 3
            if kind == 0:
                emit(cid, ev.Removed())
                m.state = "removed"
            elif kind == 1 and m.checkpointed:
                emit(cid, ev.Restored(3000 + n, 2999 + n))
                m.state = "running"
            else:
                emit(cid, ev.PidReceived(1000 + b, 999 + b), ev.Started())
                m.state = "running"
    return out
