"""``berth up``'s command server: started beside the engine, started again when it
dies, stopped with it.

It runs as a process of its own (``python -m berth cli-server``) because the engine
has threads and ZeroMQ contexts, which a fork must never copy. A server that dies
(killed, or out of memory) is replaced after a pause that doubles while it keeps
dying young; meanwhile the front end runs the plain CLI, so nothing waits for it.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time

from berth.cliserver import protocol

log = logging.getLogger("berth.up")

FIRST_PAUSE = 0.5
LONGEST_PAUSE = 30.0
SETTLED = 60.0
"""A server that lived this long is not dying young: the pause starts over."""


class Supervised:
    """A ``berth`` sub-command (``argv``) kept running beside the engine: the command
    server, and the Docker API server (berth.dockerapi) the same way."""

    def __init__(self, argv: tuple[str, ...] = ("cli-server",), name: str = "command server",
                 ) -> None:
        self.argv = argv
        self.name = name
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.proc = self._start()
        self._thread = threading.Thread(target=self._watch, name=argv[0], daemon=True)
        self._thread.start()

    def _start(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, protocol.PARENT_ENV: str(os.getpid())}
        return subprocess.Popen([sys.executable, "-P", "-m", "berth", *self.argv],
                                stdin=subprocess.DEVNULL, env=env)

    def _watch(self) -> None:
        pause = FIRST_PAUSE
        while True:
            started = time.monotonic()
            code = self.proc.wait()
            if self._stopping.is_set():
                return
            pause = FIRST_PAUSE if time.monotonic() - started > SETTLED else pause
            log.warning("the %s exited (status %s); starting another in %.1fs",
                        self.name, code, pause)
            if self._stopping.wait(pause):
                return
            pause = min(pause * 2, LONGEST_PAUSE)
            with self._lock:
                if self._stopping.is_set():
                    return
                self.proc = self._start()

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
            proc = self.proc
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._thread.join(10)


def spawn() -> Supervised | None:
    """The command server for ``berth up``; None when BERTH_CLI_SERVER=0."""
    if os.environ.get("BERTH_CLI_SERVER") == "0":
        return None
    return Supervised()


def spawn_docker_api(path: str | None) -> Supervised | None:
    """The Docker API server for ``berth up`` on ``path`` (berth.dockerapi.socket_path:
    $BERTH_RUN/docker.sock, or where BERTH_DOCKER_SOCKET says); None: not served."""
    if path is None:
        return None
    return Supervised(("api", "--bind", f"unix://{path}"), "Docker API server")


def stop(supervised: Supervised | None) -> None:
    if supervised is not None:
        supervised.stop()
