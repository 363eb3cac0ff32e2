"""The contract between the application core and an OCI runtime.

``engine.containers.service`` drives a runtime only through this protocol, so its rules can be
exercised in unit tests by ``engine.runtime.memory.MemoryRuntime``. Both that and
the real ``OCIRuntime`` (conmon + runc + CRIU) pass one contract suite
(``tests/runtime/test_contract.py``), so the in-memory one cannot drift from what
the real one does: the same states, the same typed errors for the same misuse.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from engine.containers.spec import RunSpec
from engine.inroot import Root
from engine.runtime.exitfile import ExitStatus
from engine.runtime.types import Created, DumpReport, ExecResult, ExecSession, StatusReport

if TYPE_CHECKING:
    from engine.networks.rules import Attachment


class Runtime(Protocol):
    """What the service may ask of a runtime: facts and actions, never decisions."""

    def bundle_path(self, container_id: str) -> str:
        """Where the container's bundle lives (recorded in ``container.created``)."""
        ...

    def log_path(self, container_id: str) -> str:
        """The container's output log, in conmon's ``k8s-file`` format."""
        ...

    def create(self, container_id: str, spec: RunSpec, *, name: str | None = None) -> Created:
        """Write the bundle and create the container (created, not yet started)."""
        ...

    def start(self, container_id: str) -> object:
        ...

    def kill(self, container_id: str, signal: int | str, *, all_processes: bool = False) -> None:
        ...

    def stop(self, container_id: str, pid: int, *, stop_signal: int = 15,
             timeout: float = 10) -> None:
        """Stop signal, then SIGKILL after ``timeout``; a container already gone is fine."""
        ...

    def delete(self, container_id: str, *, force: bool = True) -> None:
        """Make the runtime forget the container; NotFound if it never knew it."""
        ...

    def pause(self, container_id: str) -> None:
        ...

    def unpause(self, container_id: str) -> None:
        ...

    def update(self, container_id: str, *, memory: int | None = None,
               pids_limit: int | None = None, cpus: float | None = None) -> None:
        """Change the resource limits of a container that has a process (runc update);
        None leaves a limit as it is."""
        ...

    def cleanup(self, container_id: str) -> None:
        """Remove the container's files (bundle, logs, exit file)."""
        ...

    def network_held(self, container_id: str) -> tuple[bool, Attachment | None]:
        """Whether the container holds network state on this node (a namespace, an
        address, files), and the address CNI gave it if it has one."""
        ...

    def release_network(self, container_id: str) -> None:
        """Give back an ended container's network (CNI DEL, namespace, files); it
        joins again at its next create. Safe to repeat."""
        ...

    def exec_start(self, container_id: str, cmd: Sequence[str], *, session_id: str,
                   env: Sequence[str] = (), cwd: str = "", user: str = "", tty: bool = False,
                   no_new_privileges: bool = False, stdin: bool = False,
                   console: tuple[int, int] = (0, 0), streamed: bool = False) -> int | None:
        """Start a session that outlives the caller; its pid, or None if this session was
        claimed by an earlier attempt (never a second process for one session)."""
        ...

    def exec_session(self, container_id: str, session_id: str) -> ExecSession:
        """What is known of a session now, without waiting."""
        ...

    def exec_wait(self, container_id: str, session_id: str,
                  timeout: float | None = None) -> ExecResult:
        """The session's real exit code (-1 only if its monitor died without one) and
        the bounded tail of its output, once it ended."""
        ...

    def exec_prune(self, container_id: str, keep: int) -> None:
        """Remove the files of ended sessions but the newest ``keep``."""
        ...

    def exec(self, container_id: str, cmd: Sequence[str], *, session_id: str,
             env: Sequence[str] = (), cwd: str = "", user: str = "", tty: bool = False,
             no_new_privileges: bool = False,
             on_start: Callable[[int], None] | None = None) -> ExecResult:
        ...

    def checkpoint_dir(self, container_id: str, name: str) -> str:
        """The image directory of one checkpoint, named for its command."""
        ...

    def checkpoint(self, container_id: str, *, image_path: str | None = None,
                   leave_running: bool = False, tcp_established: bool = False) -> str:
        """Checkpoint with CRIU into ``image_path``; return the image directory."""
        ...

    def dump_report(self, image_path: str, *, timeout: float = 300) -> DumpReport:
        """How a checkpoint into ``image_path`` ended, once no process of it remains."""
        ...

    def restore(self, container_id: str, spec: RunSpec, *, name: str | None = None,
                image_path: str | None = None, tcp_established: bool = False) -> Created:
        ...

    def status(self, container_id: str, *, known_stopped: bool = False) -> StatusReport:
        ...

    def exit_status(self, container_id: str) -> ExitStatus | None:
        """conmon's exit file, if it is there yet."""
        ...

    def wait_exit(self, container_id: str) -> ExitStatus | None:
        """The exit file, waiting a bounded moment for conmon to write it."""
        ...

    def conmon_alive(self, conmon_pid: int | None, container_id: str) -> bool:
        """Is ``conmon_pid`` still the conmon of this container (not a reused pid)?"""
        ...

    def process_root(self, container_id: str, pid: int) -> Root | None:
        """The root directory the container's process ``pid`` sees (its mount
        namespace: volumes, tmpfs), None if that process is gone or is not the
        container's (a reused pid); the caller closes it."""
        ...

    def container_ids(self) -> list[str]:
        """The containers this runtime has files for (to find orphans)."""
        ...
