"""Decisions: what a command does to a container, as pure functions of its state.

Every transition rule of berth lives here, once: which states allow which command,
which events are recorded before the runtime acts (intent) and which after (facts
the runtime reported), why a container exited, when ``--rm`` removes, what to do
about a container whose conmon is gone, and what start-up reconciliation records.
Nothing here does I/O: ``engine.containers.service`` carries plans out, and the tests check
every (state, command) pair without a process in sight.

A plan's ``then`` builds the events that follow the runtime's actions from the facts
the runtime reported (a pid, a checkpoint image, an exit status); it is a pure
function too, kept next to the rule that asked for those actions.
"""

from __future__ import annotations

import enum
import hashlib
import signal as signals
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from engine import commands as c
from engine import events as ev
from engine.containers.projection import ALIVE, CREATED, EXITED, PAUSED, RUNNING, ContainerState
from engine.containers.spec import RunSpec
from engine.errors import InvalidArgument, NotFound, Refused
from engine.networks import rules as nw
from engine.runtime.types import (
    Created,
    DumpReport,
    ExecSession,
    ExitStatus,
    Status,
    StatusReport,
)


class Step(enum.Enum):
    """One runtime action of a plan, carried out in order by the service."""

    CREATE = "create"            # write the bundle, spawn conmon and runc create
    DELETE = "delete"            # runc delete --force (a container runc forgot is fine)
    START = "start"              # runc start (already running counts as done)
    STOP = "stop"                # stop signal, SIGKILL after the timeout
    KILL = "kill"                # deliver the command's signal
    PAUSE = "pause"              # (already paused counts as done)
    UNPAUSE = "unpause"          # (already running counts as done)
    EXEC = "exec"                # run a session; its start is recorded as it happens
    CHECKPOINT = "checkpoint"    # CRIU dump
    RESTORE = "restore"          # conmon --restore
    RECORD_EXIT = "record_exit"  # wait for the exit the plan caused and record it
    CLEANUP = "cleanup"          # remove the container's files
    UPDATE = "update"            # runc update: the command's resource limits
    COPY_IN = "copy_in"          # extract the command's tar into the root filesystem


UNDO: dict[Step, Step] = {
    Step.PAUSE: Step.UNPAUSE,
    Step.UNPAUSE: Step.PAUSE,
    Step.RESTORE: Step.DELETE,  # the image stays: the restore can be asked for again
}
"""Steps that can be taken back when the store refuses to record them, so every runtime
action is either recorded or undone. Others are recorded as intent first (kill,
checkpoint, stop, exec) or are caught up by a resend (``DONE_IF_REACHED``)."""


DONE_IF_REACHED: dict[Step, Status] = {
    Step.START: Status.RUNNING,
    Step.PAUSE: Status.PAUSED,
    Step.UNPAUSE: Status.RUNNING,
}
"""Steps an earlier attempt of the same command may have done before a crash: if the
runtime already reports this status when the step fails, the step counts as done."""


@dataclass(frozen=True, slots=True)
class Facts:
    """What the runtime reported while carrying out a plan."""

    container_id: str = ""
    node: str = ""
    bundle: str = ""
    created: Created | None = None
    image_path: str | None = None
    exit: ExitStatus | None = None
    exec_pid: int | None = None
    exec_exit_code: int | None = None


def _nothing(_facts: Facts) -> tuple[ev.Event, ...]:
    return ()


@dataclass(frozen=True, slots=True)
class Plan:
    """What one command does: events before acting, runtime steps, events after.

    ``then`` is empty for a command with nothing left to do (stopping a container that
    is not running); ``result`` holds what such a reply says.
    """

    steps: tuple[Step, ...] = ()
    before: tuple[ev.Event, ...] = ()
    then: Callable[[Facts], tuple[ev.Event, ...]] = _nothing
    result: dict[str, object] = field(default_factory=dict)

    @property
    def noop(self) -> bool:
        """Nothing to run and nothing to record (an update of the log alone records)."""
        return not self.steps and not self.before and self.then is _nothing


def default_name(container_id: str) -> str:
    return f"berth-{container_id[:12]}"


def _refuse_unless(state: ContainerState, allowed: Iterable[str], message: str) -> None:
    if state.state not in allowed:
        raise Refused(message)


def _pid_of(facts: Facts) -> ev.PidReceived:
    if facts.created is None:
        raise ValueError("a create step reports the pids it created")
    return ev.PidReceived(pid=facts.created.pid, conmon_pid=facts.created.conmon_pid)


