"""From a bus command to the application core and back: the worker's dispatch table.

Each wire command is parsed once into a typed command (``engine.parsing.parse``),
looked up in an explicit table by its type, carried out by the service or answered
by the queries, and the outcome (or a typed error) becomes a reply. No state rule
lives here: this module only translates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bus.protocol import Command, Reply
from bus.results import events_result
from engine import command_types as t
from engine import commands as c
from engine.audit.treehead import TreeHead
from engine.containers import copying
from engine.containers.projection import PAUSED, RUNNING
from engine.containers.queries import Queries, RebuildReport
from engine.containers.service import ContainerService, Outcome
from engine.errors import BerthError, InvalidArgument, NotFound, Unavailable, WrongNode
from engine.images.service import ImageService
from engine.networks.service import NetworkOutcome, NetworkService
from engine.parsing import parse
from engine.volumes.service import VolumeService
from workers.copies import Transfers
from workers.health import HealthMonitor, healthcheck, with_health
from workers.info import node_info
from workers.oserrors import from_os_error
from workers.present import detail, event_message, summary
from workers.runs import Runs
from workers.usage import UsageReader

if TYPE_CHECKING:
    from workers.attach import StreamServer

log = logging.getLogger("berth.dispatch")

Answer = Callable[[Any, Command], Reply]


def _ok(cmd: Command, result: dict[str, Any], positions: tuple[int, ...] = ()) -> Reply:
    return Reply(cmd.id, True, positions=positions, result=result)


class Dispatch:
    """Answers every command a worker receives; one entry per command type."""

    def __init__(self, service: ContainerService, queries: Queries,
                 images: ImageService | None = None,
                 networks: NetworkService | None = None, *,
                 health: HealthMonitor | None = None, usage: UsageReader | None = None,
                 streams: StreamServer | None = None) -> None:
        self.service = service
        self.queries = queries
        self.networks = networks
        self.health = health
        """The worker's health monitor (probes, inspect's probe log)."""
        self.usage = usage
        """Reads of live processes and counters (top, stats)."""
        self.streams = streams
        """The worker's stream server (workers.attach), when it has one."""
        self.copies = Transfers()
        q = queries
        change = self._change
        self._table: dict[str, Answer] = {
            t.CREATE: change,
            t.START: change,
            t.STOP: change,
            t.KILL: change,
            t.PAUSE: change,
            t.UNPAUSE: change,
            t.EXEC: change,
            t.CHECKPOINT: change,
            t.RESTORE: change,
            t.REMOVE: change,
            t.UPDATE: change,
            t.RENAME: change,
            t.RUN: lambda r, cmd: Runs(service, q, self.streams).run(r, cmd),
            t.COPY_IN: lambda ci, cmd: change(self.copies.join(ci), cmd),
            t.COPY_CHUNK: lambda cc, cmd: _ok(cmd, {"staged": self.copies.stage(cc)}),
            t.COPY_OUT: lambda co, cmd: _ok(cmd, _copy_out(q, co, self.copies)),
            t.WAIT: lambda w, cmd: _ok(cmd, dict(zip(("id", "exit_code"), q.wait(w),
                                                    strict=True))),
            t.RESOLVE: lambda r, cmd: _ok(cmd, _resolved(q.resolve(r))),
            t.PS: lambda p, cmd: _ok(cmd, {"containers": [
                with_health(summary(s), service, s, self.health) for s in q.ps(p)]}),
            t.INSPECT: lambda i, cmd: _ok(cmd, self._inspected(q.inspect(i))),
            t.EVENTS: lambda e, cmd: _ok(cmd, _events(*q.events(e))),
            t.HISTORY: lambda h, cmd: _ok(cmd, _events(*q.history(h))),
            t.STATE: lambda s, cmd: _ok(cmd, _state_at(q, s)),
            t.LOGS: lambda lq, cmd: _ok(cmd, _logs(q, lq)),
            t.REBUILD: lambda r, cmd: _ok(cmd, _rebuilt(q.rebuild(r))),
            t.VERIFY_AUDIT: lambda v, cmd: _ok(cmd, _audit(q, v)),
            t.AUDIT_CHECKPOINT: lambda a, cmd: _ok(cmd, _head(q.checkpoint(a), q)),
            t.AUDIT_PROVE: lambda a, cmd: _ok(cmd, q.prove(a).to_json()),
            t.AUDIT_CONSISTENCY: lambda a, cmd: _ok(cmd, q.consistency(a).to_json()),
            t.AUDIT_EXPORT: lambda a, cmd: _ok(cmd, dict(zip(("rows", "head"), q.export(a),
                                                            strict=True))),
            t.PING: lambda _p, cmd: _ok(cmd, {"node": service.node}),
            # volumes
            t.VOLUME_CREATE: lambda q, cmd: self._volume(self._volumes().create, q, cmd),
            t.VOLUME_REMOVE: lambda q, cmd: self._volume(self._volumes().remove, q, cmd),
            t.VOLUME_PRUNE: lambda q, cmd: self._volume(self._volumes().prune, q, cmd),
            t.VOLUME_LS: lambda q, cmd: _ok(cmd, self._volumes().ls(q)),
            t.VOLUME_INSPECT: lambda q, cmd: _ok(cmd, self._volumes().inspect(q)),
            t.HEALTHCHECK: lambda hc, cmd: _ok(cmd, healthcheck(self.health, service,
                                                                hc.container)),
            t.TOP: lambda tp, cmd: _ok(cmd, self._usage().top(tp.container)),
            t.STATS: lambda st, cmd: _ok(cmd, self._usage().stats(st.container)),
            # networks
            t.NETWORK_CREATE: lambda n, cmd: _net(cmd, self._networks().create(
                n.name, n.subnet, n.gateway, _causation(cmd))),
            t.NETWORK_REMOVE: lambda n, cmd: _net(cmd, self._networks().remove(
                n.name, _causation(cmd))),
            t.NETWORKS: lambda _n, cmd: _ok(cmd, {"networks": self._networks().list()}),
            t.NETWORK_INSPECT: lambda n, cmd: _ok(cmd, self._networks().inspect(n.name)),
            t.INFO: lambda _i, cmd: _ok(cmd, node_info(service)),
            # stdio streams over tcp
            t.STREAM: lambda _s, cmd: _ok(cmd, self._stream()),
            # compose
            t.STACK_APPLY: self._stack,
            t.STACK_REMOVE: self._stack,
        }
        if images is not None:  # images: the node's image store
            self._table.update(dict.fromkeys(t.IMAGE_COMMANDS, self._image))
        self.images = images

    def _usage(self) -> UsageReader:
        if self.usage is None:
            raise Unavailable(f"the worker of node {self.service.node} is not serving yet")
        return self.usage

    def _stream(self) -> dict[str, Any]:
        if self.streams is None:
            raise NotFound(f"node {self.service.node} has no stream socket (its worker's "
                           "log says why)")
        return {"node": self.service.node, **self.streams.location()}

    def _inspected(self, state: Any) -> dict[str, Any]:
        found = with_health(detail(state), self.service, state,
                            self.health if state.node == self.service.node else None,
                            details=True)
        if self.networks is not None and state.node == self.service.node \
                and state.state in (RUNNING, PAUSED):
            # the address it holds now (the Docker API's NetworkSettings.Networks);
            # an ended container's is being given back: none, as in Docker
            found["network_address"] = self.networks.address_of(state.id)
        return found

    def handle(self, cmd: Command) -> Reply:
        causation = c.Causation(cmd.id, cmd.correlation_id, cmd.actor, cmd.type)
        try:
            typed = parse(cmd.type, cmd.container, cmd.args)
            return self._table[cmd.type](typed, cmd)
        except WrongNode as exc:  # a redirect: nothing done, nothing recorded
            return Reply(cmd.id, False, exc.code, exc.message, result={"node": exc.node})
        except BerthError as exc:
            return self._failed(cmd, causation, exc)
        except OSError as exc:  # the state directory refused a write (full, read-only)
            return self._failed(cmd, causation, from_os_error(exc))
        except Exception as exc:
            log.exception("command %s (%s) failed unexpectedly", cmd.id, cmd.type)
            return self._failed(cmd, causation, BerthError(f"internal error: {exc}"))

    def _networks(self) -> NetworkService:
        if self.networks is None:
            raise InvalidArgument("this worker has no networks")
        return self.networks

    def _change(self, command: c.ContainerCommand, cmd: Command) -> Reply:
        causation = c.Causation(cmd.id, cmd.correlation_id, cmd.actor, cmd.type)
        outcome: Outcome = self.service.handle(command, causation)
        if outcome.error is not None:
            err = outcome.error
            return Reply(cmd.id, False, err.code, err.message, outcome.positions)
        return _ok(cmd, outcome.result, outcome.positions)

    def _volumes(self) -> VolumeService:
        if self.service.volumes is None:
            raise Unavailable("this worker keeps no volumes")
        return self.service.volumes

    def _volume(self, change: Callable[[Any, c.Causation], tuple[list[Any], dict[str, Any]]],
                command: Any, cmd: Command) -> Reply:
        causation = c.Causation(cmd.id, cmd.correlation_id, cmd.actor, cmd.type)
        recorded, result = change(command, causation)
        return _ok(cmd, result, tuple(r.position for r in recorded))
    def _stack(self, command: Any, cmd: Command) -> Reply:
        from engine.compose.stacks import record

        recorded, result = record(self.service.writes, command,
                                  c.Causation(cmd.id, cmd.correlation_id, cmd.actor, cmd.type))
        return _ok(cmd, result, tuple(r.position for r in recorded))

    def _image(self, command: Any, cmd: Command) -> Reply:
        causation = c.Causation(cmd.id, cmd.correlation_id, cmd.actor, cmd.type)
        if self.images is None:  # not in the table then; kept for the type checker
            raise BerthError("this worker has no image store")
        outcome = self.images.handle(command, causation)
        return _ok(cmd, outcome.result, outcome.positions)

    def _failed(self, cmd: Command, causation: c.Causation, exc: BerthError) -> Reply:
        positions = self.service.fail(cmd.type, cmd.container, causation, exc)
        return Reply(cmd.id, False, exc.code, exc.message, positions)


