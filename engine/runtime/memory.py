"""An in-memory runtime that keeps the real one's contract, for unit tests of the core.

``engine.containers.service`` can then be driven without conmon, runc or root. It is honest only
as far as ``tests/runtime/test_contract.py`` proves: that suite runs the same
scenarios against this class and the real ``OCIRuntime``, so a difference in states,
exit codes or error types fails there before it can mislead a service test.

Processes are modelled on what a busybox container does as PID 1:
``true``/``false`` and ``sh -c "exit N"`` end as soon as they start; anything else
runs until SIGKILL (PID 1 has no default handler, so other signals are ignored).
Exec sessions run ``echo``, ``true``, ``false`` and ``sh -c "exit N"``; any other
program is not found, which runc reports as a failure to start the process.
"""

from __future__ import annotations

import itertools
import re
import signal as signals
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from engine.containers.spec import RunSpec
from engine.errors import (
    AlreadyExists,
    CommandNotFound,
    InvalidArgument,
    InvalidState,
    NotFound,
)
from engine.ids import validate_container_id, validate_session_id
from engine.inroot import Root
from engine.runtime.exitfile import ExitStatus
from engine.runtime.types import (
    Created,
    DumpReport,
    ExecResult,
    ExecSession,
    Status,
    StatusReport,
)
from engine.signals import parse_signal

_EXIT_RE = re.compile(r"^exit ([0-9]{1,3})$")
_pids = itertools.count(100_000)

if TYPE_CHECKING:
    from engine.networks.rules import Attachment


def _quick_exit(args: Sequence[str]) -> int | None:
    """The exit code of a program that ends on its own at start, else None."""
    if list(args[:1]) == ["true"]:
        return 0
    if list(args[:1]) == ["false"]:
        return 1
    if len(args) == 3 and args[0] == "sh" and args[1] == "-c":
        found = _EXIT_RE.match(args[2].strip())
        if found:
            return int(found.group(1)) % 256
    return None


@dataclass
class _Container:
    spec: RunSpec
    status: Status
    pid: int
    conmon_pid: int
    checkpoint: str | None = None


