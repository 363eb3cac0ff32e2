"""The ``containers`` read model: the projection's output, stored for fast queries.

Rows are written only by folding events with ``engine.containers.projection.apply`` (in the
append transaction, or by a rebuild), and every ``ContainerState`` field has a column,
so a row converts back to exactly the state it was made from. That exactness is what
lets "rebuild == incremental" be checked field by field.
"""

from __future__ import annotations

import functools
import re
import shlex
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import (
    Connection,
    Update,
    bindparam,
    delete,
    insert,
    not_,
    select,
    true,
    update,
)

from engine.containers.projection import FIELDS, PAUSED, REMOVED, RUNNING, ContainerState
from engine.errors import InvalidArgument, NotFound
from engine.store import sql
from engine.store.mapper import SPECS, pack, unpack
from engine.store.schema import containers

# Same rule podman applies to names; ids are hex, so a valid id is a valid ref too.
REF_PATTERN = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")


def state_to_row(s: ContainerState) -> dict[str, Any]:
    return {
        "id": s.id,
        "name": s.name,
        "state": s.state,
        "node": s.node,
        "bundle": s.bundle,
        "rootfs": s.spec.rootfs,
        "command": shlex.join(s.spec.argv),
        "spec": pack(s.spec.to_data()),
        "pid": s.pid,
        "conmon_pid": s.conmon_pid,
        "exit_code": s.exit_code,
        "exit_reason": s.exit_reason,
        "created_at": s.created_at,
        "started_at": s.started_at,
        "finished_at": s.finished_at,
        "restart_count": s.restart_count,
        "paused": s.state == PAUSED,
        "auto_remove": s.spec.auto_remove,
        "removed": s.state == REMOVED,
        "checkpoint_path": s.checkpoint_path,
        "exec_sessions": pack(list(s.exec_sessions)),
        "version": s.version,
        "last_position": s.last_position,
    }


def row_to_state(row: Any) -> ContainerState:
    return ContainerState(
        id=row.id,
        name=row.name,
        node=row.node,
        bundle=row.bundle,
        spec=SPECS.decode(bytes(row.spec)),
        state=row.state,
        created_at=row.created_at,
        version=row.version,
        last_position=row.last_position,
        started_at=row.started_at,
        finished_at=row.finished_at,
        pid=row.pid,
        conmon_pid=row.conmon_pid,
        exit_code=row.exit_code,
        exit_reason=row.exit_reason,
        restart_count=row.restart_count,
        checkpoint_path=row.checkpoint_path,
        exec_sessions=tuple(unpack(row.exec_sessions)),
    )


def load_states(conn: Connection, ids: Iterable[str]) -> dict[str, ContainerState]:
    found: dict[str, ContainerState] = {}
    for chunk in sql.chunked(list(set(ids))):
        for row in conn.execute(select(containers).where(containers.c.id.in_(chunk))):
            found[row.id] = row_to_state(row)
    return found


class StateCache:
    """Recently written states, so an append need not decode full rows to fold onto.

    An entry is used only if the row still has the same (version, last_position):
    positions are never reused once committed, and entries are stored only after a
    commit, so a matching pair means the row holds exactly this state. Another
    process's write changes the pair and forces a reload.
    """

    def __init__(self, mark: str, capacity: int = 20_000) -> None:
        self._mark = mark  # the driver's placeholder: this runs in every append
        self._capacity = capacity
        self._states: dict[str, ContainerState] = {}

    def load(self, conn: Connection, ids: Iterable[str]) -> dict[str, ContainerState]:
        found: dict[str, ContainerState] = {}
        stale: list[str] = []
        for chunk in sql.chunked(list(set(ids))):
            query = sql.select_in("id, version, last_position", "containers", "id",
                                  self._mark, len(chunk))
            for cid, version, last_position in conn.exec_driver_sql(query, tuple(chunk)):
                cached = self._states.get(cid)
                if (cached is not None and cached.version == version
                        and cached.last_position == last_position):
                    found[cid] = cached
                else:
                    stale.append(cid)
        if stale:
            found.update(load_states(conn, stale))
        return found

    def remember(self, states: Iterable[ContainerState]) -> None:
        if len(self._states) > self._capacity:
            self._states.clear()
        for state in states:
            self._states[state.id] = state

    def clear(self) -> None:
        self._states.clear()


def _changed_columns(old: ContainerState, new: ContainerState) -> dict[str, Any]:
    """Only the columns whose field changed: most events touch two or three."""
    out: dict[str, Any] = {}
    for name in FIELDS:
        before, after = getattr(old, name), getattr(new, name)
        if before is after or before == after:
            continue
        if name == "state":
            out["state"] = after
            out["paused"] = after == PAUSED
            out["removed"] = after == REMOVED
        elif name == "exec_sessions":
            out["exec_sessions"] = pack(list(after))
        elif name == "spec":
            out.update({k: v for k, v in state_to_row(new).items()
                        if k in ("spec", "rootfs", "command", "auto_remove")})
        else:
            out[name] = after
    return out


