"""The exit monitor: conmon's exit files, noticed the moment conmon writes them.

A source of facts only: each exit file that lands is handed to
``ContainerService.record_exit``, the one place that records exits.
"""

from __future__ import annotations

import logging
import threading

from engine.errors import BerthError
from engine.ids import validate_container_id
from engine.service import ContainerService
from workers.inotify import Inotify

log = logging.getLogger("berth.exits")


class ExitMonitor:
    """Watches the exits directory with inotify and records each exit as it lands."""

    def __init__(self, service: ContainerService, exits_dir: str) -> None:
        self.service = service
        self._inotify = Inotify(exits_dir)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="berth-exit-monitor", daemon=True)
        self.recorded = 0

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for name in self._inotify.read(0.5):
                    self._handle(name)
            except Exception:
                log.exception("exit monitor iteration failed")

    def _handle(self, name: str) -> None:
        try:
            validate_container_id(name)
        except BerthError:
            return
        try:
            self.recorded += len(self.service.record_exit(name))
        except BerthError as exc:
            log.error("could not record the exit of %s: %s", name, exc)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._inotify.close()