@dataclass
class MemoryRuntime:
    """Containers as dict entries; exit "files" as a dict. Thread-safe."""

    state_dir: str = "/memory"
    containers: dict[str, _Container] = field(default_factory=dict)
    exits: dict[str, ExitStatus] = field(default_factory=dict)
    files: set[str] = field(default_factory=set)
    sessions: dict[tuple[str, str], ExecResult] = field(default_factory=dict)
    """Exec sessions by (container, session id); each ran to its end when it started."""
    images: set[str] = field(default_factory=set)
    """Checkpoint image directories written (complete images)."""
    calls: list[tuple[str, str]] = field(default_factory=list)
    """Every action taken, in order, as (action, container id): what tests assert on."""
    _lock: threading.RLock = field(default_factory=threading.RLock)

    # -- paths ------------------------------------------------------------------------

    def bundle_path(self, container_id: str) -> str:
        return f"{self.state_dir}/containers/{validate_container_id(container_id)}"

    def log_path(self, container_id: str) -> str:
        return f"{self.bundle_path(container_id)}/ctr.log"

    def container_ids(self) -> list[str]:
        with self._lock:
            return sorted(self.files)

    # -- lifecycle ----------------------------------------------------------------------

    def _get(self, container_id: str) -> _Container:
        cid = validate_container_id(container_id)
        found = self.containers.get(cid)
        if found is None:
            raise NotFound(f"container {cid} does not exist")
        return found

    def create(self, container_id: str, spec: RunSpec, *, name: str | None = None) -> Created:
        cid = validate_container_id(container_id)
        spec.validate()
        with self._lock:
            if cid in self.containers:
                raise AlreadyExists(f"container with id exists: {cid}")
            self.calls.append(("create", cid))
            self.files.add(cid)
            self.exits.pop(cid, None)
            box = _Container(spec, Status.CREATED, next(_pids), next(_pids))
            self.containers[cid] = box
            return Created(box.pid, box.conmon_pid)

    def start(self, container_id: str) -> datetime:
        with self._lock:
            box = self._get(container_id)
            if box.status != Status.CREATED:
                raise InvalidState(f"starting container {container_id}: cannot start a "
                                   "container that has stopped")
            self.calls.append(("start", container_id))
            box.status = Status.RUNNING
            code = _quick_exit(box.spec.args)
            if code is not None:
                self._exit(container_id, box, code)
            return datetime.now(UTC)

    def _exit(self, container_id: str, box: _Container, code: int) -> None:
        box.status = Status.STOPPED
        self.exits[container_id] = ExitStatus(code, datetime.now(UTC))

    def kill(self, container_id: str, signal: int | str, *, all_processes: bool = False) -> None:
        number = parse_signal(signal)
        with self._lock:
            box = self._get(container_id)
            if box.status not in (Status.RUNNING, Status.PAUSED, Status.CREATED):
                raise InvalidState(f"error sending signal to container {container_id}: "
                                   "container not running")
            self.calls.append(("kill", container_id))
            if number == signals.SIGKILL:
                self._exit(container_id, box, 128 + number)

    def stop(self, container_id: str, pid: int, *, stop_signal: int = 15,
             timeout: float = 10) -> None:
        if timeout < 0:
            raise InvalidArgument(f"invalid stop timeout {timeout!r}: must be 0 or more")
        with self._lock:
            box = self.containers.get(validate_container_id(container_id))
            if box is None or box.status == Status.STOPPED:
                return
            self.calls.append(("stop", container_id))
            if box.status == Status.PAUSED:
                box.status = Status.RUNNING  # runc kill --all thaws to deliver SIGKILL
            self._exit(container_id, box, 128 + int(signals.SIGKILL))

    def delete(self, container_id: str, *, force: bool = True) -> None:
        with self._lock:
            if force and validate_container_id(container_id) not in self.containers:
                return  # as runc delete --force: nothing to delete is not an error
            box = self._get(container_id)
            if box.status not in (Status.STOPPED, Status.CREATED) and not force:
                raise InvalidState(f"deleting container {container_id}: cannot delete "
                                   "container that is not stopped")
            self.calls.append(("delete", container_id))
            del self.containers[container_id]

    def update(self, container_id: str, *, memory: int | None = None,
               pids_limit: int | None = None, cpus: float | None = None) -> None:
        with self._lock:
            box = self._get(container_id)
            if box.status not in (Status.CREATED, Status.RUNNING, Status.PAUSED):
                raise InvalidState(f"updating container {container_id}: container not alive")
            self.calls.append(("update", container_id))

    def pause(self, container_id: str) -> None:
        with self._lock:
            box = self._get(container_id)
            if box.status != Status.RUNNING:
                raise InvalidState(f"pausing container {container_id}: container not running")
            self.calls.append(("pause", container_id))
            box.status = Status.PAUSED

    def unpause(self, container_id: str) -> None:
        with self._lock:
            box = self._get(container_id)
            if box.status != Status.PAUSED:
                raise InvalidState(f"resuming container {container_id}: container not paused")
            self.calls.append(("unpause", container_id))
            box.status = Status.RUNNING

    def cleanup(self, container_id: str) -> None:
        cid = validate_container_id(container_id)
        with self._lock:
            self.files.discard(cid)
            self.exits.pop(cid, None)

    def network_held(self, container_id: str) -> tuple[bool, Attachment | None]:
        validate_container_id(container_id)
        return False, None  # no networks in memory

    def release_network(self, container_id: str) -> None:
        validate_container_id(container_id)

    # -- exec ---------------------------------------------------------------------------

    def exec_start(self, container_id: str, cmd: Sequence[str], *, session_id: str,
                   env: Sequence[str] = (), cwd: str = "", user: str = "", tty: bool = False,
                   no_new_privileges: bool = False, stdin: bool = False,
                   console: tuple[int, int] = (0, 0), streamed: bool = False) -> int | None:
        validate_session_id(session_id)
        if not cmd:
            raise InvalidArgument("must provide a command to execute")
        with self._lock:
            box = self._get(container_id)
            if box.status != Status.RUNNING:
                raise InvalidState(f"exec in container {container_id}: cannot exec in a "
                                   "stopped container")
            key = (validate_container_id(container_id), session_id)
            if key in self.sessions:
                return None
            self.calls.append(("exec", container_id))
            code = 0 if cmd[0] == "echo" else _quick_exit(cmd)
            if code is None:
                self.sessions[key] = ExecResult(-1, b"", 0)
                raise CommandNotFound(f"cannot exec in container {container_id}: {cmd[0]}: "
                                      "executable file not found in the container: the "
                                      "command was not found")
            output = (" ".join(cmd[1:]) + "\n").encode() if cmd[0] == "echo" else b""
            pid = next(_pids)
            self.sessions[key] = ExecResult(code, output, pid)
            return pid

    def exec_session(self, container_id: str, session_id: str) -> ExecSession:
        with self._lock:
            found = self.sessions.get((validate_container_id(container_id), session_id))
            if found is None:
                return ExecSession(False, 0, None, False)
            return ExecSession(True, found.pid, found.exit_code, False)

    def exec_wait(self, container_id: str, session_id: str,
                  timeout: float | None = None) -> ExecResult:
        with self._lock:
            found = self.sessions.get((validate_container_id(container_id), session_id))
            return found if found is not None else ExecResult(-1, b"", 0)

    def exec_prune(self, container_id: str, keep: int) -> None:
        with self._lock:
            cid = validate_container_id(container_id)
            ended = [key for key in self.sessions if key[0] == cid]  # in start order
            for key in ended[:max(len(ended) - keep, 0)]:
                del self.sessions[key]

    def exec(self, container_id: str, cmd: Sequence[str], *, session_id: str,
             env: Sequence[str] = (), cwd: str = "", user: str = "", tty: bool = False,
             no_new_privileges: bool = False,
             on_start: Callable[[int], None] | None = None) -> ExecResult:
        pid = self.exec_start(container_id, cmd, session_id=session_id, env=env, cwd=cwd,
                              user=user, tty=tty, no_new_privileges=no_new_privileges)
        if pid is None:
            raise AlreadyExists(f"exec session {session_id} was started before")
        if on_start is not None:
            on_start(pid)
        return self.exec_wait(container_id, session_id)

    # -- checkpoint / restore -------------------------------------------------------------

    def checkpoint_dir(self, container_id: str, name: str) -> str:
        return f"{self.bundle_path(container_id)}/checkpoints/{validate_session_id(name)}"

    def checkpoint(self, container_id: str, *, image_path: str | None = None,
                   leave_running: bool = False, tcp_established: bool = False) -> str:
        with self._lock:
            box = self._get(container_id)
            if box.status != Status.RUNNING:
                raise InvalidState(f"checkpointing container {container_id}: container "
                                   "not running")
            self.calls.append(("checkpoint", container_id))
            box.checkpoint = image_path or f"{self.bundle_path(container_id)}/checkpoint"
            self.images.add(box.checkpoint)
            if not leave_running:
                self._exit(container_id, box, 0)
            return box.checkpoint

    def dump_report(self, image_path: str, *, timeout: float = 300) -> DumpReport:
        with self._lock:
            done = image_path in self.images
            return DumpReport(finished=True, exit_code=0 if done else None, complete=done)

    def restore(self, container_id: str, spec: RunSpec, *, name: str | None = None,
                image_path: str | None = None, tcp_established: bool = False) -> Created:
        cid = validate_container_id(container_id)
        with self._lock:
            old = self.containers.get(cid)
            image = image_path or (old.checkpoint if old else None)
            if not image or (old is not None and old.checkpoint != image):
                raise NotFound(f"no checkpoint of container {cid} at {image}")
            self.calls.append(("restore", cid))
            self.exits.pop(cid, None)
            box = _Container(spec, Status.RUNNING, next(_pids), next(_pids), image)
            self.containers[cid] = box
            return Created(box.pid, box.conmon_pid)

    # -- status ---------------------------------------------------------------------------

    def status(self, container_id: str, *, known_stopped: bool = False) -> StatusReport:
        with self._lock:
            cid = validate_container_id(container_id)
            box = self.containers.get(cid)
            found = self.exits.get(cid)
            if box is None:
                if found is not None:
                    return StatusReport(Status.EXITED, 0, found.exit_code, found.finished_at)
                return StatusReport(Status.EXITED, 0, -1, datetime.now(UTC))
            if box.status == Status.STOPPED:
                if known_stopped:
                    return StatusReport(Status.STOPPED, box.pid)
                code = found.exit_code if found else -1
                return StatusReport(Status.STOPPED, box.pid, code,
                                    found.finished_at if found else datetime.now(UTC))
            return StatusReport(box.status, box.pid)

    def exit_status(self, container_id: str) -> ExitStatus | None:
        with self._lock:
            return self.exits.get(validate_container_id(container_id))

    def wait_exit(self, container_id: str) -> ExitStatus | None:
        return self.exit_status(container_id)

    def conmon_alive(self, conmon_pid: int | None, container_id: str) -> bool:
        with self._lock:
            box = self.containers.get(container_id)
            return (box is not None and box.conmon_pid == conmon_pid
                    and box.status != Status.STOPPED)

    def process_root(self, container_id: str, pid: int) -> Root | None:
        return None  # no process: a copy works in the root filesystem

    # -- for tests: things that happen to a container from outside ------------------------

    def crash(self, container_id: str, code: int) -> None:
        """The container's process ends by itself with ``code``."""
        with self._lock:
            self._exit(container_id, self._get(container_id), code)

    def lose_conmon(self, container_id: str) -> None:
        """conmon is killed: it will never write the exit file."""
        with self._lock:
            self._get(container_id).conmon_pid = -1