@functools.lru_cache(maxsize=256)
def _update_statement(columns: tuple[str, ...]) -> Update:
    """One statement object per column set: SQLAlchemy memoises a statement's cache
    key on the object, so building a fresh one per append paid for it every time."""
    return (update(containers).where(containers.c.id == bindparam("b_id"))
            .values({c: bindparam(c) for c in columns}))


def save_states(conn: Connection, states: Mapping[str, ContainerState],
                before: Mapping[str, ContainerState]) -> None:
    """Write folded states: UPDATE changed columns of rows that were there, INSERT new
    ones. Updates go first, so a container removed in this batch frees its name
    before a new container taking the same name is inserted."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    inserts: list[dict[str, Any]] = []
    for cid, state in states.items():
        old = before.get(cid)
        if old is None:
            inserts.append(state_to_row(state))
            continue
        changed = _changed_columns(old, state)
        if changed:
            groups.setdefault(tuple(sorted(changed)), []).append({**changed, "b_id": cid})
    for columns, rows in groups.items():
        conn.execute(_update_statement(columns), rows)
    if inserts:
        conn.execute(insert(containers), inserts)


def replace_all(conn: Connection, states: Mapping[str, ContainerState]) -> None:
    conn.execute(delete(containers))
    for chunk in sql.chunked([state_to_row(s) for s in states.values()], 1000):
        conn.execute(insert(containers), chunk)


def all_states(conn: Connection) -> dict[str, ContainerState]:
    return {row.id: row_to_state(row) for row in conn.execute(select(containers))}


def list_containers(conn: Connection, *, all: bool = False,
                    node: str | None = None) -> list[ContainerState]:
    """What ``ps`` shows: live containers newest first; only running/paused unless ``all``."""
    query = select(containers).where(not_(containers.c.removed))
    if not all:
        query = query.where(containers.c.state.in_((RUNNING, PAUSED)))
    if node is not None:
        query = query.where(containers.c.node == node)
    query = query.order_by(containers.c.created_at.desc(), containers.c.id)
    return [row_to_state(row) for row in conn.execute(query)]


def get_container(conn: Connection, container_id: str, *,
                  include_removed: bool = False) -> ContainerState:
    row = conn.execute(select(containers).where(containers.c.id == container_id)).first()
    if row is None or (row.removed and not include_removed):
        raise NotFound(f"no such container: {container_id}")
    return row_to_state(row)


def resolve(conn: Connection, ref: str, *, include_removed: bool = False) -> str:
    """Turn what a user typed into a container id: full id, then name, then id prefix.

    ``include_removed`` (history, audit): a removed container too; a name then means
    the newest container that had it (names are reused once freed)."""
    if not isinstance(ref, str) or not REF_PATTERN.match(ref):
        raise InvalidArgument(f"invalid container reference {ref!r}")
    live = not_(containers.c.removed) if not include_removed else true()
    exact = conn.execute(
        select(containers.c.id).where(live, containers.c.id == ref)).scalar()
    if exact is not None:
        return str(exact)
    named = conn.execute(
        select(containers.c.id).where(live, containers.c.name == ref)
        .order_by(containers.c.created_at.desc()).limit(1)).scalar()
    if named is not None:
        return str(named)
    matches = conn.execute(
        select(containers.c.id)
        .where(live, containers.c.id.startswith(ref, autoescape=True))
        .limit(2)
    ).scalars().all()
    if not matches:
        raise NotFound(f"no such container: {ref}")
    if len(matches) > 1:
        raise InvalidArgument(f"container reference {ref!r} is ambiguous: "
                              "give more of the id")
    return str(matches[0])


def named(conn: Connection, name: str) -> list[str]:
    """Every container that ever had ``name``, newest first (``history --all``)."""
    return [str(cid) for cid in conn.execute(
        select(containers.c.id).where(containers.c.name == name)
        .order_by(containers.c.created_at.desc())).scalars()]


def differences(expected: Mapping[str, ContainerState],
                actual: Mapping[str, ContainerState]) -> list[str]:
    """Human-readable differences between what the log says and what the rows say."""
    out: list[str] = []
    for cid in sorted(set(expected) | set(actual)):
        want, have = expected.get(cid), actual.get(cid)
        if want is None:
            out.append(f"{cid}: row exists but the log has no such container")
        elif have is None:
            out.append(f"{cid}: missing row")
        elif want != have:
            for field in ContainerState.__slots__:
                a, b = getattr(want, field), getattr(have, field)
                if a != b:
                    out.append(f"{cid}: {field}: log={a!r} row={b!r}")
    return out
