"""The OCI runtime: a typed port of libpod's early ``oci.go``.

A thin wrapper over conmon and runc. It reports facts (a pid, a runc status,
an exit code) and never decides state transitions: the worker turns facts into
events and the projection decides what they mean.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from engine.containers.bundle import oci_config, write_bundle
from engine.containers.ocimounts import volumes_root, with_mounts
from engine.containers.spec import RunSpec
from engine.errors import (
    AlreadyExists,
    BerthError,
    InvalidArgument,
    NotFound,
    RuntimeFailure,
    Timeout,
)
from engine.ids import validate_container_id, validate_name, validate_session_id
from engine.inroot import Root
from engine.networks.hostports import bind_ports
from engine.networks.setup import Joined, NetworkSetup, apply_to_config, published_ports
from engine.runtime import conmon, execs
from engine.runtime.attach import Parked
from engine.runtime.config import (
    KILL_CONTAINER_TIMEOUT,
    SYSTEMD,
    RuntimeConfig,
)
from engine.runtime.criu import Checkpoints
from engine.runtime.exitfile import ExitStatus, read_exit_file, wait_exit_file
from engine.runtime.layout import ContainerPaths
from engine.runtime.procroot import container_root
from engine.runtime.runc import Runc
from engine.runtime.types import (
    Created,
    ExecResult,
    ExecSession,
    Status,
    StatusReport,
)
from engine.runtime.waits import pid_alive, wait_pids_exit
from engine.signals import parse_signal

CPU_PERIOD_US = 100_000
"""The CFS period of ``--cpus`` (Docker's): the quota is cpus times this."""

if TYPE_CHECKING:
    from engine.networks.rules import Attachment


def systemd_booted(run_dir: str = "/run/systemd/system", init_comm: str = "/proc/1/comm") -> bool:
    """True only where systemd is PID 1. sd_booted()'s own rule (``run_dir`` exists)
    is not enough: installing systemd's packages in a container creates that
    directory with another PID 1, and the systemd cgroup manager then fails late,
    in runc, instead of being refused here. So PID 1's name must say systemd too."""
    if not os.path.isdir(run_dir):
        return False
    try:
        with open(init_comm) as f:
            return f.read().strip() == "systemd"
    except OSError:
        return False


class OCIRuntime(Checkpoints):
    """Drives conmon and runc for berth's containers."""

    def __init__(self, config: RuntimeConfig, *, networks: NetworkSetup | None = None) -> None:
        if config.cgroup_manager == SYSTEMD and not systemd_booted():
            try:
                with open("/proc/1/comm") as f:
                    init = f.read().strip()
            except OSError:
                init = "unknown"
            raise InvalidArgument(
                "the systemd cgroup manager needs systemd as PID 1, but PID 1 here is "
                f"{init!r}: use the cgroupfs cgroup manager"
            )
        self.config = config
        self.runc = Runc(config)
        self.exec_attached = Parked()
        """Attach sockets of streamed exec sessions, until their reader takes them."""
        self.networks = networks
        """networks: the worker's; None keeps runc's own empty
        network namespace for every container (the runtime's own tests)."""
        for path in (config.exits_dir, config.sockets_dir, config.runc_root):
            os.makedirs(path, mode=0o750, exist_ok=True)
        os.makedirs(os.path.join(config.state_dir, "containers"), mode=0o700, exist_ok=True)

    # -- paths -----------------------------------------------------------------

    def paths(self, container_id: str) -> ContainerPaths:
        return ContainerPaths.of(self.config, container_id)

    def bundle_path(self, container_id: str) -> str:
        return self.paths(container_id).bundle

    def log_path(self, container_id: str) -> str:
        return self.paths(container_id).log

    def container_ids(self) -> list[str]:
        """Names of the container directories under the state directory."""
        try:
            return sorted(os.listdir(os.path.join(self.config.state_dir, "containers")))
        except FileNotFoundError:
            return []

    def cgroups_path(self, container_id: str) -> str:
        if self.config.cgroup_manager == SYSTEMD:
            return f"machine.slice:berth:{container_id}"
        return f"{self.config.cgroup_parent}/{container_id}"

    # -- bundle ----------------------------------------------------------------

    def prepare(self, container_id: str, spec: RunSpec,
                network: Joined | None = None) -> ContainerPaths:
        """Validate the spec and write the container's bundle."""
        spec.validate()
        paths = self.paths(container_id)
        config = oci_config(spec, container_id, cgroups_path=self.cgroups_path(container_id))
        config["mounts"] = with_mounts(config["mounts"], spec.mounts,  # volumes
                                       volumes_root(self.config.state_dir))
        if network is not None:
            apply_to_config(config, network)
        write_bundle(paths.bundle, config)
        os.makedirs(os.path.join(paths.container_dir, "exec"), mode=0o700, exist_ok=True)
        return paths

    # -- create ----------------------------------------------------------------

    def create(
        self,
        container_id: str,
        spec: RunSpec,
        *,
        name: str | None = None,
        restore_path: str | None = None,
        tcp_established: bool = False,
        timeout: float | None = None,
    ) -> Created:
        """Create the container through conmon and return its pid (createOCIContainer).

        If anything fails after conmon started, the runtime's half-made
        container is deleted before the error is raised.
        """
        cid = validate_container_id(container_id)
        validate_name(name or cid[:63])
        joined = None
        ports = spec.ports
        if self.networks is not None:  # networks: before the process exists
            spec.validate()
            # -P publishes what --expose and the image (ExposedPorts) declare, once each
            ports = published_ports(spec.ports, tuple(dict.fromkeys((*spec.expose,
                                                                     *spec.exposed_ports))),
                                    spec.publish_all)
            # --uts host: the container has the host's name, so /etc/hostname and
            # /etc/hosts say that name (as podman's), not the short id
            hostname = (os.uname().nodename if spec.uts_ns == "host"
                        else spec.hostname or cid[:12])
            joined = self.networks.join(cid, name=name or cid, hostname=hostname,
                                        requested=spec.network, ports=ports,
                                        aliases=spec.network_aliases,
                                        extra_hosts=spec.extra_hosts, dns=spec.dns)
            if joined.attachment is not None:
                ports = joined.attachment.ports
        elif spec.network not in ("", "none"):
            raise InvalidArgument(f"network {spec.network!r}: this runtime has no networks")
        try:
            paths = self.prepare(cid, spec, joined)
        except BaseException:
            self.cleanup(cid)
            raise
        if restore_path is None:
            self._clear_exit_file(paths)
        sockets = bind_ports(ports) if self.config.reserve_ports else []
        opts = conmon.ConmonOptions(
            container_id=cid,
            name=name or cid,
            terminal=spec.terminal,
            stdin=spec.stdin,
            restore_path=restore_path,
            restore_tcp_established=tcp_established,
            extra_fds=tuple(s.fileno() for s in sockets),
            log_size_max=spec.log_size_max,
        )
        try:
            result = conmon.spawn(self.config, paths, opts, timeout or self.config.create_timeout)
        except BerthError:
            try:
                self.runc.run(["delete", "--force", cid], f"deleting container {cid}")
            except BerthError:
                pass
            raise
        finally:
            for s in sockets:
                s.close()
        return Created(pid=result.pid, conmon_pid=result.conmon_pid,
                       network=joined.attachment if joined else None)

    def _clear_exit_file(self, paths: ContainerPaths) -> None:
        try:
            os.unlink(paths.exit_file)
        except FileNotFoundError:
            pass

    # -- status ----------------------------------------------------------------

    def exit_status(self, container_id: str) -> ExitStatus | None:
        """The fast path of updateContainerStatus: only conmon's exit file."""
        return read_exit_file(self.paths(container_id).exit_file)

    def wait_exit(self, container_id: str) -> ExitStatus | None:
        """The exit file, waiting briefly: runc may report the process gone a moment
        before conmon has reaped it and written the file."""
        return wait_exit_file(self.paths(container_id).exit_file, first_wait=0.05, steps=8)

    def conmon_alive(self, conmon_pid: int | None, container_id: str) -> bool:
        """Is ``conmon_pid`` still the conmon of ``container_id``? Checks the command
        line so a pid reused by another process after conmon died does not count (a
        zombie has an empty command line, and counts as dead)."""
        if not conmon_pid or conmon_pid <= 0:
            return False
        try:
            with open(f"/proc/{conmon_pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            return False
        return (bool(argv) and b"conmon" in os.path.basename(argv[0])
                and container_id.encode() in argv)

    def process_root(self, container_id: str, pid: int) -> Root | None:
        return container_root(pid, validate_container_id(container_id))

    def status(self, container_id: str, *, known_stopped: bool = False) -> StatusReport:
        """The full path of updateContainerStatus: ask runc, then the exit file.

        A container runc no longer knows is reported exited with code -1 unless
        conmon's exit file says better.
        """
        paths = self.paths(container_id)
        try:
            state = self.runc.state(paths.container_id)
        except NotFound:
            found = read_exit_file(paths.exit_file)
            if found is not None:
                return StatusReport(Status.EXITED, 0, found.exit_code, found.finished_at)
            return StatusReport(Status.EXITED, 0, -1, datetime.now(UTC))
        try:
            status = Status(state.status)
        except ValueError:
            raise RuntimeFailure(
                f"unrecognized status returned by runtime for container {container_id}: "
                f"{state.status}"
            ) from None
        if status is Status.STOPPED and not known_stopped:
            found = wait_exit_file(paths.exit_file)
            if found is None:
                return StatusReport(Status.STOPPED, state.pid, -1, datetime.now(UTC))
            return StatusReport(Status.STOPPED, state.pid, found.exit_code, found.finished_at)
        return StatusReport(status, state.pid)

    # -- lifecycle -------------------------------------------------------------

    def start(self, container_id: str) -> datetime:
        cid = validate_container_id(container_id)
        self.runc.run(["start", cid], f"starting container {cid}")
        return datetime.now(UTC)

    def kill(self, container_id: str, signal: int | str, *, all_processes: bool = False) -> None:
        cid = validate_container_id(container_id)
        number = parse_signal(signal)
        args = ["kill"] + (["--all"] if all_processes else []) + [cid, str(number)]
        self.runc.run(args, f"error sending signal to container {cid}")

    def stop(self, container_id: str, pid: int, *, stop_signal: int = 15,
             timeout: float = 10) -> None:
        """Stop with the stop signal, then ``kill --all KILL`` (stopContainer).

        Timeout 0 kills at once. A container that is already gone is not an error.
        """
        cid = validate_container_id(container_id)
        signal = parse_signal(stop_signal)
        if timeout < 0:
            raise InvalidArgument(f"invalid stop timeout {timeout!r}: must be 0 or more")
        if not pid_alive(pid):
            return
        if timeout > 0:
            try:
                self.kill(cid, signal)
            except BerthError:
                if not pid_alive(pid):
                    return
                raise
            if wait_pids_exit([pid], timeout):
                return
        try:
            self.kill(cid, "KILL", all_processes=True)
        except BerthError:
            if not pid_alive(pid):
                return
            raise
        if not wait_pids_exit([pid], KILL_CONTAINER_TIMEOUT):
            raise Timeout(f"container {cid} did not die within timeout")

    def delete(self, container_id: str, *, force: bool = True) -> None:
        cid = validate_container_id(container_id)
        args = ["delete"] + (["--force"] if force else []) + [cid]
        self.runc.run(args, f"deleting container {cid}")

    def pause(self, container_id: str) -> None:
        cid = validate_container_id(container_id)
        self.runc.run(["pause", cid], f"pausing container {cid}")

    def unpause(self, container_id: str) -> None:
        cid = validate_container_id(container_id)
        self.runc.run(["resume", cid], f"resuming container {cid}")

    def update(self, container_id: str, *, memory: int | None = None,
               pids_limit: int | None = None, cpus: float | None = None) -> None:
        """``runc update``: new cgroup limits for a live container (berth update)."""
        cid = validate_container_id(container_id)
        args = ["update"]
        if memory is not None:
            args += ["--memory", str(memory)]
        if pids_limit is not None:
            args += ["--pids-limit", str(pids_limit)]
        if cpus is not None:
            args += ["--cpu-period", str(CPU_PERIOD_US),
                     "--cpu-quota", str(round(cpus * CPU_PERIOD_US))]
        self.runc.run([*args, cid], f"updating container {cid}")

    def pids(self, container_id: str) -> list[int]:
        """The host pids of the container's processes (``runc ps``), for ``berth top``."""
        cid = validate_container_id(container_id)
        proc = self.runc.run(["ps", "--format", "json", cid], f"listing processes of {cid}")
        try:
            return [int(p) for p in json.loads(proc.stdout or b"[]") or []]
        except (ValueError, TypeError) as exc:
            raise RuntimeFailure(f"listing processes of {cid}: runc answered {exc}") from None

    def cleanup(self, container_id: str) -> None:
        """Remove the container's files once runc no longer knows it."""
        paths = self.paths(container_id)
        if self.networks is not None:  # networks: CNI DEL, netns, files
            self.networks.leave(container_id)
        shutil.rmtree(paths.container_dir, ignore_errors=True)
        self._clear_exit_file(paths)
        # conmon's attach-socket entry (--socket-dir-path): a link to the bundle, or
        # a directory; never followed.
        sockets = os.path.join(self.config.sockets_dir, validate_container_id(container_id))
        if os.path.islink(sockets) or os.path.isfile(sockets):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(sockets)
        elif os.path.isdir(sockets):
            shutil.rmtree(sockets, ignore_errors=True)

    def network_held(self, container_id: str) -> tuple[bool, Attachment | None]:
        if self.networks is None:
            return False, None
        cid = validate_container_id(container_id)
        if not os.path.isdir(self.networks.dir_of(cid)):
            return False, None
        return True, self.networks.attachment(cid)

    def release_network(self, container_id: str) -> None:
        if self.networks is not None:
            self.networks.leave(validate_container_id(container_id))

    # -- exec ------------------------------------------------------------------

    def exec_session_paths(self, container_id: str, session_id: str) -> execs.SessionPaths:
        cid = validate_container_id(container_id)
        return execs.SessionPaths(self.paths(cid).exec_dir(session_id), cid)

    def exec_start(
        self,
        container_id: str,
        cmd: Sequence[str],
        *,
        session_id: str,
        env: Sequence[str] = (),
        cwd: str = "",
        user: str = "",
        tty: bool = False,
        no_new_privileges: bool = False,
        cap_add: Sequence[str] = (),
        stdin: bool = False,
        console: tuple[int, int] = (0, 0),
        streamed: bool = False,
    ) -> int | None:
        """Start an exec session through conmon and return its pid; None if this session
        was claimed before (an earlier attempt may have started it: never twice).

        The session outlives the caller: conmon records its pid, output and exit code
        in the session's directory (``exec_session``, ``exec_wait``). ``streamed``: a
        stream reader will follow the output; it comes through the session's attach
        socket, connected before the process runs (``take_exec_attach``), so a slow
        reader holds the process back instead of losing what conmon's capped log
        drops."""
        cid = validate_container_id(container_id)
        if not cmd:
            raise InvalidArgument("must provide a command to execute")
        sid = validate_session_id(session_id)
        paths = self.paths(cid)
        try:
            with open(paths.config_json) as f:
                base = json.load(f)["process"]
        except (OSError, ValueError, KeyError):
            raise NotFound(f"cannot exec in container {cid}: it has no bundle") from None
        proc = execs.process_spec(base, list(cmd), env=list(env), cwd=cwd, user=user, tty=tty,
                                  no_new_privileges=no_new_privileges, cap_add=list(cap_add))
        if tty and all(console):  # runc sizes the terminal before the process runs
            proc["consoleSize"] = {"height": console[0], "width": console[1]}
        session = self.exec_session_paths(cid, sid)
        if not execs.claim(session):
            return None
        park = (lambda sock: self.exec_attached.park(sid, sock)) if streamed else None
        return execs.spawn(self.config, session, sid, proc, stdin=stdin, attach=park)

    def take_exec_attach(self, session_id: str, timeout: float) -> socket.socket | None:
        """The attach socket ``exec_start(streamed=True)`` connected for this session,
        waiting up to ``timeout`` for it; None when there is none (then the output is
        read from the session's log)."""
        return self.exec_attached.take(session_id, timeout)

    def exec_session(self, container_id: str, session_id: str) -> ExecSession:
        """What the session's directory says now (claimed, pid, exit code, conmon)."""
        return execs.on_disk(self.exec_session_paths(container_id, session_id))

    def exec_wait(self, container_id: str, session_id: str,
                  timeout: float | None = None) -> ExecResult:
        """Wait for the session's end: its real exit code (-1 only if conmon died
        without one) and the tail of its output."""
        session = self.exec_session_paths(container_id, session_id)
        code = execs.wait(session, timeout)
        return ExecResult(code, execs.output_tail(session),
                          conmon.read_pidfile(session.pidfile))

    def exec_prune(self, container_id: str, keep: int) -> None:
        """Remove the directories of ended sessions (those with an exit file) but the
        newest ``keep``, so a container's sessions take bounded disk."""
        root = os.path.join(self.paths(container_id).container_dir, "exec")
        ended: list[tuple[float, str]] = []
        try:
            names = os.listdir(root)
        except FileNotFoundError:
            return
        for name in names:
            session = execs.SessionPaths(os.path.join(root, name), container_id)
            try:
                ended.append((os.stat(session.exit_file).st_mtime, session.dir))
            except FileNotFoundError:
                continue  # still running, or not an exec session
        for _mtime, path in sorted(ended, reverse=True)[keep:]:
            shutil.rmtree(path, ignore_errors=True)

    def exec(
        self,
        container_id: str,
        cmd: Sequence[str],
        *,
        session_id: str,
        env: Sequence[str] = (),
        cwd: str = "",
        user: str = "",
        tty: bool = False,
        no_new_privileges: bool = False,
        cap_add: Sequence[str] = (),
        timeout: float | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> ExecResult:
        """Run ``cmd`` in the container and return its exit code and output (execContainer).

        ``on_start`` is called with the session's pid as soon as conmon reports it."""
        pid = self.exec_start(container_id, cmd, session_id=session_id, env=env, cwd=cwd,
                              user=user, tty=tty, no_new_privileges=no_new_privileges,
                              cap_add=cap_add)
        if pid is None:
            raise AlreadyExists(f"exec session {session_id} was started before")
        if on_start is not None:
            on_start(pid)
        try:
            return self.exec_wait(container_id, session_id, timeout)
        except Timeout:
            raise Timeout(f"exec in container {container_id} did not finish within "
                          f"{timeout}s") from None

    def exec_stop(self, container_id: str, pids: Sequence[int], *, timeout: float = 10) -> None:
        """Stop exec sessions and every other process: TERM, then KILL (execStopContainer)."""
        cid = validate_container_id(container_id)
        live = [p for p in pids if pid_alive(p)]
        if not live:
            return
        if timeout > 0:
            self.kill(cid, "TERM", all_processes=True)
            if wait_pids_exit(live, timeout):
                return
        self.kill(cid, "KILL", all_processes=True)
        if not wait_pids_exit(live, KILL_CONTAINER_TIMEOUT):
            raise Timeout(f"failed to kill container {cid} exec sessions")