def _attached(facts: Facts) -> tuple[ev.Event, ...]:
    if facts.created is None or facts.created.network is None:
        return ()
    return (nw.attached_event(facts.created.network),)


# --------------------------------------------------------------------------- commands


def decide(state: ContainerState | None, command: c.ContainerCommand) -> Plan:
    """The plan for ``command`` given the container's state (None: no container yet).

    Raises ``Refused`` (an ``InvalidState``: the state does not allow it) or
    ``NotFound`` (no such container); a refused command changes nothing.
    """
    if isinstance(command, c.Create):
        return _create(state, command)
    if state is None or state.removed:
        raise NotFound(f"no such container: {command.container}")
    match command:
        case c.Start():
            return _start(state)
        case c.Stop():
            return _stop(state, command)
        case c.Kill():
            return _kill(state, command)
        case c.Pause():
            _refuse_unless(state, (RUNNING,),
                           f"container {state.name} is {state.state}, not running")
            return Plan((Step.PAUSE,), then=lambda _f: (ev.Paused(),))
        case c.Unpause():
            _refuse_unless(state, (PAUSED,), f"container {state.name} is {state.state}, not paused")
            return Plan((Step.UNPAUSE,), then=lambda _f: (ev.Unpaused(),))
        case c.Exec():
            return decide_exec(state, command)
        case c.Checkpoint():
            return _checkpoint(state, command)
        case c.Restore():
            return _restore(state)
        case c.Remove():
            return _remove(state, command)
        case c.Update():
            return _update(state, command)
        case c.Rename():
            return _rename(state, command)
        case c.CopyIn():
            return _copy_in(command)
    raise TypeError(f"no rule for {type(command).__name__}")  # pragma: no cover - exhaustive


def _create(state: ContainerState | None, command: c.Create) -> Plan:
    if state is not None:
        raise Refused(f"container {state.name} already exists")

    def then(facts: Facts) -> tuple[ev.Event, ...]:
        name = command.name or default_name(facts.container_id)
        return (ev.ContainerCreated(name=name, node=facts.node, bundle=facts.bundle,
                                    spec=command.spec), _pid_of(facts))

    return Plan((Step.CREATE,), then=then)


def _start(state: ContainerState) -> Plan:
    if state.state == EXITED:
        # podman semantics: starting an exited container runs it again.
        # Its network went with its last exit (network_release_due): the create joins
        # it again, and the address it gets now is recorded as at its first create.
        return Plan((Step.DELETE, Step.CREATE, Step.START),
                    then=lambda f: (_pid_of(f), *_attached(f), ev.Started()))
    _refuse_unless(state, (CREATED,),
                   f"container {state.name} is {state.state}; it cannot be started")
    return Plan((Step.START,), then=lambda _f: (ev.Started(),))


def _stop(state: ContainerState, command: c.Stop) -> Plan:
    if state.state == PAUSED:
        raise Refused(f"container {state.name} is paused: unpause it before stopping")
    if state.state == EXITED and state.spec.restart != "no":
        # Nothing runs, but a restart policy may be waiting out its backoff: the
        # recorded stop tells it the container is to stay stopped (engine.restarts.rules).
        return Plan(before=(ev.StopRequested(int(command.timeout)),),
                    result={"id": state.id, "state": state.state})
    if state.state != RUNNING:
        return Plan(result={"id": state.id, "state": state.state})
    return Plan((Step.STOP, Step.RECORD_EXIT), before=(ev.StopRequested(int(command.timeout)),))


def _kill(state: ContainerState, command: c.Kill) -> Plan:
    _refuse_unless(state, (RUNNING, PAUSED),
                   f"container {state.name} is {state.state}, not running")
    # The signal is recorded before it is sent: a signal cannot be taken back, so a
    # store that refuses the record must refuse it before the process is hit.
    return Plan((Step.KILL,), before=(ev.Signalled(command.signal),),
                result={"id": state.id, "signal": command.signal})


