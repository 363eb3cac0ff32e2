"""Noticing a conmon that died under a live container.

conmon is the container's only witness: it waits for the container process and
writes the exit file the exit monitor turns into ``container.exited``. If conmon
itself is killed (-9, the OOM killer, an operator), no exit file will ever come,
and without this module the log would say "running" forever, whether or not the
container process is still there.

``ConmonWatch`` holds a pidfd for the conmon of every live container of this node
(a pidfd turns readable the moment its process exits, with no polling and no
pid-reuse race) and settles each death with ``settle_conmon_gone``:

* an exit file exists: conmon exited normally after its container; record the exit
  (the inotify monitor usually did already; the second writer writes nothing);
* no exit file and the container process still runs: nobody would ever record its
  exit, so berth kills it (``runc kill --all KILL``, then ``runc delete --force``),
  records that it did (``container.signalled`` from the worker's system actor) and
  records the exit with code -1 and reason ``conmon_lost``;
* no exit file and no process: record the exit as lost (-1, ``unknown``).

Start-up reconciliation calls ``settle_conmon_gone`` too, for conmons that died
while no worker was running.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import threading
from collections.abc import Sequence

from engine import events as ev
from engine.errors import BerthError, NotFound, RuntimeFailure
from engine.projection import PAUSED
from engine.runtime import Status
from engine.runtime.waits import wait_pids_exit
from workers.context import WorkerContext, system_command_id
from workers.exits import ALIVE, record_exit, record_lost

log = logging.getLogger("berth.conmon_watch")

KILL_WAIT_S = 10.0


def conmon_alive(pid: int | None, container_id: str) -> bool:
    """Is ``pid`` still the conmon of ``container_id``? Checks the command line so a
    pid reused by another process after conmon died does not count (a zombie has
    an empty command line, and counts as dead)."""
    if not pid or pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return bool(argv) and b"conmon" in os.path.basename(argv[0]) and container_id.encode() in argv


def settle_conmon_gone(ctx: WorkerContext, container_id: str, conmon_pid: int | None) -> list[ev.RecordedEvent]:
    """Record what became of a container whose conmon (``conmon_pid``) is gone.

    Does nothing if the log no longer has the container alive, or if its current
    conmon is another one (the container was restarted or restored meanwhile).
    """
    if ctx.runtime.exit_status(container_id) is not None:
        return record_exit(ctx, container_id)
    with ctx.locks.hold(container_id):
        try:
            state = ctx.container(container_id)
        except NotFound:
            return []
        if state.state not in ALIVE or (conmon_pid is not None and state.conmon_pid != conmon_pid):
            return []
        if ctx.runtime.exit_status(container_id) is not None:  # conmon wrote it after all
            return record_exit(ctx, container_id)
        recorded: list[ev.RecordedEvent] = []
        if _process_alive(ctx, container_id):
            _kill_unsupervised(ctx, container_id, state.state == PAUSED, state.pid)
            recorded += ctx.append(
                container_id, state.version, [ev.Signalled(int(signal.SIGKILL))],
                command_id=system_command_id(container_id, "conmon-lost-kill", state.version),
                command_type="container.kill",
            )
            log.warning("conmon of container %s died; killed the unsupervised container", container_id)
        else:
            log.warning("conmon of container %s died and the container is gone", container_id)
        recorded += record_lost(ctx, container_id, reason="conmon_lost")
        return recorded


def _process_alive(ctx: WorkerContext, container_id: str) -> bool:
    try:
        status = ctx.runtime.status(container_id, known_stopped=True)
    except NotFound:
        return False
    return status.status in (Status.CREATED, Status.RUNNING, Status.PAUSED)


def _kill_unsupervised(ctx: WorkerContext, container_id: str, paused: bool, pid: int | None) -> None:
    """Kill every process of the container and make runc forget it; raise if it lives on."""
    if paused:
        try:
            ctx.runtime.unpause(container_id)  # a frozen process cannot die of SIGKILL
        except BerthError as exc:
            log.warning("could not thaw %s before killing it: %s", container_id, exc)
    try:
        ctx.runtime.kill(container_id, signal.SIGKILL, all_processes=True)
    except BerthError:
        if _process_alive(ctx, container_id):
            raise
    if pid and not wait_pids_exit([pid], KILL_WAIT_S):
        raise RuntimeFailure(f"container {container_id} survived SIGKILL after its conmon died")
    try:
        ctx.runtime.delete(container_id, force=True)
    except BerthError as exc:
        if _process_alive(ctx, container_id):
            raise
        log.debug("runc delete of %s after conmon loss: %s", container_id, exc)


class ConmonWatch:
    """A thread that waits on the pidfds of this node's conmons.

    ``observe`` is fed every batch of recorded events (hooked into
    ``WorkerContext.announce``), so a new conmon is watched as soon as its pid is in
    the log and an exited container stops being watched.
    """

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.settled = 0
        self._lock = threading.Lock()
        self._by_fd: dict[int, tuple[str, int]] = {}
        self._by_container: dict[str, int] = {}
        self._dead: list[tuple[str, int]] = []
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="berth-conmon-watch", daemon=True)

    def start(self) -> None:
        """Watch every live container of this node the log knows, then follow the log."""
        for state in self.ctx.store.list_containers(all=True, node=self.ctx.node):
            if state.state in ALIVE and state.conmon_pid:
                self.watch(state.id, state.conmon_pid)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake()
        self._thread.join(5)
        with self._lock:
            for fd in self._by_fd:
                os.close(fd)
            self._by_fd.clear()
            self._by_container.clear()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)

    def observe(self, recorded: Sequence[ev.RecordedEvent]) -> None:
        """Follow conmon pids as they enter the log, and drop containers that ended."""
        for r in recorded:
            e = r.event
            if isinstance(e, ev.PidReceived | ev.Restored) and e.conmon_pid:
                self.watch(r.stream, e.conmon_pid)
            elif isinstance(e, ev.Exited | ev.Removed):
                self.unwatch(r.stream)

    def watch(self, container_id: str, conmon_pid: int) -> None:
        try:
            fd = os.pidfd_open(conmon_pid)
        except OSError as exc:
            if exc.errno != errno.ESRCH:
                log.error("cannot watch conmon %d of %s: %s", conmon_pid, container_id, exc)
                return
            fd = -1
        # Checked after the pidfd exists, so a pid reused before the open is caught.
        if fd >= 0 and not conmon_alive(conmon_pid, container_id):
            os.close(fd)
            fd = -1
        with self._lock:
            self._drop(container_id)
            if fd < 0:
                self._dead.append((container_id, conmon_pid))
            else:
                self._by_fd[fd] = (container_id, conmon_pid)
                self._by_container[container_id] = fd
        self._wake()

    def unwatch(self, container_id: str) -> None:
        with self._lock:
            self._drop(container_id)
        self._wake()

    def _drop(self, container_id: str) -> None:
        fd = self._by_container.pop(container_id, None)
        if fd is not None:
            self._by_fd.pop(fd, None)
            os.close(fd)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except OSError:
            pass  # full (a wakeup is pending) or closed

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                fds = list(self._by_fd)
            try:
                ready, _, _ = select.select([self._wake_r, *fds], [], [], 1.0)
            except OSError:  # an fd closed under us by unwatch: look again
                continue
            if self._wake_r in ready:
                try:
                    while os.read(self._wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
            with self._lock:
                dead = self._dead
                self._dead = []
                for fd in ready:
                    entry = self._by_fd.pop(fd, None)
                    if entry is not None:
                        self._by_container.pop(entry[0], None)
                        os.close(fd)
                        dead.append(entry)
            for container_id, conmon_pid in dead:
                self._settle(container_id, conmon_pid)

    def _settle(self, container_id: str, conmon_pid: int) -> None:
        try:
            self.settled += bool(settle_conmon_gone(self.ctx, container_id, conmon_pid))
        except BerthError as exc:
            log.error("could not settle the lost conmon of %s: %s", container_id, exc)
        except Exception:  # the watcher must outlive any one container's trouble
            log.exception("settling the lost conmon of %s failed", container_id)
