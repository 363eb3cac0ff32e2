"""Container command handlers: validate, drive the runtime, append what happened.

Each handler returns the events it recorded and a result map; ``Handlers.handle``
turns that (or a BerthError) into a reply. Failures of valid commands are
recorded as ``command.failed``; refused input (bad arguments, unknown
container) writes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from bus.protocol import Command, Reply
from engine import events as ev
from engine.errors import (
    AlreadyExists,
    BerthError,
    InvalidArgument,
    InvalidState,
    NotFound,
    StoreError,
)
from engine.ids import (
    new_container_id,
    new_uuid,
    validate_container_id,
    validate_name,
    validate_session_id,
)
from engine.projection import CREATED, EXITED, PAUSED, RUNNING, ContainerState
from engine.runtime import Status
from engine.runtime.exitfile import wait_exit_file
from engine.signals import parse_signal
from engine.spec import RunSpec
from workers.context import WorkerContext, system_command_id
from workers.exits import ALIVE, record_exit
from workers.oserrors import from_os_error
from workers.queries import Queries
from workers.redo import act_unless_done

log = logging.getLogger("berth.handlers")
Result = tuple[list[ev.RecordedEvent], dict[str, Any]]
MAX_EXEC_OUTPUT = 512 * 1024
_NO_RECORD = (InvalidArgument, NotFound, AlreadyExists, StoreError)


def _number(args: dict[str, Any], key: str, default: float, *, minimum: float = 0) -> float:
    value = args.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise InvalidArgument(f"invalid {key} {value!r}: must be a number >= {minimum:g}")
    return float(value)


def _flag(args: dict[str, Any], key: str) -> bool:
    value = args.get(key, False)
    if not isinstance(value, bool):
        raise InvalidArgument(f"invalid {key} {value!r}: must be true or false")
    return value


def _strings(args: dict[str, Any], key: str) -> list[str]:
    value = args.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"invalid {key}: must be a list of strings")
    return value


class Handlers:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.queries = Queries(ctx)
        self._table: dict[str, Callable[[Command], Result]] = {
            "container.create": self.create,
            "container.start": self.start,
            "container.stop": self.stop,
            "container.kill": self.kill,
            "container.pause": self.pause,
            "container.unpause": self.unpause,
            "container.exec": self.exec,
            "container.checkpoint": self.checkpoint,
            "container.restore": self.restore,
            "container.remove": self.remove,
        }

    # -- dispatch ----------------------------------------------------------------

    def handle(self, cmd: Command) -> Reply:
        try:
            if cmd.type == "container.wait":
                return Reply(cmd.id, True, result=self.queries.wait(cmd))
            if not cmd.type.startswith("container."):
                return Reply(cmd.id, True, result=self.queries.handle(cmd))
            done = self.ctx.store.outcome(cmd.id)
            if done is not None:
                if done.ok:
                    # The stream tells a retried create which container it made.
                    return Reply(cmd.id, True, positions=done.positions,
                                 result={"replayed": True, "id": done.stream, "node": self.ctx.node})
                return Reply(cmd.id, False, done.error_code or "internal", done.message, done.positions)
            handler = self._table.get(cmd.type)
            if handler is None:
                raise InvalidArgument(f"unknown command type {cmd.type!r}")
            recorded, result = handler(cmd)
            return Reply(cmd.id, True, positions=tuple(r.position for r in recorded), result=result)
        except BerthError as exc:
            return self._failed(cmd, exc)
        except OSError as exc:  # the state directory refused a write (full, read-only)
            return self._failed(cmd, from_os_error(exc))
        except Exception as exc:
            log.exception("command %s (%s) failed unexpectedly", cmd.id, cmd.type)
            return self._failed(cmd, BerthError(f"internal error: {exc}"))

    def _failed(self, cmd: Command, exc: BerthError) -> Reply:
        positions: tuple[int, ...] = ()
        if cmd.type.startswith("container.") and not isinstance(exc, _NO_RECORD) and cmd.container:
            try:
                recorded = self.ctx.store.record_failure(
                    cmd.id, cmd.type, cmd.container, exc.code, exc.message,
                    correlation_id=cmd.correlation_id, actor=cmd.actor, node=self.ctx.node,
                )
                self.ctx.forget(cmd.container)
                self.ctx.announce(recorded)
                positions = tuple(r.position for r in recorded)
            except BerthError as store_exc:
                log.error("could not record the failure of %s: %s", cmd.id, store_exc)
        return Reply(cmd.id, False, exc.code, exc.message, positions)

    def _state(self, cmd: Command) -> ContainerState:
        return self.ctx.container(validate_container_id(cmd.container))

    # -- create / start ------------------------------------------------------------

    def create(self, cmd: Command) -> Result:
        args = dict(cmd.args)
        name = args.pop("name", None)
        cid = new_container_id()
        name = validate_name(name) if name is not None else f"berth-{cid[:12]}"
        spec = RunSpec.from_data(args).validate()
        # A name in use is refused by the append (AlreadyExists), which then
        # discards the runtime container: no read on the success path.
        with self.ctx.locks.hold(cid):
            paths = self.ctx.runtime.paths(cid)
            created = self.ctx.runtime.create(cid, spec, name=name)
            events: list[ev.Event] = [
                ev.ContainerCreated(name=name, node=self.ctx.node, bundle=paths.bundle, spec=spec),
                ev.PidReceived(pid=created.pid, conmon_pid=created.conmon_pid),
            ]
            try:
                recorded = self.ctx.append(cid, 0, events, cmd)
            except BerthError:
                self._discard(cid)
                raise
        return recorded, {"id": cid, "name": name, "node": self.ctx.node}

    def _discard(self, cid: str) -> None:
        try:
            self.ctx.runtime.delete(cid, force=True)
        except BerthError:
            pass
        self.ctx.runtime.cleanup(cid)

    def start(self, cmd: Command) -> Result:
        state = self._state(cmd)
        with self.ctx.locks.hold(state.id):
            state = self.ctx.container(state.id)
            events: list[ev.Event] = []
            if state.state == EXITED:
                # podman semantics: starting an exited container runs it again.
                try:
                    self.ctx.runtime.delete(state.id, force=True)
                except NotFound:
                    pass
                created = self.ctx.runtime.create(state.id, state.spec, name=state.name)
                events.append(ev.PidReceived(pid=created.pid, conmon_pid=created.conmon_pid))
            elif state.state != CREATED:
                raise InvalidState(f"container {state.name} is {state.state}; it cannot be started")
            act_unless_done(self.ctx, state.id, self.ctx.runtime.start, Status.RUNNING)
            events.append(ev.Started())
            recorded = self.ctx.append(state.id, state.version, events, cmd)
        return recorded, {"id": state.id}

    # -- signals ---------------------------------------------------------------------

    def stop(self, cmd: Command) -> Result:
        timeout = _number(cmd.args, "timeout", 10)
        state = self._state(cmd)
        if state.state == PAUSED:
            raise InvalidState(f"container {state.name} is paused: unpause it before stopping")
        if state.state not in (RUNNING,):
            return [], {"id": state.id, "state": state.state}
        with self.ctx.locks.hold(state.id):
            state = self.ctx.container(state.id)
            recorded = self.ctx.append(state.id, state.version, [ev.StopRequested(int(timeout))], cmd)
        assert state.pid is not None
        self.ctx.runtime.stop(state.id, state.pid, stop_signal=state.spec.stop_signal, timeout=timeout)
        recorded += record_exit(self.ctx, state.id, wait=True)
        after = self.ctx.latest(state.id)
        return recorded, {"id": state.id, "exit_code": after.exit_code}

    def kill(self, cmd: Command) -> Result:
        signal = parse_signal(cmd.args.get("signal", "KILL"))
        state = self._state(cmd)
        with self.ctx.locks.hold(state.id):
            state = self.ctx.container(state.id)
            if state.state not in (RUNNING, PAUSED):
                raise InvalidState(f"container {state.name} is {state.state}, not running")
            self.ctx.runtime.kill(state.id, signal)
            recorded = self.ctx.append(state.id, state.version, [ev.Signalled(signal)], cmd)
        return recorded, {"id": state.id, "signal": signal}

    def pause(self, cmd: Command) -> Result:
        return self._transition(cmd, RUNNING, self.ctx.runtime.pause, ev.Paused(), Status.PAUSED)

    def unpause(self, cmd: Command) -> Result:
        return self._transition(cmd, PAUSED, self.ctx.runtime.unpause, ev.Unpaused(), Status.RUNNING)

    def _transition(self, cmd: Command, required: str, action: Callable[[str], None], event: ev.Event,
                    reached: Status) -> Result:
        state = self._state(cmd)
        with self.ctx.locks.hold(state.id):
            state = self.ctx.container(state.id)
            if state.state != required:
                raise InvalidState(f"container {state.name} is {state.state}, not {required}")
            act_unless_done(self.ctx, state.id, action, reached)
            recorded = self.ctx.append(state.id, state.version, [event], cmd)
        return recorded, {"id": state.id}

    # -- exec --------------------------------------------------------------------------

    def exec(self, cmd: Command) -> Result:
        argv = _strings(cmd.args, "cmd")
        if not argv:
            raise InvalidArgument("must provide a command to execute")
        env = _strings(cmd.args, "env")
        cwd = cmd.args.get("cwd") or ""
        user = cmd.args.get("user") or ""
        if not isinstance(cwd, str) or not isinstance(user, str):
            raise InvalidArgument("exec cwd and user must be strings")
        session = validate_session_id(cmd.args.get("session_id") or new_uuid())
        tty = _flag(cmd.args, "tty")
        state = self._state(cmd)
        interrupted = self._interrupted_exec(cmd, state)
        if interrupted is not None:
            return interrupted
        if state.state != RUNNING:
            raise InvalidState(f"container {state.name} is {state.state}: exec needs a running container")
        recorded: list[ev.RecordedEvent] = []

        def started(pid: int) -> None:
            with self.ctx.locks.hold(state.id):
                now = self.ctx.container(state.id)
                recorded.extend(self.ctx.append(
                    state.id, now.version, [ev.ExecStarted(session, tuple(argv), pid)], cmd, step="started",
                ))

        result = self.ctx.runtime.exec(
            state.id, argv, session_id=session, env=env, cwd=cwd, user=user, tty=tty,
            no_new_privileges=state.spec.no_new_privileges, on_start=started,
        )
        if not recorded:
            started(result.pid)
        with self.ctx.locks.hold(state.id):
            now = self.ctx.container(state.id)
            recorded += self.ctx.append(state.id, now.version, [ev.ExecExited(session, result.exit_code)], cmd)
        output = result.output[-MAX_EXEC_OUTPUT:].decode(errors="replace")
        return recorded, {"exit_code": result.exit_code, "output": output, "session_id": session}

    def _interrupted_exec(self, cmd: Command, state: ContainerState) -> Result | None:
        """A resend of an exec whose session had started when the worker died.

        Running it again would run the command twice; its exit code died with the
        worker. So the session is closed in the log with exit code -1 and the reply
        says it was interrupted.
        """
        prior = self.ctx.store.outcome(system_command_id(cmd.id, "started"))
        if prior is None:
            return None
        session = next(
            (r.event.session_id for r in self.ctx.store.read_stream(state.id)
             if r.metadata.position in prior.positions and isinstance(r.event, ev.ExecStarted)),
            "",
        )
        with self.ctx.locks.hold(state.id):
            now = self.ctx.container(state.id)
            recorded = self.ctx.append(state.id, now.version, [ev.ExecExited(session, -1)], cmd)
        return recorded, {"exit_code": -1, "output": "", "session_id": session, "interrupted": True}

    # -- checkpoint / restore ----------------------------------------------------------

    def checkpoint(self, cmd: Command) -> Result:
        leave = _flag(cmd.args, "leave_running")
        tcp = _flag(cmd.args, "tcp_established")
        state = self._state(cmd)
        with self.ctx.locks.hold(state.id):
            state = self.ctx.container(state.id)
            if state.state != RUNNING:
                raise InvalidState(f"container {state.name} is {state.state}: only a running container can be checkpointed")
            image = self.ctx.runtime.checkpoint(state.id, leave_running=leave, tcp_established=tcp)
            events: list[ev.Event] = [ev.Checkpointed(image, leave, tcp)]
            if not leave:
                found = wait_exit_file(self.ctx.runtime.paths(state.id).exit_file, first_wait=0.05, steps=10)
                code = found.exit_code if found else -1
                events.append(ev.Exited(code, found.finished_at if found else None, True, "checkpoint"))
            recorded = self.ctx.append(state.id, state.version, events, cmd)
        return recorded, {"id": state.id, "image_path": image}

    def restore(self, cmd: Command) -> Result:
        tcp = _flag(cmd.args, "tcp_established")
        state = self._state(cmd)
        with self.ctx.locks.hold(state.id):
            state = self.ctx.container(state.id)
            if state.state != EXITED or not state.checkpoint_path:
                raise InvalidState(f"container {state.name} is {state.state} and has no checkpoint to restore")
            created = self.ctx.runtime.restore(
                state.id, state.spec, name=state.name, image_path=state.checkpoint_path, tcp_established=tcp,
            )
            recorded = self.ctx.append(state.id, state.version, [ev.Restored(created.pid, created.conmon_pid)], cmd)
        return recorded, {"id": state.id, "pid": created.pid}

    # -- remove --------------------------------------------------------------------------

    def remove(self, cmd: Command) -> Result:
        force = _flag(cmd.args, "force")
        state = self._state(cmd)
        recorded: list[ev.RecordedEvent] = []
        if state.state in ALIVE and state.state != CREATED:
            if not force:
                raise InvalidState(f"container {state.name} is {state.state}: stop it first or use --force")
            if state.state == PAUSED:
                self.ctx.runtime.unpause(state.id)
            if state.pid:
                self.ctx.runtime.stop(state.id, state.pid, timeout=0)
            recorded += record_exit(self.ctx, state.id, wait=True)
        with self.ctx.locks.hold(state.id):
            state = self.ctx.container(state.id)
            if state.removed:
                return recorded, {"id": state.id}
            try:
                self.ctx.runtime.delete(state.id, force=True)
            except NotFound:
                pass
            self.ctx.runtime.cleanup(state.id)
            recorded += self.ctx.append(state.id, state.version, [ev.Removed()], cmd)
        return recorded, {"id": state.id}