def decide_exec(state: ContainerState, command: c.Exec, used_before: bool = False) -> Plan:
    """A new exec session: its intent (``exec_requested``) is recorded before its process
    can exist, so a worker that dies while starting it leaves a session the next one
    settles from the session's files instead of running it twice or losing its end.
    A session id names one session of a container for good (``used_before``: the stream
    has it already), so reusing one is refused rather than confused with the old one."""
    _refuse_unless(state, (RUNNING,),
                   f"container {state.name} is {state.state}: exec needs a running container")
    if not command.session_id:
        raise ValueError("the service names each exec session before deciding")
    if used_before:
        raise InvalidArgument(f"exec session id {command.session_id!r} was already used in "
                              f"container {state.name}: choose a new one")
    return Plan((Step.EXEC,), before=(ev.ExecRequested(command.session_id, command.argv),),
                then=_exec_exited(command))


RESUMABLE = (c.Stop, c.CopyIn, c.Remove)
"""Commands whose first attempt may record its intent and die before its end."""


def resume(state: ContainerState, command: c.ContainerCommand,
           first: Iterable[ev.RecordedEvent], since: Iterable[ev.RecordedEvent],
           now: datetime) -> tuple[c.ContainerCommand, Plan] | None:
    """A resent command id whose first attempt recorded an outcome but no end: None
    replays that outcome; a (command, plan) finishes what the first attempt left
    undone when its worker died.

    A stop: its intent (``stop_requested``, recorded under the command's id) precedes
    the stop signal, and its end (the exit) is recorded only once the container is
    gone. While no exit followed the intent (``since``: the stream after it) and the
    container runs, the resend goes on with what is left of the grace period, SIGKILL
    at once when it is over (the stop signal was sent).

    A copy in: its intent (``copied_in``) precedes the write, its end
    (``copy_finished``) follows it. The resend carries the same archive (its digest
    is in the intent) and writes it to the path the intent names (into a directory
    or as a new name, as the first attempt judged: ``copying.landing``); extracting
    an archive twice there leaves what once does, and the end, recorded once, closes
    the intent. A resend whose pieces are
    gone, or whose archive differs, is refused (the caller records that as the end).

    A forced remove of a live container: its stop intent precedes the kill, its end
    (``removed``) follows the delete; the resend stops what still runs and removes.
    """
    if isinstance(command, c.CopyIn):
        return _resume_copy(command, first)
    if isinstance(command, c.Remove):
        # ``rm -f`` of a live container: its stop intent is recorded, its end (the
        # removal) is not. Whatever the container is now, the removal goes on.
        if not any(isinstance(r.event, ev.StopRequested) for r in first):
            return None
        return command, replace(_remove(state, replace(command, force=True)), before=())
    if not isinstance(command, c.Stop) or state.state != RUNNING:
        return None
    intents = [(r.metadata.recorded_at, r.event) for r in first
               if isinstance(r.event, ev.StopRequested)]
    if not intents or any(isinstance(r.event, ev.Exited) for r in since):
        return None
    requested_at, intent = intents[-1]
    ends = requested_at + timedelta(seconds=intent.timeout)
    left = max(0.0, (ends - now).total_seconds())
    return replace(command, timeout=left), Plan((Step.STOP, Step.RECORD_EXIT))


def _resume_copy(command: c.CopyIn, first: Iterable[ev.RecordedEvent],
                 ) -> tuple[c.CopyIn, Plan] | None:
    intents = [r.event for r in first if isinstance(r.event, ev.CopiedIn)]
    if not intents:
        return None
    if command.transfer is not None:
        raise Refused("the worker restarted while this copy was written and its pieces "
                      "are gone: copy again")
    if hashlib.sha256(command.data).hexdigest() != intents[-1].sha256:
        raise Refused("this resend carries another archive than the copy it repeats")
    # where the first attempt judged it lands (into or as): the path may be a
    # directory by now, made by that attempt's write
    again = replace(command, path=intents[-1].path)
    return again, Plan((Step.COPY_IN,), then=_copy_finished(again))


def exec_started(command: c.Exec, session_id: str, pid: int) -> ev.ExecStarted:
    return ev.ExecStarted(session_id, command.argv, pid)


@dataclass(frozen=True, slots=True)
class ExecProgress:
    """How far the log has followed one exec session."""

    requested: ev.ExecRequested | None = None
    started: bool = False
    exit_code: int | None = None


def exec_progress(stream: Iterable[ev.RecordedEvent], session_id: str) -> ExecProgress:
    requested: ev.ExecRequested | None = None
    started, code = False, None
    for r in stream:
        e = r.event
        if isinstance(e, ev.ExecRequested) and e.session_id == session_id:
            requested = e
        elif isinstance(e, ev.ExecStarted) and e.session_id == session_id:
            started = True
        elif isinstance(e, ev.ExecExited) and e.session_id == session_id:
            code = e.exit_code
    return ExecProgress(requested, started, code)


