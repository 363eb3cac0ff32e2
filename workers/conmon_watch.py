"""Noticing a conmon that died under a live container.

conmon is the container's only witness: it waits for the container process and
writes the exit file the exit monitor turns into ``container.exited``. If conmon
itself is killed (-9, the OOM killer, an operator), no exit file will ever come,
and without this module the log would say "running" forever, whether or not the
container process is still there.

``ConmonWatch`` holds a pidfd for the conmon of every live container of this node
(a pidfd turns readable the moment its process exits, with no polling and no
pid-reuse race) and settles each death with
``engine.containers.recovery.settle_conmon_gone``, whose rules
(``engine.containers.decide.conmon_gone``) are:

* an exit file exists: conmon exited normally after its container; record the exit
  (the inotify monitor usually did already; the second writer writes nothing);
* no exit file and the container process still runs: nobody would ever record its
  exit, so berth kills it (``runc kill --all KILL``, then ``runc delete --force``),
  records that it did (``container.signalled`` from the worker's system actor) and
  records the exit with code -1 and reason ``conmon_lost``;
* no exit file and no process: record the exit as lost (-1, ``conmon_lost``).

Start-up reconciliation settles conmons that died while no worker was running the
same way. This module only notices deaths; it decides nothing.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import threading
import time
from collections.abc import Sequence

from engine import events as ev
from engine.containers.projection import ALIVE
from engine.containers.recovery import settle_conmon_gone
from engine.containers.service import ContainerService
from engine.errors import BerthError, StateUnwritable, StoreError

log = logging.getLogger("berth.conmon_watch")

RETRY_S = 0.5


class ConmonWatch:
    """A thread that waits on the pidfds of this node's conmons.

    ``observe`` is fed every batch of recorded events (hooked into
    ``ContainerService.announce``), so a new conmon is watched as soon as its pid is in
    the log and an exited container stops being watched.
    """

    def __init__(self, service: ContainerService) -> None:
        self.service = service
        self.settled = 0
        self._lock = threading.Lock()
        self._by_fd: dict[int, tuple[str, int]] = {}
        self._by_container: dict[str, int] = {}
        self._dead: list[tuple[str, int]] = []
        self._retry: list[tuple[float, str, int]] = []
        """Settlements the store refused: (next attempt, container, conmon pid)."""
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="berth-conmon-watch", daemon=True)

    def start(self) -> None:
        """Watch every live container of this node the log knows, then follow the log."""
        for state in self.service.store.list_containers(all=True, node=self.service.node):
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
        if fd >= 0 and not self.service.runtime.conmon_alive(conmon_pid, container_id):
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
            wait = min([1.0] + [at - time.monotonic() for at, _, _ in self._retry])
            try:
                ready = _readable([self._wake_r, *fds], max(wait, 0.01))
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
            now = time.monotonic()
            due = [(cid, pid) for at, cid, pid in self._retry if at <= now]
            self._retry = [r for r in self._retry if r[0] > now]
            for container_id, conmon_pid in dead + due:
                self._settle(container_id, conmon_pid)

    def _settle(self, container_id: str, conmon_pid: int) -> None:
        try:
            self.settled += bool(settle_conmon_gone(self.service, container_id, conmon_pid))
        except (StoreError, StateUnwritable) as exc:
            # The store refused (full disk, database away): try again until it accepts,
            # so the exit is recorded as soon as it can be, with its real reason.
            log.error("the store refused settling the conmon of %s (%s): retrying",
                      container_id, exc)
            self._retry.append((time.monotonic() + RETRY_S, container_id, conmon_pid))
        except BerthError as exc:
            log.error("could not settle the lost conmon of %s: %s", container_id, exc)
        except Exception:  # the watcher must outlive any one container's trouble
            log.exception("settling the lost conmon of %s failed", container_id)


def _readable(fds: Sequence[int], timeout: float) -> list[int]:
    """The readable ones among ``fds`` (poll, not select: fd numbers may pass 1024)."""
    with selectors.PollSelector() as sel:
        for fd in fds:
            sel.register(fd, selectors.EVENT_READ)
        return [key.fd for key, _ in sel.select(timeout)]