def _causation(cmd: Command) -> c.Causation:
    return c.Causation(cmd.id, cmd.correlation_id, cmd.actor, cmd.type)


def _net(cmd: Command, outcome: NetworkOutcome) -> Reply:
    return _ok(cmd, outcome.result, outcome.positions)


def _resolved(state: Any) -> dict[str, Any]:
    return {"id": state.id, "node": state.node, "name": state.name}


def _events(recorded: Any, head: int) -> dict[str, Any]:
    return events_result([event_message(r) for r in recorded], head)


def _copy_out(q: Queries, co: c.CopyOut, copies: Transfers) -> dict[str, Any]:
    """The tar of a path in a container of this node (a live one's own view, with its
    mounts; a stopped one's root filesystem): whole if it fits one message, else a
    page of it (``transfer``, ``offset``)."""
    cid = q.local(co.container)
    state = q.inspect(c.Inspect(cid))
    if state.removed:
        raise NotFound(f"no such container: {co.container}")

    def packed(limit: int = copying.MAX_COPY) -> bytes:
        with q.service.copy_root(state) as root:
            return copying.pack(root, co.path, limit)

    if co.transfer is None:
        return {"id": cid, "data": packed(copying.CHUNK)}
    data, size = copies.page(f"{cid}/{co.transfer}", co.offset, packed)
    return {"id": cid, "data": data, "size": size}