def exec_end_events(progress: ExecProgress, session_id: str, pid: int,
                    exit_code: int) -> tuple[ev.Event, ...]:
    """The events that close a session, whichever path learnt its end first (the exec
    call, a resend, reconciliation, a watcher after a restart); none if it is closed."""
    if progress.exit_code is not None:
        return ()
    events: list[ev.Event] = []
    if not progress.started and pid > 0:
        argv = progress.requested.command if progress.requested else ()
        events.append(ev.ExecStarted(session_id, argv, pid))
    events.append(ev.ExecExited(session_id, exit_code))
    return tuple(events)


class SettleExec(enum.Enum):
    """What reconciliation does with an exec session the log has open."""

    RECORD_EXIT = "record_exit"      # conmon wrote its exit code
    WAIT = "wait"                    # it still runs under its conmon: wait for the code
    NEVER_STARTED = "never_started"  # the worker died before claiming it: nothing ran
    LOST = "lost"                    # claimed, but its conmon died without an exit code


def settle_exec(session: ExecSession) -> SettleExec:
    if session.exit_code is not None:
        return SettleExec.RECORD_EXIT
    if not session.claimed:
        return SettleExec.NEVER_STARTED
    if session.conmon_alive:
        return SettleExec.WAIT
    return SettleExec.LOST


def _exec_exited(command: c.Exec) -> Callable[[Facts], tuple[ev.Event, ...]]:
    def then(facts: Facts) -> tuple[ev.Event, ...]:
        if facts.exec_exit_code is None or command.session_id is None:
            raise ValueError("an exec step reports its session and exit code")
        return (ev.ExecExited(command.session_id, facts.exec_exit_code),)

    return then


RESOURCES = ("memory", "pids_limit", "cpus")
"""Run options ``runc update`` changes on a container that has a process."""


def _update(state: ContainerState, command: c.Update) -> Plan:
    """``berth update``: the changed options are recorded (``container.updated``, old and
    new); resources go through ``runc update`` while the container has a process (a
    container without one gets them at its next start, from the updated spec). The
    new spec must pass the run spec's rules (``--restart`` with ``--rm`` does not)."""
    before = state.spec.to_data()
    changed = {k: v for k, v in command.changes().items() if before[k] != v}
    if not changed:
        return Plan(result={"id": state.id, "changed": []})
    RunSpec.from_data({**before, **changed})
    old = {k: before[k] for k in changed}
    steps = (Step.UPDATE,) if state.state in ALIVE and set(changed) & set(RESOURCES) else ()
    return Plan(steps, then=lambda _f: (ev.Updated(old, changed),),
                result={"id": state.id, "changed": sorted(changed)})


def _checkpoint(state: ContainerState, command: c.Checkpoint) -> Plan:
    _refuse_unless(state, (RUNNING,), f"container {state.name} is {state.state}: "
                   "only a running container can be checkpointed")
    if not command.image_path:
        raise ValueError("the service gives each checkpoint its own image directory")
    intent = ev.CheckpointRequested(command.image_path, command.leave_running,
                                    command.tcp_established)
    return Plan((Step.CHECKPOINT,), before=(intent,),
                then=lambda facts: checkpointed_events(intent, facts.exit))


def checkpointed_events(intent: ev.CheckpointRequested,
                        exit: ExitStatus | None) -> tuple[ev.Event, ...]:
    """What a finished checkpoint records: the image, and the exit it caused unless the
    container was left running."""
    events: list[ev.Event] = [ev.Checkpointed(intent.image_path, intent.leave_running,
                                              intent.tcp_established)]
    if not intent.leave_running:
        events.append(ev.Exited(exit.exit_code if exit else -1,
                                exit.finished_at if exit else None, True, "checkpoint"))
    return tuple(events)


def pending_checkpoint(stream: Iterable[ev.RecordedEvent]) -> ev.RecordedEvent | None:
    """The ``checkpoint_requested`` whose command has no recorded end (no image, no
    failure): its worker died during the dump. Nothing else is appended to a stream
    while a checkpoint holds the container's lock, so only the last request can be it."""
    pending: ev.RecordedEvent | None = None
    for r in stream:
        if isinstance(r.event, ev.CheckpointRequested):
            pending = r
        elif pending is not None and isinstance(r.event, (ev.Checkpointed, ev.CommandFailed)):
            pending = None
    return pending


