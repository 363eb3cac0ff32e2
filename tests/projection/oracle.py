"""An oracle for the projection: the container lifecycle as an explicit table.

Written from what podman and Docker document about a container's state (``podman
inspect``'s State block, ``docker inspect``'s ``.State``), not from engine/containers/projection.py,
so a transition that is wrong on every fold path disagrees with it. Where berth chose
differently from podman on purpose, the row says so:

- ``restart_count`` counts every start after the first, by hand or by the restart
  policy. podman and Docker count only the restarts their restart policy makes (a
  manual start resets the count); berth's policy keeps its own count in the stream
  (``container.restarting``'s attempt, engine/restarts/rules.py).
- ``finished_at`` is None while the container runs again. podman and Docker keep the
  previous run's time until the next exit.
- ``checkpoint_path`` is the latest CRIU image and survives later runs, so a restore
  can use it again.

A row of the table says, for one (current state, event type), what each field becomes.
A pair missing from the table is an event no worker appends in that state: the model
raises KeyError, and the state machine that drives it never generates one.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from engine import events as ev

CREATED, RUNNING, PAUSED, EXITED, REMOVED = "created", "running", "paused", "exited", "removed"
LIVE = (CREATED, RUNNING, PAUSED)

# What a column of a row may say.
SAME = "same"          # unchanged
NONE = "none"          # cleared: None, or () for exec sessions
EVENT = "event"        # taken from the event (its pid, exit code, reason, image path)
NOW = "now"            # the event's recorded time
EXIT_TIME = "exit"     # the exit file's time when there was one, else the recorded time
START = "start"        # restart_count: one more start (a restart when it is not the first)
ADD, DROP = "add", "drop"  # exec sessions: the event's session joins / leaves
MERGE = "merge"        # spec: the run options the event names take its new values


@dataclass(frozen=True)
class Row:
    state: str = SAME
    pid: str = SAME
    conmon_pid: str = SAME
    started_at: str = SAME
    finished_at: str = SAME
    exit_code: str = SAME
    exit_reason: str = SAME
    restart_count: str = SAME
    checkpoint_path: str = SAME
    exec_sessions: str = SAME
    spec: str = SAME
    name: str = SAME


NOTHING = Row()
# podman's init(): runc create done, conmon up, the old exit forgotten (exit code 0,
# Exited false, state Created). Exec sessions are already gone with the exit.
CREATE_AGAIN = Row(state=CREATED, pid=EVENT, conmon_pid=EVENT, exit_code=NONE,
                   exit_reason=NONE)
# podman's start(): Running, StartedTime now; berth also clears the last run's end.
START_ROW = Row(state=RUNNING, started_at=NOW, finished_at=NONE, exit_code=NONE,
                exit_reason=NONE, restart_count=START)
# The main process ended: PID 0, conmon gone, exec sessions ended with it (podman
# removes them on stop), exit code and time recorded, StartedTime kept.
EXIT_ROW = Row(state=EXITED, pid=NONE, conmon_pid=NONE, finished_at=EXIT_TIME,
               exit_code=EVENT, exit_reason=EVENT, exec_sessions=NONE)
# Gone: nothing runs any more; the rest stays readable for `ps -a` and audits.
REMOVE_ROW = Row(state=REMOVED, pid=NONE, conmon_pid=NONE, exec_sessions=NONE)
# podman's restore: Running again from the image with a new pid and conmon; a restore
# is not a start (no restart counted) but begins a new running period.
RESTORE_ROW = Row(state=RUNNING, pid=EVENT, conmon_pid=EVENT, started_at=NOW,
                  finished_at=NONE, exit_code=NONE, exit_reason=NONE)

TABLE: dict[tuple[str, str], Row] = {
    # created: runc create done (or about to be), the process waits for start
    (CREATED, ev.CONTAINER_PID_RECEIVED): Row(pid=EVENT, conmon_pid=EVENT),
    (CREATED, ev.CONTAINER_STARTED): START_ROW,
    (CREATED, ev.CONTAINER_EXITED): EXIT_ROW,        # conmon lost before start
    (CREATED, ev.CONTAINER_EXEC_EXITED): Row(exec_sessions=DROP),  # interrupted exec
    (CREATED, ev.CONTAINER_COPIED_IN): NOTHING,
    (CREATED, ev.CONTAINER_COPY_FINISHED): NOTHING,
    (CREATED, ev.CONTAINER_RENAMED): Row(name=EVENT),
    (CREATED, ev.CONTAINER_REMOVED): REMOVE_ROW,
    (CREATED, ev.COMMAND_FAILED): NOTHING,
    (CREATED, ev.CONTAINER_UPDATED): Row(spec=MERGE),
    (CREATED, ev.CONTAINER_NETWORK_ATTACHED): NOTHING,  # history only (issue 11)
    # running
    (RUNNING, ev.CONTAINER_SIGNALLED): NOTHING,
    (RUNNING, ev.CONTAINER_STOP_REQUESTED): NOTHING,
    (RUNNING, ev.CONTAINER_EXITED): EXIT_ROW,
    (RUNNING, ev.CONTAINER_PAUSED): Row(state=PAUSED),
    (RUNNING, ev.CONTAINER_EXEC_REQUESTED): Row(exec_sessions=ADD),  # open from the intent
    (RUNNING, ev.CONTAINER_EXEC_STARTED): Row(exec_sessions=ADD),
    (RUNNING, ev.CONTAINER_CHECKPOINT_REQUESTED): NOTHING,  # intent: the image decides
    (RUNNING, ev.CONTAINER_EXEC_EXITED): Row(exec_sessions=DROP),
    # The image is recorded; the run state changes only by the exit that follows.
    (RUNNING, ev.CONTAINER_CHECKPOINTED): Row(checkpoint_path=EVENT),
    (RUNNING, ev.CONTAINER_COPIED_IN): NOTHING,
    (RUNNING, ev.CONTAINER_COPY_FINISHED): NOTHING,
    (RUNNING, ev.CONTAINER_RENAMED): Row(name=EVENT),
    (RUNNING, ev.CONTAINER_REMOVED): REMOVE_ROW,     # forced, exit status never found
    (RUNNING, ev.COMMAND_FAILED): NOTHING,
    (RUNNING, ev.CONTAINER_HEALTH_STATUS): NOTHING,  # read from the stream, not the state
    (RUNNING, ev.CONTAINER_UPDATED): Row(spec=MERGE),  # runc update, then the record
    # paused: frozen; the pid and exec sessions stay
    (PAUSED, ev.CONTAINER_SIGNALLED): NOTHING,
    (PAUSED, ev.CONTAINER_UNPAUSED): Row(state=RUNNING),
    (PAUSED, ev.CONTAINER_EXITED): EXIT_ROW,         # killed while frozen
    (PAUSED, ev.CONTAINER_EXEC_EXITED): Row(exec_sessions=DROP),
    (PAUSED, ev.CONTAINER_COPIED_IN): NOTHING,
    (PAUSED, ev.CONTAINER_COPY_FINISHED): NOTHING,
    (PAUSED, ev.CONTAINER_RENAMED): Row(name=EVENT),
    (PAUSED, ev.CONTAINER_REMOVED): REMOVE_ROW,
    (PAUSED, ev.COMMAND_FAILED): NOTHING,
    (PAUSED, ev.CONTAINER_UPDATED): Row(spec=MERGE),
    # exited
    (EXITED, ev.CONTAINER_PID_RECEIVED): CREATE_AGAIN,  # start of an exited container
    (EXITED, ev.CONTAINER_RESTORED): RESTORE_ROW,
    (EXITED, ev.CONTAINER_EXEC_EXITED): Row(exec_sessions=DROP),
    (EXITED, ev.CONTAINER_NETWORK_DETACHED): NOTHING,  # history only (issue 21, B7)
    (EXITED, ev.CONTAINER_COPIED_IN): NOTHING,
    (EXITED, ev.CONTAINER_COPY_FINISHED): NOTHING,
    (EXITED, ev.CONTAINER_RENAMED): Row(name=EVENT),
    (EXITED, ev.CONTAINER_REMOVED): REMOVE_ROW,
    (EXITED, ev.COMMAND_FAILED): NOTHING,
    (EXITED, ev.CONTAINER_RESTARTING): NOTHING,  # intent: the start that follows counts
    (EXITED, ev.CONTAINER_STOP_REQUESTED): NOTHING,  # calls a pending restart off
    (EXITED, ev.CONTAINER_UPDATED): Row(spec=MERGE),  # the next start uses the new spec
    # removed: only refusals are still recorded
    (REMOVED, ev.COMMAND_FAILED): NOTHING,
}

ROW_COLUMNS = tuple(f.name for f in fields(Row))

# Every field of the projected state: the model must say something about each one.
FIELDS = ("id", "name", "node", "bundle", "spec", "state", "created_at", "version",
          "last_position", "started_at", "finished_at", "pid", "conmon_pid", "exit_code",
          "exit_reason", "restart_count", "checkpoint_path", "exec_sessions")


@dataclass
class Expected:
    """What one container must look like: every projected field, plus how many times
    it was started (the restart count follows from it)."""

    fields: dict[str, Any]
    starts: int = 0

    def copy(self) -> Expected:
        return Expected(dict(self.fields), self.starts)


def created(recorded: ev.RecordedEvent) -> Expected:
    e, m = recorded.event, recorded.metadata
    assert isinstance(e, ev.ContainerCreated)
    return Expected({
        "id": m.stream, "name": e.name, "node": e.node, "bundle": e.bundle, "spec": e.spec,
        "state": CREATED, "created_at": m.recorded_at, "version": m.stream_version,
        "last_position": m.position, "started_at": None, "finished_at": None, "pid": None,
        "conmon_pid": None, "exit_code": None, "exit_reason": None, "restart_count": 0,
        "checkpoint_path": None, "exec_sessions": (),
    })


def _value(column: str, how: str, old: Any, e: ev.Event, m: ev.Metadata) -> Any:
    if how == SAME:
        return old
    if column == "state":
        return how
    if how == NONE:
        return () if column == "exec_sessions" else None
    if how == NOW:
        return m.recorded_at
    if how == EXIT_TIME and isinstance(e, ev.Exited):
        return e.finished_at if e.finished_at is not None else m.recorded_at
    if how == ADD and isinstance(e, (ev.ExecRequested, ev.ExecStarted)):
        return old if e.session_id in old else (*old, e.session_id)
    if how == DROP and isinstance(e, ev.ExecExited):
        return tuple(s for s in old if s != e.session_id)
    if how == MERGE and isinstance(e, ev.Updated):
        return ev.RunSpec.from_data({**old.to_data(), **e.new})
    if how == EVENT:
        attribute = {"exit_reason": "reason", "checkpoint_path": "image_path"}.get(column, column)
        return getattr(e, attribute)
    raise ValueError(f"row says {how!r} for {column} of {e.type}")


def step(current: Expected | None, recorded: ev.RecordedEvent) -> Expected | None:
    """The container after one more event of its stream (None: still no container)."""
    if recorded.type == ev.CONTAINER_CREATED:
        return created(recorded)
    if current is None:
        return None  # a refusal aimed at a container that never existed
    e, m = recorded.event, recorded.metadata
    row = TABLE[current.fields["state"], recorded.type]
    after = current.copy()
    for column in ROW_COLUMNS:
        how = getattr(row, column)
        if column == "restart_count":
            if how == START:
                after.starts += 1
                after.fields[column] = after.starts - 1
        else:
            after.fields[column] = _value(column, how, current.fields[column], e, m)
    after.fields["version"] = m.stream_version
    after.fields["last_position"] = m.position
    return after
