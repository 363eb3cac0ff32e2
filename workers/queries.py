"""Read-only queries and admin commands, answered from the store (and, for logs,
from the container's log file on this node)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from bus.protocol import Command
from bus.results import events_result
from engine.errors import InvalidArgument, NotFound, Timeout
from engine.events import datetime_from_data
from engine.ids import is_full_id, validate_container_id
from engine.projection import EXITED, REMOVED
from workers.context import WorkerContext
from workers.present import detail, event_message, summary

MAX_EVENTS_PAGE = 1000
MAX_LOG_CHUNK = 512 * 1024


def _int_arg(args: dict[str, Any], key: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
    value = args.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (maximum is not None and value > maximum):
        raise InvalidArgument(f"invalid {key} {value!r}")
    return value


def _time_arg(args: dict[str, Any], key: str) -> datetime | None:
    value = args.get(key)
    return None if value is None else datetime_from_data(value)


class Queries:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx

    def handle(self, cmd: Command) -> dict[str, Any]:
        name = cmd.type.replace(".", "_")
        fn = getattr(self, name, None)
        if fn is None:
            raise InvalidArgument(f"unknown query {cmd.type!r}")
        result: dict[str, Any] = fn(cmd)
        return result

    def _ref(self, cmd: Command, *, include_removed: bool = False) -> str:
        """Resolve the container; removed ones only by full id (their names may be reused)."""
        if not cmd.container:
            raise InvalidArgument(f"{cmd.type} needs a container")
        try:
            return self.ctx.store.resolve(cmd.container)
        except NotFound:
            if include_removed and is_full_id(cmd.container):
                return self.ctx.store.get_container(cmd.container, include_removed=True).id
            raise

    def query_resolve(self, cmd: Command) -> dict[str, Any]:
        state = self.ctx.store.get_container(self._ref(cmd))
        return {"id": state.id, "node": state.node, "name": state.name}

    def query_ps(self, cmd: Command) -> dict[str, Any]:
        everything = bool(cmd.args.get("all", False))
        return {"containers": [summary(s) for s in self.ctx.store.list_containers(all=everything)]}

    def query_inspect(self, cmd: Command) -> dict[str, Any]:
        return detail(self.ctx.store.get_container(self._ref(cmd, include_removed=True), include_removed=True))

    def query_events(self, cmd: Command) -> dict[str, Any]:
        after = _int_arg(cmd.args, "after", 0)
        limit = _int_arg(cmd.args, "limit", 500, 1, MAX_EVENTS_PAGE)
        head = self.ctx.store.max_position()
        types = cmd.args.get("types")
        container = cmd.args.get("container")
        since, until = _time_arg(cmd.args, "since"), _time_arg(cmd.args, "until")
        if types is None and container is None and since is None and until is None:
            recorded = self.ctx.store.read_all(after + 1, limit)
        else:
            if types is not None and (not isinstance(types, list) or not all(isinstance(t, str) for t in types)):
                raise InvalidArgument("event type filter must be a list of strings")
            cid = self.ctx.store.resolve(container) if isinstance(container, str) else None
            recorded = [
                r for r in self.ctx.store.query(cid, types, since, until)
                if r.metadata.position > after
            ][:limit]
        return events_result([event_message(r) for r in recorded], head)

    def query_history(self, cmd: Command) -> dict[str, Any]:
        cid = self._ref(cmd, include_removed=True)
        events = [event_message(r) for r in self.ctx.store.read_stream(cid)]
        return events_result(events, self.ctx.store.max_position())

    def query_state(self, cmd: Command) -> dict[str, Any]:
        position = cmd.args.get("at_position")
        at_time = _time_arg(cmd.args, "at_time")
        if position is not None:
            position = _int_arg(cmd.args, "at_position", 0)
        cid = self._ref(cmd, include_removed=True) if cmd.container else None
        states = self.ctx.store.state_at(position=position, time=at_time, container=cid)
        if cid is not None and cid not in states:
            raise NotFound(f"container {cmd.container} did not exist at that moment")
        return {"containers": [detail(s) for s in states.values()]}

    def query_logs(self, cmd: Command) -> dict[str, Any]:
        """Log lines from ``offset``. With ``wait_ms``, a long poll: answer as soon as
        there is output or the container has exited, so followers need not spin."""
        cid = validate_container_id(self._ref(cmd, include_removed=True))
        wait_ms = _int_arg(cmd.args, "wait_ms", 0, 0, 5000)
        deadline = time.monotonic() + wait_ms / 1000
        while True:
            result = self._read_log(cid, _int_arg(cmd.args, "offset", 0))
            if result["lines"] or result["state"] in (EXITED, REMOVED) or time.monotonic() >= deadline:
                return result
            with self.ctx.changed:
                self.ctx.changed.wait(min(0.01, max(0.0, deadline - time.monotonic())))

    def _read_log(self, cid: str, offset: int) -> dict[str, Any]:
        path = self.ctx.runtime.paths(cid).log
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read(MAX_LOG_CHUNK)
        except FileNotFoundError:
            data = b""
        # Only whole lines: a partial last line is left for the next read.
        cut = data.rfind(b"\n") + 1
        lines = []
        for raw in data[:cut].decode(errors="replace").splitlines():
            parts = raw.split(" ", 3)
            if len(parts) == 4:
                lines.append([parts[0], parts[1], parts[2], parts[3]])
        state = self.ctx.store.get_container(cid, include_removed=True)
        return {"lines": lines, "offset": offset + cut, "state": state.state, "exit_code": state.exit_code}

    def admin_rebuild(self, cmd: Command) -> dict[str, Any]:
        count = self.ctx.store.rebuild_read_model()
        differences = self.ctx.store.verify_read_model() if cmd.args.get("verify") else []
        return {"containers": count, "differences": differences}

    def admin_verify_audit(self, cmd: Command) -> dict[str, Any]:
        broken = self.ctx.store.verify_chain()
        position, digest = self.ctx.store.head()
        return {"ok": broken is None, "first_break": broken, "head": position, "hash": digest}

    def wait(self, cmd: Command) -> dict[str, Any]:
        """Block until the container has exited (or the timeout given runs out)."""
        cid = self._ref(cmd, include_removed=True)
        timeout = cmd.args.get("timeout")
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        with self.ctx.changed:
            while True:
                state = self.ctx.latest(cid)
                if state.state in (EXITED, REMOVED) and state.exit_code is not None:
                    return {"id": cid, "exit_code": state.exit_code}
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise Timeout(f"container {cid[:12]} did not exit within {timeout}s")
                self.ctx.changed.wait(min(left, 1.0) if left is not None else 1.0)