class SettleCheckpoint(enum.Enum):
    """What became of a checkpoint whose worker died during it."""

    CHECKPOINTED = "checkpointed"  # complete image, container stopped (or left running)
    FAILED = "failed"              # no complete image, or the container still runs


def settle_checkpoint(intent: ev.CheckpointRequested, dump: DumpReport,
                      process_alive: bool) -> SettleCheckpoint:
    """Decide from what is on disk, never by guessing: an image counts only if the dump
    finished with success and wrote its inventory, and (unless asked to leave it
    running) CRIU stopped the container; otherwise the process still runs, or its end
    is an ordinary exit, and the command is recorded as failed. Never a lost process."""
    complete = dump.finished and dump.complete and dump.exit_code in (0, None)
    if complete and (intent.leave_running or not process_alive):
        return SettleCheckpoint.CHECKPOINTED
    return SettleCheckpoint.FAILED


def _restore(state: ContainerState) -> Plan:
    if state.state != EXITED or not state.checkpoint_path:
        raise Refused(f"container {state.name} is {state.state} and has no checkpoint "
                           "to restore")

    def then(facts: Facts) -> tuple[ev.Event, ...]:
        pid = _pid_of(facts)
        return (ev.Restored(pid.pid, pid.conmon_pid),)

    return Plan((Step.RESTORE,), then=then)


def _remove(state: ContainerState, command: c.Remove) -> Plan:
    """A live container is removed only with ``force``, which stops it at once: that
    stop is recorded first (``stop_requested``, no grace period), so its exit is
    "stop", asked for, and a worker dying in between leaves an intent the resend
    finishes (``resume``) rather than an exit that looks like a crash."""
    if state.state in (RUNNING, PAUSED):
        if not command.force:
            raise Refused(f"container {state.name} is {state.state}: stop it first "
                               "or use --force")
        steps = ((Step.UNPAUSE,) if state.state == PAUSED else ()) + (Step.STOP, Step.RECORD_EXIT)
        return Plan((*steps, Step.DELETE, Step.CLEANUP), before=(ev.StopRequested(0),),
                    then=_removed)
    return Plan((Step.DELETE, Step.CLEANUP), then=_removed)


def _removed(_facts: Facts) -> tuple[ev.Event, ...]:
    return (ev.Removed(),)


def _rename(state: ContainerState, command: c.Rename) -> Plan:
    """Any live container may be renamed; a name in use is refused by the append (the
    read model's unique live names), so the check and the write are one."""
    if command.name == state.name:
        return Plan(result={"id": state.id, "name": state.name})
    return Plan(before=(ev.Renamed(command.name),),
                result={"id": state.id, "name": command.name})


def _copy_in(command: c.CopyIn) -> Plan:
    """Any container that still exists takes files (podman's cp works stopped too);
    the write is recorded as intent first, with the archive's digest. A copy still
    naming a transfer lost its earlier pieces (the worker joins them otherwise)."""
    if command.transfer is not None:
        raise Refused("the earlier pieces of this copy are gone (it took too long, or the "
                      "worker restarted): copy again")
    digest = hashlib.sha256(command.data).hexdigest()
    return Plan((Step.COPY_IN,),
                before=(ev.CopiedIn(command.path, len(command.data), digest),),
                then=_copy_finished(command))


def _copy_finished(command: c.CopyIn) -> Callable[[Facts], tuple[ev.Event, ...]]:
    return lambda _facts: (ev.CopyFinished(command.path, len(command.data)),)


# --------------------------------------------------------------------------- exits


def exit_reason(stream: Iterable[ev.Event], code: int) -> tuple[str, bool]:
    """Why the container ended, and whether it was asked to: judged from its stream
    since it last (re)started. A stop or kill asked for it ("stop"), a checkpoint
    that did not leave it running ("checkpoint"); else it was its own doing."""
    if code < 0:
        return "unknown", False
    asked: str | None = None
    for e in stream:
        if isinstance(e, (ev.Started, ev.Restored, ev.PidReceived)):
            asked = None
        elif isinstance(e, (ev.StopRequested, ev.Signalled)):
            asked = "stop"
        elif isinstance(e, ev.Checkpointed) and not e.leave_running:
            asked = "checkpoint"
    if asked is not None:
        return asked, True
    return ("exit" if code == 0 else "crash"), False


