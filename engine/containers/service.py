"""The application core's one path for changing a container.

``ContainerService.handle`` takes a typed command and its causation (who asked, on
whose behalf), takes the container's lock, loads its state, asks ``engine.containers.decide``
for a plan, drives the runtime through the plan's steps and appends what happened.
It knows nothing of the bus: the worker process hands it typed commands and turns
its outcomes into replies.

Recording an exit has exactly one entry point, ``record_exit``: the inotify exit
monitor, the conmon watcher, start-up reconciliation and the commands that cause an
exit (stop, remove -f) all call it, and under the container's lock only a container
the log still has alive gets an exit, so whichever path comes second writes nothing.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from engine import commands as c
from engine import events as ev
from engine.command_types import CHANGE_COMMANDS, CHECKPOINT
from engine.commands import system_command_id as system_command_id  # noqa: PLC0414 (re-export)
from engine.containers import copying
from engine.containers import decide as d
from engine.containers.process import resolve_user
from engine.containers.projection import ALIVE, EXITED, RUNNING, ContainerState, apply
from engine.containers.spec import RunSpec
from engine.errors import (
    AlreadyExists,
    BerthError,
    InvalidArgument,
    NotFound,
    Refused,
    RuntimeFailure,
    StateUnwritable,
    StoreError,
    WrongNode,
    error_from_code,
)
from engine.faults import crash_point
from engine.ids import is_full_id, new_container_id
from engine.inroot import Root
from engine.locks import ContainerLocks
from engine.networks import rules as nw
from engine.runtime.exitfile import ExitStatus
from engine.runtime.interface import Runtime
from engine.runtime.types import MAX_EXEC_OUTPUT, Status
from engine.store.caused import CausedWrites
from engine.store.recorder import CommandOutcome
from engine.store.store import EventStore

if TYPE_CHECKING:
    from engine.volumes.service import VolumeService

log = logging.getLogger("berth.service")

KEEP_EXEC_SESSIONS = 8
"""Ended exec sessions whose files (output tail, exit code) are kept per container."""
NOT_RECORDED = (InvalidArgument, NotFound, AlreadyExists, StoreError)
"""Refusals that write nothing: bad input, an unknown container, an unreachable store."""

Observer = Callable[[Sequence[ev.RecordedEvent]], None]


class RootfsProvider(Protocol):
    """Root filesystems of containers made from images (``engine.images.service``)."""

    def prepare(self, container_id: str, spec: RunSpec) -> RunSpec: ...

    def release(self, container_id: str) -> None: ...

    def remount(self, container_id: str, spec: RunSpec) -> None: ...


def _exec_user(state: ContainerState, user: str) -> str:
    """An exec's user as numbers, read from the container's own /etc/passwd and
    /etc/group (inside its root), as its first process's was: a name must be there, and
    a bare uid gets the primary group its line gives, not 0. Empty: the container's."""
    if not user:
        return ""
    resolved = resolve_user(state.spec.rootfs, user)
    return f"{resolved.uid}:{resolved.gid}"