def _logs(q: Queries, lq: c.Logs) -> dict[str, Any]:
    chunk = q.logs(lq)
    return {"lines": chunk.lines, "offset": chunk.offset, "state": chunk.state,
            "exit_code": chunk.exit_code}


def _rebuilt(report: RebuildReport) -> dict[str, Any]:
    return {"containers": report.containers, "differences": report.differences,
            "broken_at": report.broken_at, "rebuilt": report.rebuilt}


def _audit(q: Queries, v: c.VerifyAudit) -> dict[str, Any]:
    report = q.verify_audit(v)
    return {"ok": report.ok, "first_break": report.first_affected,
            "head": report.size, "hash": report.root.hex(), "vouched": report.vouched,
            "problems": [[p, m] for p, m in report.problems],
            "heads": [{"source": h.source, "size": h.head.size, "key_id": h.head.key_id,
                       "signature": h.signature, "consistent": h.consistent,
                       "node": h.head.node, "timestamp_us": h.head.timestamp_us}
                      for h in report.heads],
            "signer": None if q.signer is None else q.signer.key_id,
            "legacy": report.legacy, "bare": report.bare, "keys": list(report.keys),
            "signatures_checked": report.signatures_checked,
            "checked_from": report.checked_from}


def _head(head: TreeHead, q: Queries) -> dict[str, Any]:
    return {"head": head.to_json(), "signed": head.signed}


def _state_at(q: Queries, s: c.StateAt) -> dict[str, Any]:
    states, moment = q.state_at(s)
    return {"containers": [detail(x) for x in states], "at": moment.isoformat()}
