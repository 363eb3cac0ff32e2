"""``berth up``: the embedded default, broker + one worker + SQLite in one process.

Sockets are ipc under ``$BERTH_RUN``, the database and bundles under
``$BERTH_ROOT``. ``berth down`` signals the process through its pid file;
containers keep running under conmon either way. It lives in the composition root
because it assembles parts of two layers (the broker of ``bus``, the worker of
``workers``), and ``up -d`` starts this same program again (``python -m berth up``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time

from bus.broker import Broker
from bus.endpoints import default_endpoints
from engine.errors import BerthError, Timeout, Unavailable
from workers.worker import DEFAULT_ROOT, DEFAULT_RUN, Worker, WorkerConfig

log = logging.getLogger("berth.up")


def _run_dir() -> str:
    return os.environ.get("BERTH_RUN", DEFAULT_RUN)


def _pidfile() -> str:
    return os.path.join(_run_dir(), "berth.pid")


def run_embedded(node: str = "local") -> int:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    endpoints = default_endpoints()
    os.makedirs(_run_dir(), mode=0o700, exist_ok=True)
    broker = Broker(endpoints.frontend, endpoints.backend, endpoints.events)
    broker.start()
    worker = Worker(WorkerConfig(node=node, backend=endpoints.backend))
    with open(_pidfile(), "w") as f:
        f.write(str(os.getpid()))
    log.info("berth up: node %s, bus %s, store %s", node, endpoints.frontend,
             worker.config.database)
    try:
        worker.serve_forever()
    finally:
        broker.stop()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_pidfile())
    return 0


def _ready(timeout: float) -> None:
    """Wait until the engine answers a query that needs the worker (not just the broker)."""
    from bus.client import Client

    deadline = time.monotonic() + timeout
    last: BerthError | None = None
    while time.monotonic() < deadline:
        try:
            with Client(timeout=0.5, retries=0) as client:
                client.ps()
                return
        except BerthError as exc:
            last = exc
            time.sleep(0.05)
    raise Timeout(f"the engine did not answer within {timeout:g}s: {last}")


def start_detached(node: str = "local", timeout: float = 30.0) -> int:
    root = os.environ.get("BERTH_ROOT", DEFAULT_ROOT)
    os.makedirs(root, mode=0o700, exist_ok=True)
    if _running_pid() is not None:
        _ready(timeout)
        print("berth is already up")
        return 0
    log_path = os.path.join(root, "berth.log")
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "berth", "up", "--node", node],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
        )
    try:
        _ready(timeout)
    except Timeout:
        if proc.poll() is not None:
            raise Unavailable(
                f"berth up exited with status {proc.returncode}; see {log_path}") from None
        raise
    print(f"berth is up (pid {proc.pid}, log {log_path})")
    return 0


def _running_pid() -> int | None:
    try:
        with open(_pidfile()) as f:
            pid = int(f.read().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def stop_embedded(timeout: float = 15.0) -> int:
    pid = _running_pid()
    if pid is None:
        print("berth is not running")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print("berth is down (containers keep running)")
            return 0
        time.sleep(0.05)
    raise Timeout(f"berth (pid {pid}) did not stop within {timeout:g}s")