def _stdio_options(command: c.Exec) -> dict[str, Any]:
    """The interactive-stdio options of an exec session, only when asked for."""
    options: dict[str, Any] = {}
    if command.stdin:
        options["stdin"] = True
    if command.tty and all(command.console):
        options["console"] = command.console
    if command.streamed:
        options["streamed"] = True
    return options


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a command recorded and what its reply says.

    A resent command id gets the outcome its first attempt recorded: ``replayed``
    holds those positions, and ``error`` the failure it recorded, if it failed.
    """

    recorded: tuple[ev.RecordedEvent, ...]
    result: dict[str, Any]
    replayed: tuple[int, ...] | None = None
    error: BerthError | None = None

    @property
    def positions(self) -> tuple[int, ...]:
        if self.replayed is not None:
            return self.replayed
        return tuple(r.position for r in self.recorded)


@dataclass
class ContainerService:
    """Changes the containers of one node: one writer for each of their streams."""

    store: EventStore
    runtime: Runtime
    node: str
    locks: ContainerLocks = field(default_factory=ContainerLocks)
    changed: threading.Condition = field(default_factory=threading.Condition)
    closing: threading.Event = field(default_factory=threading.Event)
    """Set when the worker stops: blocked reads (waits, log long-polls) end at once
    with a retryable error instead of holding the shutdown up."""
    observers: list[Observer] = field(default_factory=list)
    """Called with every batch of committed events (publishing, the conmon watcher);
    an observer must not raise and must not block."""
    _states: dict[str, ContainerState] = field(default_factory=dict)
    volumes: VolumeService | None = None
    """The node's named volumes: a create provides the ones its spec mounts."""
    images: RootfsProvider | None = None
    """Mounts the root filesystem of a container made from an image (engine.images)."""

    @property
    def system_actor(self) -> str:
        return f"berth-worker@{self.node}"

    @property
    def writes(self) -> CausedWrites:
        """Appends under a causation, as every feature's service makes them."""
        return CausedWrites(self.store, self.node, self.announce)

    # -- state -----------------------------------------------------------------------

    def container(self, container_id: str) -> ContainerState:
        """The container's current state; NotFound unless it lives on this node.

        The service is the only writer of its node's streams, so it keeps the states
        its own appends produced (folded with the same pure projection) instead of
        reading the read model back before every decision.
        """
        state = self._states.get(container_id)
        if state is None:
            state = self.store.get_container(container_id)
            if state.node != self.node:
                raise WrongNode(f"container {container_id} lives on node {state.node!r}, "
                                f"not {self.node!r}", state.node)
            self._states[container_id] = state
        if state.removed:
            raise NotFound(f"no such container: {container_id}")
        return state

    def resolve(self, ref: str) -> str:
        """The full id of the container ``ref`` names (an id, a unique id prefix or a
        name) if it lives on this node; ``WrongNode`` naming its node otherwise.

        Publishers send a container command with the reference they were given, so a
        command takes one round trip; the worker resolves it here.
        """
        cid = ref if is_full_id(ref) and ref in self._states else self.store.resolve(ref)
        self.container(cid)
        return cid

    def latest(self, container_id: str) -> ContainerState:
        """The newest state, removed containers included (for waits and replies)."""
        state = self._states.get(container_id)
        if state is not None:
            return state
        return self.store.get_container(container_id, include_removed=True)

    def forget(self, container_id: str) -> None:
        """Drop the kept state; the next read goes to the store."""
        self._states.pop(container_id, None)

    def _remember(self, container_id: str, expected_version: int,
                  recorded: Sequence[ev.RecordedEvent]) -> None:
        if not recorded or recorded[0].metadata.stream_version != expected_version + 1:
            # A replayed outcome (recorded before): the events are not new.
            self.forget(container_id)
            return
        state = self._states.get(container_id)
        for r in recorded:
            state = apply(state, r)
        if state is None:
            self.forget(container_id)
        else:
            self._states[container_id] = state

    # -- appending -------------------------------------------------------------------

    def append(self, container_id: str, expected_version: int, events: Sequence[ev.Event],
               causation: c.Causation | None = None, *, step: str | None = None,
               system: tuple[object, ...] = (), system_type: str = "system",
               ) -> list[ev.RecordedEvent]:
        """Append, then tell the observers after the commit and wake the waiters.

        A command that records in several steps (exec: started, then exited) passes
        ``step`` for all but its last append: that step gets an id derived from the
        command's, so each append stays idempotent on its own. Events no command
        caused pass ``system``: the parts of their deterministic id.
        """
        if causation is None:
            causation = c.Causation(system_command_id(*(system or (container_id,
                                                                   expected_version))),
                                    "", self.system_actor, system_type)
        elif step:
            causation = c.Causation(system_command_id(causation.command_id, step),
                                    causation.correlation_id, causation.actor,
                                    f"{causation.command_type}:{step}")
        try:
            recorded = self.writes.append(container_id, expected_version, events, causation,
                                          announce=False)  # announced once remembered
        except BaseException:
            self.forget(container_id)
            raise
        self._remember(container_id, expected_version, recorded)
        self.announce(recorded)
        return recorded

    def begin_shutdown(self) -> None:
        """Wake every blocked read so it answers "retry" (``closing``); commands under
        way carry on, and exits keep being recorded until the worker closes."""
        self.closing.set()
        with self.changed:
            self.changed.notify_all()

    def announce(self, recorded: Sequence[ev.RecordedEvent]) -> None:
        for observe in self.observers:
            observe(recorded)
        with self.changed:
            self.changed.notify_all()

    # -- commands --------------------------------------------------------------------

    def handle(self, command: c.ContainerCommand, causation: c.Causation) -> Outcome:
        """Carry out one command once: a command id already recorded gets its outcome
        replayed (a resend after a lost reply, or after a worker restart)."""
        done = self.writes.done(causation)
        if done is not None:
            # A command that recorded its intent first has its end under a step id.
            final = self.store.outcome(system_command_id(causation.command_id, "done"))
            resumed = (self._resume(command, causation, done)
                       if done.ok and final is None else None)
            if resumed is not None:
                return resumed
            done = final or done
            if done.ok:
                return Outcome((), self._replayed_result(command, done),
                               replayed=tuple(done.positions))
            return Outcome((), {}, replayed=tuple(done.positions),
                           error=error_from_code(done.error_code or "internal",
                                                 done.message or ""))
        if isinstance(command, c.Create):
            return self._create(command, causation)
        if isinstance(command, c.Exec):
            return self._exec(command, causation)
        cid = self.resolve(command.container)
        command = replace(command, container=cid)
        if isinstance(command, c.Checkpoint):
            command = replace(command, image_path=self.runtime.checkpoint_dir(
                cid, causation.command_id))
        with self.locks.hold(cid):
            # An exit conmon has written that the monitors have not recorded yet
            # (they lag under load): recorded first, so the rules see the container
            # as it is, and a stop or ``rm -f`` of a process that ended on its own
            # does not record a stop that never happened (nor call its exit "stop").
            self.record_exit(cid)
            state = self.container(cid)
            if isinstance(command, c.CopyIn):  # into or as: judged once, in the intent
                with self.copy_root(state) as root:
                    command = replace(command, path=copying.landing(root, command.path))
            plan = d.decide(state, command)
            if plan.noop:
                return Outcome((), plan.result)
            return self._carry_out(state, command, plan, causation)

    def _replayed_result(self, command: c.ContainerCommand,
                         done: CommandOutcome) -> dict[str, Any]:
        """The reply to a command carried out before. The stream tells a retried create
        which container it made; an exec's recorded end tells how its session ended
        (with its output while the session's files are kept)."""
        result: dict[str, Any] = {"replayed": True, "id": done.stream, "node": self.node}
        if isinstance(command, c.Exec) and done.stream:
            result.update(self._exec_replayed(done.stream, done.positions))
        return result

    def _resume(self, command: c.ContainerCommand, causation: c.Causation,
                done: CommandOutcome) -> Outcome | None:
        """Finish a command whose first attempt recorded its intent and then lost its
        worker (``decide.resume``); None: the recorded outcome is the answer."""
        if not isinstance(command, d.RESUMABLE) or not done.positions or not done.stream:
            return None
        cid = done.stream  # the container the first attempt changed, whatever the reference
        command = replace(command, container=cid)
        with self.locks.hold(cid):
            try:
                state = self.container(cid)
            except NotFound:
                if isinstance(command, c.CopyIn):  # not "ok": its files were never written
                    raise NotFound(f"container {cid[:12]} was removed before this copy was "
                                   "written: nothing was copied") from None
                return None
            stream = self.store.read_stream(cid)
            last = max(done.positions)
            first = [r for r in stream if r.metadata.position in done.positions]
            since = [r for r in stream if r.metadata.position > last]
            try:
                resumed = d.resume(state, command, first, since, datetime.now(UTC))
            except Refused as exc:  # it cannot be finished: that is its end
                self._record_end_failure(cid, causation, exc)
                raise
            if resumed is None:
                return None
            log.warning("%s %s was cut short by a worker's death: finishing it",
                        causation.command_type, causation.command_id)
            again, plan = resumed
            outcome = self._carry_out(state, again, plan, causation, resumed=True)
        return replace(outcome, replayed=(*done.positions, *outcome.positions))

    def fail(self, command_type: str, container: str | None, causation: c.Causation,
             exc: BerthError) -> tuple[int, ...]:
        """Record that a command failed (``command.failed``), so "no lost command" holds
        for failures too and a resend gets the same answer. Bad input, an unknown
        container or a store away are not recorded. A refusal by the rules
        (``Refused``: nothing ran) is recorded as ``command.refused`` outside the
        container's stream, so its version and state stay as they were."""
        if command_type not in CHANGE_COMMANDS or isinstance(exc, NOT_RECORDED):
            return ()
        done = self.store.outcome(causation.command_id)
        if done is not None:  # recorded where it happened (a create, against its new id)
            return tuple(done.positions)
        if not container:
            return ()
        try:  # the publisher may have named it: record against its id
            container = self.store.resolve(container)
        except BerthError:
            pass
        refused = isinstance(exc, Refused)
        record = self.store.record_refusal if refused else self.store.record_failure
        try:
            recorded = record(
                causation.command_id, command_type, container, exc.code, exc.message,
                correlation_id=causation.correlation_id, actor=causation.actor, node=self.node,
            )
        except BerthError as store_exc:
            log.error("could not record the failure of %s: %s", causation.command_id, store_exc)
            return ()
        if not refused:
            self.forget(container)
        self.announce(recorded)
        return tuple(r.position for r in recorded)

    def _create(self, command: c.Create, causation: c.Causation) -> Outcome:
        cid = new_container_id()
        plan = d.decide(None, command)
        # A name in use is refused by the append (AlreadyExists), which then discards
        # the runtime container: no read on the success path.
        with self.locks.hold(cid):
            try:
                if command.spec.image and not command.spec.rootfs:
                    command = replace(command, spec=self._image_rootfs(cid, command.spec))
                    plan = d.decide(None, command)
                # Volumes after the image's root filesystem is mounted: a new volume is
                # filled from what the image has at its target.
                with self._volumes_for(command.spec, causation):
                    created = self.runtime.create(cid, command.spec,
                                                  name=command.name or d.default_name(cid))
                    facts = d.Facts(container_id=cid, node=self.node,
                                    bundle=self.runtime.bundle_path(cid), created=created)
                    events = plan.then(facts)
                    if created.network is not None:  # networks
                        events = (*events, nw.attached_event(created.network))
                    recorded = self.append(cid, 0, events, causation)
            except BerthError as exc:
                # A create the runtime refused leaves no files, and its failure is
                # recorded against the id the container would have had (a create by
                # no name has no other stream to hold it).
                self.discard(cid)
                if isinstance(exc, AlreadyExists) and command.name:
                    exc = self._name_in_use(command.name, exc)
                self.fail(causation.command_type, cid, causation, exc)
                raise exc from None
            except BaseException:
                self.discard(cid)
                raise
        created_event = recorded[0].event
        assert isinstance(created_event, ev.ContainerCreated)
        return Outcome(tuple(recorded), {"id": cid, "name": created_event.name, "node": self.node})

    def _name_in_use(self, name: str, exc: AlreadyExists) -> AlreadyExists:
        """The store's refusal of a taken name, saying who holds it, as podman does:
        the user's next step is to remove that container or pick another name."""
        try:
            holder = self.store.resolve(name)
        except BerthError:
            return exc  # the holder went meanwhile: the store's own words
        return AlreadyExists(f'the container name "{name}" is already in use by {holder}: '
                             "remove it or choose another name")

    def _volumes_for(self, spec: RunSpec, causation: c.Causation) -> AbstractContextManager[None]:
        """The named volumes a new container mounts, made and held until it is recorded."""
        if self.volumes is None or not spec.mounts:
            return nullcontext()
        return self.volumes.provide(spec, causation)

    def discard(self, cid: str) -> None:
        """Take away what a failed create made: the runtime's container and files, and
        the overlay of its image (unmounted whatever the rest did)."""
        try:
            try:
                self.runtime.delete(cid, force=True)
            except BerthError:
                pass
            self.runtime.cleanup(cid)
        finally:
            if self.images is not None:
                self.images.release(cid)

    def _image_rootfs(self, cid: str, spec: RunSpec) -> RunSpec:
        if self.images is None:
            raise InvalidArgument("this node has no image store: give a root filesystem "
                                  "directory")
        return self.images.prepare(cid, spec)

    def _carry_out(self, state: ContainerState, command: c.ContainerCommand, plan: d.Plan,
                   causation: c.Causation, *, resumed: bool = False) -> Outcome:
        """Run a plan under the container's lock (held by the caller). A command with
        an intent (recorded here, or by the first attempt when ``resumed``) records
        its end under the step id "done": the command's own id holds the intent."""
        cid = state.id
        recorded: list[ev.RecordedEvent] = []
        if plan.before:
            recorded += self.append(cid, state.version, plan.before, causation)
            crash_point(f"{causation.command_type}.intended")
        intended = bool(plan.before) or resumed
        facts = d.Facts(container_id=cid, node=self.node)
        try:
            for step in plan.steps:
                facts = self._step(step, state, command, facts)
                if step is d.Step.RECORD_EXIT:
                    recorded += self.record_exit(cid, wait=True)
        except BerthError as exc:
            if intended:
                self._failed_after_intent(state, causation, exc)
            if state.state == EXITED:  # a start that failed after its create joined
                with contextlib.suppress(BerthError):
                    self.release_network(cid)
            raise
        crash_point(f"{causation.command_type}.acted")
        events = plan.then(facts)
        now = self.latest(cid)
        if events and not now.removed:
            try:
                recorded += self.append(cid, now.version, events, causation,
                                        step="done" if intended else None)
            except (StoreError, StateUnwritable):
                self._undo(cid, plan.steps)
                raise
        return Outcome(tuple(recorded), self._result(command, self.latest(cid), facts, plan))

    def _undo(self, cid: str, steps: Sequence[d.Step]) -> None:
        """The store refused to record what the runtime just did: take it back where
        that is possible (``decide.UNDO``), so the log and the container still agree."""
        actions = {d.Step.PAUSE: self.runtime.pause, d.Step.UNPAUSE: self.runtime.unpause,
                   d.Step.DELETE: self._discard_restored}
        for step in reversed(steps):
            inverse = d.UNDO.get(step)
            if inverse is None:
                log.error("container %s: %s was done but could not be recorded; a resend "
                          "records it", cid, step.value)
                continue
            try:
                actions[inverse](cid)
                log.warning("container %s: undid %s, which the store refused to record",
                            cid, step.value)
            except BerthError as exc:
                log.error("container %s: could not undo %s: %s", cid, step.value, exc)

    def _discard_restored(self, cid: str) -> None:
        """Kill and forget a restored container whose restore the store did not record."""
        try:
            self.runtime.kill(cid, d.CONMON_LOST_SIGNAL, all_processes=True)
        except BerthError as exc:
            log.debug("killing the unrecorded restore of %s: %s", cid, exc)
        self.runtime.delete(cid, force=True)

    def _failed_after_intent(self, state: ContainerState, causation: c.Causation,
                             exc: BerthError) -> list[ev.RecordedEvent]:
        """A command whose intent is recorded failed in the runtime: undo what the
        failure left half-done (CRIU leaves a container it could not dump frozen), then
        record the failure as the command's end, so the intent does not stay open and
        a resend gets this answer."""
        cid = state.id
        if state.state == RUNNING and self._runtime_status(cid) is Status.PAUSED:
            try:
                self.runtime.unpause(cid)
                log.warning("thawed container %s after a failed %s", cid,
                            causation.command_type)
            except BerthError as thaw:
                log.error("could not thaw container %s: %s", cid, thaw)
        return self._record_end_failure(cid, causation, exc)

    def _record_end_failure(self, cid: str, causation: c.Causation,
                            exc: BerthError) -> list[ev.RecordedEvent]:
        try:
            recorded = self.store.record_failure(
                system_command_id(causation.command_id, "done"), causation.command_type, cid,
                exc.code, exc.message, correlation_id=causation.correlation_id,
                actor=causation.actor, node=self.node)
        except BerthError as store_exc:
            log.error("could not record the failure of %s: %s", causation.command_id, store_exc)
            return []
        self.forget(cid)
        self.announce(recorded)
        return list(recorded)

    def _runtime_status(self, cid: str) -> Status | None:
        try:
            return self.runtime.status(cid, known_stopped=True).status
        except BerthError:
            return None

    def _step(self, step: d.Step, state: ContainerState, command: c.ContainerCommand,
              facts: d.Facts) -> d.Facts:
        rt, cid = self.runtime, state.id
        match step:
            case d.Step.CREATE:
                if self.images is not None and state.spec.image_id:
                    self.images.remount(cid, state.spec)
                return replace(facts, created=rt.create(cid, state.spec, name=state.name))
            case d.Step.DELETE:
                try:
                    rt.delete(cid, force=True)
                except NotFound:
                    pass
            case d.Step.CLEANUP:
                rt.cleanup(cid)
                if self.images is not None:
                    self.images.release(cid)
            case d.Step.START | d.Step.PAUSE | d.Step.UNPAUSE:
                action = {d.Step.START: rt.start, d.Step.PAUSE: rt.pause,
                          d.Step.UNPAUSE: rt.unpause}[step]
                self._act_unless_done(cid, action, d.DONE_IF_REACHED[step])
            case d.Step.STOP:
                if state.pid:
                    timeout = command.timeout if isinstance(command, c.Stop) else 0
                    rt.stop(cid, state.pid, stop_signal=state.spec.stop_signal, timeout=timeout)
            case d.Step.COPY_IN:
                assert isinstance(command, c.CopyIn)
                with self.copy_root(state, remount=True) as root:
                    copying.unpack(root, command.path, command.data)
            case d.Step.KILL:
                assert isinstance(command, c.Kill)
                rt.kill(cid, command.signal)
            case d.Step.CHECKPOINT:
                assert isinstance(command, c.Checkpoint)
                image = rt.checkpoint(cid, image_path=command.image_path,
                                      leave_running=command.leave_running,
                                      tcp_established=command.tcp_established)
                exit_status = None if command.leave_running else rt.wait_exit(cid)
                return replace(facts, image_path=image, exit=exit_status)
            case d.Step.RESTORE:
                assert isinstance(command, c.Restore)
                if self.images is not None and state.spec.image_id:
                    self.images.remount(cid, state.spec)
                return replace(facts, created=rt.restore(
                    cid, state.spec, name=state.name, image_path=state.checkpoint_path,
                    tcp_established=command.tcp_established))
            case d.Step.UPDATE:
                assert isinstance(command, c.Update)
                rt.update(cid, memory=command.memory, pids_limit=command.pids_limit,
                          cpus=command.cpus)
            case d.Step.RECORD_EXIT | d.Step.EXEC:
                pass  # recorded by the caller / run outside the lock by _exec
        return facts

    def copy_root(self, state: ContainerState, *, remount: bool = False) -> Root:
        """Where ``berth cp`` works in a container: a live one's own root (its mount
        namespace: volumes, tmpfs and bind mounts as its processes see them), else its
        root filesystem. ``remount`` (under the container's lock): an image's overlay
        that a reboot unmounted is mounted again first, so a copy into it does not land
        in the empty directory beneath. The caller closes the root."""
        if state.pid and state.state in ALIVE:
            root = self.runtime.process_root(state.id, state.pid)
            if root is not None:
                return root
        if remount and self.images is not None and state.spec.image_id:
            self.images.remount(state.id, state.spec)
        return Root.open(state.spec.rootfs)

    def _act_unless_done(self, cid: str, action: Callable[[str], object],
                         reached: Status) -> None:
        """Run ``action``; if it fails but the runtime already reports ``reached``, an
        earlier attempt of this command did it before its worker died: record it now
        instead of failing, so the log catches up with reality."""
        try:
            action(cid)
        except BerthError as exc:
            try:
                status = self.runtime.status(cid, known_stopped=True).status
            except BerthError:
                raise exc from None
            if status != reached:
                raise
            log.warning("container %s is already %s (an earlier attempt did it): recording it",
                        cid, reached)

    @staticmethod
    def _result(command: c.ContainerCommand, after: ContainerState, facts: d.Facts,
                plan: d.Plan) -> dict[str, Any]:
        if plan.result:
            return dict(plan.result)
        match command:
            case c.Stop():
                return {"id": after.id, "exit_code": after.exit_code}
            case c.Checkpoint():
                return {"id": after.id, "image_path": facts.image_path}
            case c.Restore():
                return {"id": after.id, "pid": facts.created.pid if facts.created else None}
        return {"id": after.id}

    def _exec(self, command: c.Exec, causation: c.Causation) -> Outcome:
        """An exec session runs outside the container's lock (it may run for long, and
        a stop must not wait for it); its intent, start and end are recorded under it.

        The session is named after the command, so a resend (after a lost reply or a
        worker's death) finds the same session: it is never started a second time,
        and the reply carries its real exit code, read from what conmon recorded."""
        cid = self.resolve(command.container)
        session = command.session_id or system_command_id(causation.command_id, "session")
        command = replace(command, container=cid, session_id=session)
        recorded: list[ev.RecordedEvent] = []
        user: str | None = None
        with self.locks.hold(cid):
            state = self.container(cid)
            resumed = self.store.outcome(
                system_command_id(causation.command_id, "requested")) is not None
            progress = d.exec_progress(self.store.read_stream(cid), session)
            if not resumed:
                used = progress.requested is not None or progress.started \
                    or progress.exit_code is not None
                plan = d.decide_exec(state, command, used)
                user = _exec_user(state, command.user)  # a name it lacks: refused unrecorded
                recorded += self.append(cid, state.version, plan.before, causation,
                                        step="requested")
        crash_point("container.exec.intended")
        if progress.exit_code is not None:
            # Settled while no worker waited for it (reconciliation): never run it again.
            tail = self.runtime.exec_wait(cid, session, timeout=0).output \
                if self.runtime.exec_session(cid, session).exit_code is not None else b""
            return Outcome(tuple(recorded), self._exec_reply(progress.exit_code, tail, session))
        try:
            pid = self.runtime.exec_start(
                cid, command.argv, session_id=session, env=command.env, cwd=command.cwd,
                user=user if user is not None else _exec_user(state, command.user),
                tty=command.tty,
                no_new_privileges=state.spec.no_new_privileges,
                **_stdio_options(command))
        except BerthError:
            # Nothing ran: close the session the intent opened, then report the failure.
            recorded += self._close_exec(cid, session, 0, -1, causation, step="not-started")
            raise
        if pid is None:  # an earlier attempt claimed it: follow that process instead
            pid = self.runtime.exec_session(cid, session).pid
        if pid:
            recorded += self._record_exec_started(cid, command, session, pid, causation)
        crash_point("container.exec.started")
        result = self.runtime.exec_wait(cid, session)
        recorded += self._close_exec(cid, session, result.pid or pid or 0, result.exit_code,
                                     causation)
        output = b"" if command.streamed else result.output  # streamed: never buffered
        return Outcome(tuple(recorded), self._exec_reply(result.exit_code, output, session))

    def _exec_replayed(self, cid: str, positions: Sequence[int]) -> dict[str, Any]:
        """An exec's reply again: its recorded exit code, and its output while the
        session's files are still kept."""
        ended = [r.event for r in self.store.read_stream(cid)
                 if r.metadata.position in positions and isinstance(r.event, ev.ExecExited)]
        if not ended:
            return {}
        session, code = ended[0].session_id, ended[0].exit_code
        found = self.runtime.exec_session(cid, session)
        tail = (self.runtime.exec_wait(cid, session, timeout=0).output
                if found.exit_code is not None else b"")
        return self._exec_reply(code, tail, session)

    @staticmethod
    def _exec_reply(code: int, output: bytes, session: str) -> dict[str, Any]:
        return {"exit_code": code,
                "output": output[-MAX_EXEC_OUTPUT:].decode(errors="replace"),
                "session_id": session}

    def _record_exec_started(self, cid: str, command: c.Exec, session: str, pid: int,
                             causation: c.Causation) -> list[ev.RecordedEvent]:
        with self.locks.hold(cid):
            try:
                now = self.container(cid)
            except NotFound:
                return []
            progress = d.exec_progress(self.store.read_stream(cid), session)
            if progress.started or progress.exit_code is not None:
                return []
            return self.append(cid, now.version, [d.exec_started(command, session, pid)],
                               causation, step="started")

    def _close_exec(self, cid: str, session: str, pid: int, code: int,
                    causation: c.Causation | None, *, step: str | None = None
                    ) -> list[ev.RecordedEvent]:
        """Record a session's end once, whichever path learnt it first. The files of the
        last few ended sessions are kept (a resend's reply still carries the output),
        older ones go, so sessions do not pile up on disk."""
        recorded = self._record_exec_end(cid, session, pid, code, causation, step)
        self.runtime.exec_prune(cid, KEEP_EXEC_SESSIONS)
        return recorded

    def _record_exec_end(self, cid: str, session: str, pid: int, code: int,
                         causation: c.Causation | None, step: str | None
                         ) -> list[ev.RecordedEvent]:
        with self.locks.hold(cid):
            try:
                now = self.latest(cid)
            except NotFound:
                return []
            if now.removed:
                return []
            progress = d.exec_progress(self.store.read_stream(cid), session)
            events = d.exec_end_events(progress, session, pid, code)
            if not events:
                return []
            if causation is not None:
                return self.append(cid, now.version, events, causation, step=step)
            return self.append(cid, now.version, events,
                               system=(cid, session, "exec-exit"), system_type="container.exec")

    def finish_exec(self, container_id: str, session_id: str) -> list[ev.RecordedEvent]:
        """Wait for a session that outlived its worker and record its real exit code
        (started for each session reconciliation found still running)."""
        result = self.runtime.exec_wait(container_id, session_id)
        return self._close_exec(container_id, session_id, result.pid, result.exit_code, None)

    def settle_execs(self, state: ContainerState) -> tuple[int, list[str]]:
        """Reconcile the exec sessions the log has open for a container: record the
        exit codes conmon wrote meanwhile, close sessions that never started or whose
        conmon died without a code (-1), and return the ones still running."""
        settled, running = 0, []
        for session in state.exec_sessions:
            found = self.runtime.exec_session(state.id, session)
            match d.settle_exec(found):
                case d.SettleExec.RECORD_EXIT:
                    settled += bool(self._close_exec(state.id, session, found.pid,
                                                     found.exit_code if found.exit_code
                                                     is not None else -1, None))
                case d.SettleExec.NEVER_STARTED | d.SettleExec.LOST:
                    log.warning("exec session %s of %s ended with no exit code (%s)",
                                session, state.id, d.settle_exec(found).value)
                    settled += bool(self._close_exec(state.id, session, found.pid, -1, None))
                case d.SettleExec.WAIT:
                    running.append(session)
        return settled, running

    # -- exits: the one entry point ---------------------------------------------------

    def record_exit(self, container_id: str, *, status: ExitStatus | None = None,
                    wait: bool = False, reason: str | None = None) -> list[ev.RecordedEvent]:
        """Append the container's exit if the log still has it alive; return what was
        written. ``status`` None: read conmon's exit file (``wait``: give conmon a
        bounded moment to write it). ``reason`` overrides the reason judged from the
        stream, for exits the caller knows more about (a lost conmon)."""
        with self.locks.hold(container_id):
            try:
                state = self.container(container_id)
            except NotFound:
                return []
            if state.state not in ALIVE:
                return []
            if status is None:
                status = self.runtime.exit_status(container_id)
                if status is None and wait:
                    status = self.runtime.wait_exit(container_id)
                if status is None:
                    return []
            records = self.store.read_stream(container_id)
            if d.pending_checkpoint(records) is not None:
                # A checkpoint whose end the store did not take (or whose worker died):
                # the exit is CRIU's doing if the image is complete; settle that first.
                settled = self.settle_checkpoint(container_id)
                if settled:
                    after = self.latest(container_id)
                    if after.state not in ALIVE:
                        if d.auto_remove_due(after):
                            settled += self.auto_remove(container_id)
                        return settled
                records = self.store.read_stream(container_id)
                state = self.container(container_id)
            stream = (r.event for r in records)
            exited = d.exit_event(state, stream, status, reason)
            if exited is None:
                return []
            recorded = self.append(container_id, state.version, [exited],
                                   system=(container_id, "exit", state.version),
                                   system_type="container.exit")
            recorded += self.release_network(container_id)
        if d.auto_remove_due(self.latest(container_id)):
            recorded += self.auto_remove(container_id)
        return recorded

    def release_network(self, container_id: str) -> list[ev.RecordedEvent]:
        """Give back the network of a container that ended (``decide.
        network_release_due``): CNI DEL, its namespace and files, the other members'
        /etc/hosts; recorded as ``container.network_detached`` first, so the log never
        shows an address held that is not. The exit that made it due is the intent: a
        worker that dies in between leaves the release to recovery, which calls this
        again (it records the release once and repeats the rest harmlessly)."""
        with self.locks.hold(container_id):
            try:
                state = self.container(container_id)
            except NotFound:
                return []
            if not d.network_release_due(state):
                return []
            held, attachment = self.runtime.network_held(container_id)
            if not held:
                return []
            recorded: list[ev.RecordedEvent] = []
            if attachment is not None and not d.network_released(
                    r.event for r in self.store.read_stream(container_id)):
                recorded = self.append(container_id, state.version,
                                       [nw.detached_event(attachment)],
                                       system=(container_id, "network-release", state.version),
                                       system_type="container.network_release")
            crash_point("container.network.detached")
            self.runtime.release_network(container_id)
            return recorded

    def record_lost(self, container_id: str, reason: str = "unknown") -> list[ev.RecordedEvent]:
        """The runtime no longer knows a container the log has alive, and no exit file
        exists: record an exit with code -1."""
        return self.record_exit(container_id, status=ExitStatus(-1, datetime.now(UTC)),
                                reason=reason)

    def auto_remove(self, container_id: str) -> list[ev.RecordedEvent]:
        """``--rm``: delete the runtime container and its files, then record the removal."""
        with self.locks.hold(container_id):
            try:
                state = self.container(container_id)
            except NotFound:
                return []
            if not d.auto_remove_due(state):
                return []
            self.discard(container_id)
            return self.append(container_id, state.version, [ev.Removed()],
                               system=(container_id, "auto-remove", state.version),
                               system_type="container.remove")

    def process_alive(self, container_id: str) -> bool:
        try:
            status = self.runtime.status(container_id, known_stopped=True)
        except NotFound:
            return False
        return status.status in (Status.CREATED, Status.RUNNING, Status.PAUSED)

    def settle_checkpoint(self, container_id: str) -> list[ev.RecordedEvent]:
        """A checkpoint whose worker died during it: wait for its dump to end, then
        record from the image and the container what became of it (``decide.
        settle_checkpoint``): the image and the exit it caused, or the command's failure
        with the container left running (thawed if CRIU left it frozen)."""
        with self.locks.hold(container_id):
            state = self.container(container_id)
            pending = d.pending_checkpoint(self.store.read_stream(container_id))
            if pending is None or not isinstance(pending.event, ev.CheckpointRequested):
                return []
            intent, meta = pending.event, pending.metadata
            causation = c.Causation(meta.causation_id, meta.correlation_id, meta.actor,
                                    CHECKPOINT)
            dump = self.runtime.dump_report(intent.image_path)
            alive = self.process_alive(container_id)
            decision = d.settle_checkpoint(intent, dump, alive)
            log.warning("checkpoint %s of %s was interrupted by a worker crash: %s",
                        meta.causation_id, container_id, decision.value)
            if decision is d.SettleCheckpoint.CHECKPOINTED:
                exit_status = None if intent.leave_running else (
                    self.runtime.exit_status(container_id)
                    or self.runtime.wait_exit(container_id))
                return self.append(container_id, state.version,
                                   d.checkpointed_events(intent, exit_status), causation,
                                   step="done")
            return self._failed_after_intent(state, causation, RuntimeFailure(
                f"the checkpoint of container {container_id} was interrupted by a worker "
                "crash and left no complete image; the container was not checkpointed"))