def exit_event(state: ContainerState, stream: Iterable[ev.Event], status: ExitStatus,
               reason: str | None = None) -> ev.Exited | None:
    """The ``exited`` event for an exit status, or None if the log already has the
    container ended (so whichever path reports an exit second writes nothing)."""
    if state.state not in ALIVE:
        return None
    judged, expected = exit_reason(stream, status.exit_code)
    return ev.Exited(status.exit_code, status.finished_at, expected, reason or judged)


def network_release_due(state: ContainerState) -> bool:
    """An ended container gives its network back, as in podman and Docker: an address,
    veth and port forwards held by containers that run nothing would use a network up
    (a /28 refused its 14th container). It joins again at its next start. Not after a
    checkpoint that stopped it: a restore brings back its connections, which need the
    same namespace and address."""
    return state.state == EXITED and state.exit_reason != "checkpoint"


def network_released(stream: Iterable[ev.Event]) -> bool:
    """Whether the container's last network event gave its attachment back (so a
    release resumed after a crash records it once)."""
    last: ev.Event | None = None
    for e in stream:
        if isinstance(e, (ev.NetworkAttached, ev.NetworkDetached)):
            last = e
    return isinstance(last, ev.NetworkDetached)


def auto_remove_due(state: ContainerState) -> bool:
    """``--rm``: an ended container created with auto-remove is removed."""
    return state.spec.auto_remove and state.state == EXITED


class ConmonGone(enum.Enum):
    """What to do about a container whose conmon died."""

    NOTHING = "nothing"          # the log has it ended, or it has another conmon now
    RECORD_EXIT = "record_exit"  # conmon left an exit file: an ordinary exit
    KILL_AND_LOSE = "kill"       # the process runs unsupervised: kill it, record the loss
    LOSE = "lose"                # no process and no exit file: record the loss


def conmon_gone(state: ContainerState, conmon_pid: int | None, has_exit_file: bool,
                process_alive: bool) -> ConmonGone:
    """A container whose conmon (``conmon_pid``) is gone: nobody would ever record its
    exit, so berth settles it. A process left running without conmon is killed, since
    nothing would report its end; the exit is recorded with reason ``conmon_lost``."""
    if has_exit_file:
        return ConmonGone.RECORD_EXIT
    if state.state not in ALIVE or (conmon_pid is not None and state.conmon_pid != conmon_pid):
        return ConmonGone.NOTHING
    return ConmonGone.KILL_AND_LOSE if process_alive else ConmonGone.LOSE


CONMON_LOST_SIGNAL = int(signals.SIGKILL)


class Reconcile(enum.Enum):
    """What start-up reconciliation records for one container of its node."""

    NOTHING = "nothing"
    RECORD_EXIT = "record_exit"        # an exit file is waiting
    SETTLE_CONMON = "settle_conmon"    # conmon died with no exit file
    WAIT_EXIT = "wait_exit"            # runc has it stopped with a code: the file follows
    LOSE = "lose"                      # the runtime lost it with nothing to say why
    AUTO_REMOVE = "auto_remove"        # an --rm removal was due when the worker died


def reconcile(state: ContainerState, *, has_exit_file: bool, conmon_alive: bool,
              status: StatusReport | None) -> Reconcile:
    """Compare the log's view of a container with what the runtime says now.

    ``status`` is asked for only when the first two facts do not settle it; pass None
    for "runc does not know it"."""
    if state.state in ALIVE:
        if has_exit_file:
            return Reconcile.RECORD_EXIT
        if state.conmon_pid and not conmon_alive:
            return Reconcile.SETTLE_CONMON
        if status is None or status.status in (Status.EXITED, Status.STOPPED):
            if status is not None and status.exit_code is not None and status.exit_code >= 0:
                return Reconcile.WAIT_EXIT
            return Reconcile.LOSE
        return Reconcile.NOTHING
    if auto_remove_due(state):
        return Reconcile.AUTO_REMOVE
    return Reconcile.NOTHING


def needs_runtime_status(state: ContainerState, *, has_exit_file: bool,
                         conmon_alive: bool) -> bool:
    """Whether ``reconcile`` needs runc's status (asked only when it does: it forks runc)."""
    return (state.state in ALIVE and not has_exit_file
            and not (state.conmon_pid and not conmon_alive))
