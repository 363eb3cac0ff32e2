"""The exit monitor: conmon's exit files, noticed the moment conmon writes them.

A source of facts only: each exit file that lands is handed to
``ContainerService.record_exit``, the one place that records exits. An exit the store
refuses (a full disk, a database away) is retried with backoff until it is accepted:
the exit file stays where it is, so nothing is lost by waiting, and the reason is
judged from the stream when it is finally written, as it would have been at once.
"""

from __future__ import annotations

import logging
import threading
import time

from engine.containers.service import ContainerService
from engine.errors import BerthError, StateUnwritable, StoreError
from engine.ids import validate_container_id
from workers.inotify import Inotify

log = logging.getLogger("berth.exits")

RETRY_FIRST_S = 0.25
RETRY_MAX_S = 5.0


class ExitMonitor:
    """Watches the exits directory with inotify and records each exit as it lands."""

    def __init__(self, service: ContainerService, exits_dir: str) -> None:
        self.service = service
        self._inotify = Inotify(exits_dir)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="berth-exit-monitor", daemon=True)
        self.recorded = 0
        self._retry: dict[str, tuple[float, float]] = {}
        """Exits the store refused: container id -> (next attempt, current delay)."""

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                wait = min([0.5] + [at - time.monotonic() for at, _ in self._retry.values()])
                for name in self._inotify.read(max(wait, 0.01)):
                    self._handle(name)
                self._retry_due()
            except Exception:
                log.exception("exit monitor iteration failed")

    @property
    def pending(self) -> int:
        """Exits waiting for the store to accept them."""
        return len(self._retry)

    def _retry_due(self) -> None:
        now = time.monotonic()
        for name, (at, _delay) in list(self._retry.items()):
            if at <= now:
                self._handle(name)

    def _handle(self, name: str) -> None:
        try:
            validate_container_id(name)
        except BerthError:
            return
        try:
            self.recorded += len(self.service.record_exit(name))
        except (StoreError, StateUnwritable) as exc:
            delay = min(self._retry.get(name, (0.0, RETRY_FIRST_S / 2))[1] * 2, RETRY_MAX_S)
            if name not in self._retry:
                log.error("the store refused the exit of %s (%s): retrying until it accepts",
                          name, exc)
            self._retry[name] = (time.monotonic() + delay, delay)
            return
        except BerthError as exc:
            log.error("could not record the exit of %s: %s", name, exc)
        if self._retry.pop(name, None) is not None:
            log.info("recorded the exit of %s after the store came back", name)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._inotify.close()
