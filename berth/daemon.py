"""``berth up``: the embedded default, broker + one worker + SQLite in one process.

Sockets are ipc under ``$BERTH_RUN``, the database and bundles under
``$BERTH_ROOT``, both private to the user (``workers.statedirs``; umask 077). One
engine per ``$BERTH_RUN``: it holds an flock on ``berth.lock`` for its whole life and
writes ``berth.pid`` once it has it, so of two concurrent ``up`` one runs and the other
names it, and a pid file left by a killed engine is known stale (nobody holds the
lock). ``berth down`` signals the process the pid file names; containers keep running
under conmon either way. It lives in the composition root
because it assembles parts of two layers (the broker of ``bus``, the worker of
``workers``), and ``up -d`` starts this same program again (``python -m berth up``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING

from berth import logs, sdnotify
from berth.cliserver import supervisor as cliserver
from bus.broker import Broker
from bus.endpoints import default_endpoints
from engine.errors import BerthError, PermissionDenied, Timeout, Unavailable
from engine.runtime.waits import pid_alive
from workers.statedirs import PRIVATE_UMASK, private_directory
from workers.worker import DEFAULT_ROOT, DEFAULT_RUN, Worker, WorkerConfig

if TYPE_CHECKING:
    from bus.metrics import MetricsServer

log = logging.getLogger("berth.up")

LOCK_WAIT_S = 2.0
"""How long a starting engine retries the lock held by someone only looking at it."""


class AlreadyUp(Exception):
    """Another engine holds the lock of this ``$BERTH_RUN``."""

    def __init__(self, pid: int) -> None:
        super().__init__(f"berth is already up (pid {pid})")
        self.pid = pid


def _run_dir() -> str:
    return os.environ.get("BERTH_RUN", DEFAULT_RUN)


def _pidfile() -> str:
    return os.path.join(_run_dir(), "berth.pid")


def _lockfile() -> str:
    return os.path.join(_run_dir(), "berth.lock")


def _open(path: str, flags: int) -> int:
    """Open a file of ours in $BERTH_RUN, never through a symbolic link (root would
    write wherever it points), and only a regular file owned by this user."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PermissionDenied(f"{path} is a symbolic link: refusing to follow it") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        os.close(fd)
        raise PermissionDenied(f"{path} is not a regular file owned by this user")
    return fd


def _read_pid() -> int:
    """The pid in the pid file; 0 if there is none (yet)."""
    try:
        fd = _open(_pidfile(), os.O_RDONLY)
    except FileNotFoundError:
        return 0
    try:
        text = os.read(fd, 32).decode(errors="replace").strip()
    finally:
        os.close(fd)
    return int(text) if text.isdigit() else 0


def _take_lock() -> int:
    """Hold the engine's lock (flock on ``berth.lock``) for the life of this process:
    one engine per ``$BERTH_RUN``. Raises AlreadyUp naming the engine that holds it."""
    fd = _open(_lockfile(), os.O_RDWR | os.O_CREAT)
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            holder = _read_pid()
            if (holder and pid_alive(holder)) or time.monotonic() > deadline:
                os.close(fd)
                raise AlreadyUp(holder) from None
            time.sleep(0.02)  # held by a reader's probe, or an engine not yet written


    return True


def _write_pid() -> None:
    fd = _open(_pidfile(), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.write(fd, str(os.getpid()).encode())
    finally:
        os.close(fd)


def run_embedded(node: str = "local") -> int:
    logs.configure()
    os.umask(PRIVATE_UMASK)
    private_directory(_run_dir(), "BERTH_RUN")
    from berth.dockerapi import socket_path

    docker_socket = socket_path(_run_dir())  # a bad setting is refused before anything runs
    try:
        lock = _take_lock()
    except AlreadyUp as exc:
        print(exc, file=sys.stderr)
        return 1
    try:
        _write_pid()  # before anything starts: a refused pid file leaves nothing running
        cli_server = cliserver.spawn()
        docker_api = cliserver.spawn_docker_api(docker_socket)
        try:
            _serve(node)
        finally:
            cliserver.stop(docker_api)
            cliserver.stop(cli_server)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(_pidfile())
    finally:
        os.close(lock)  # the lock goes last: the pid file is gone by then
    leave_past_deadline()
    return 0


def leave_past_deadline() -> None:
    """End the process even if a command outlived the worker's shutdown deadline: its
    pool thread would otherwise hold the interpreter's exit (it joins them) forever.
    Everything that must be written was written or closed by then; the container the
    command acted on goes on, and the next start's reconciliation records its end."""
    # Daemon or not: the executor's threads are joined at exit either way (and a pool
    # fed by a daemon thread makes daemon threads).
    lingering = [t.name for t in threading.enumerate()
                 if t is not threading.main_thread() and t.is_alive()]
    if lingering:
        log.warning("leaving with %d command thread(s) still running past the shutdown "
                    "deadline: %s", len(lingering), ", ".join(lingering))
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _serve(node: str) -> None:
    endpoints = default_endpoints()
    config = WorkerConfig(node=node, backend=endpoints.backend)
    broker = Broker(endpoints.frontend, endpoints.backend, endpoints.events)
    broker.start()
    server = None
    try:
        worker = Worker(config)
        if config.metrics is not None:
            server = _serve_metrics(config.metrics, broker, worker)
        log.info("berth up: node %s, bus %s, store %s", node, endpoints.frontend,
                 worker.config.database)
        def stopping() -> None:
            sdnotify.notify("STOPPING=1")
            broker.close_intake()

        worker.serve_forever(on_stop=stopping, on_ready=lambda: sdnotify.notify(
            f"READY=1\nSTATUS=serving node {node}"))
    finally:
        if server is not None:
            server.close()
        broker.stop()


def _serve_metrics(address: str, broker: Broker, worker: Worker) -> MetricsServer:
    """One /metrics and /ready for the embedded broker and worker together."""
    from prometheus_client import CollectorRegistry

    from bus.metrics import MetricsServer, broker_metrics, broker_readiness, listen_address
    from workers.metrics import worker_readiness

    registry = CollectorRegistry()
    broker_metrics(broker, registry)
    worker.registry = registry
    broker_ready, worker_ready = broker_readiness(broker), worker_readiness(worker)
    return MetricsServer(listen_address(address), registry,
                         lambda: broker_ready() or worker_ready()).start()


def _answers() -> bool:
    """The engine answers a query that needs the worker (not just the broker)."""
    from bus.client import Client

    try:
        with Client(timeout=0.5, retries=0) as client:
            client.ps()
            return True
    except BerthError:
        return False


def _ready(timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _answers():
            return
        time.sleep(0.05)
    raise Timeout(f"the engine did not answer within {timeout:g}s")


def start_detached(node: str = "local", timeout: float = 30.0) -> int:
    """Start ``berth up`` in the background; report the engine that is up, truthfully:
    of two concurrent starts one takes the lock and the other names it."""
    logs.settings_from_env()  # a bad log setting is refused here, not in the child's log
    os.umask(PRIVATE_UMASK)
    root = private_directory(os.environ.get("BERTH_ROOT", DEFAULT_ROOT), "BERTH_ROOT")
    private_directory(_run_dir(), "BERTH_RUN")
    running = _running_pid()
    if running:
        _ready(timeout)
        print(f"berth is already up (pid {running})")
        return 0
    # The engine's log is rotated (berth.logs); what the process itself prints
    # outside logging (a crash) goes beside it.
    env = dict(os.environ)
    env.setdefault("BERTH_LOG_FILE", os.path.join(root, "berth.log"))
    log_path = env["BERTH_LOG_FILE"]
    stderr_path = os.path.join(root, "berth.stderr")
    with os.fdopen(_open(stderr_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "berth", "up", "--node", node],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True, env=env,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            holder = _running_pid()
            if not holder:
                raise Unavailable(
                    f"berth up exited with status {proc.returncode}; see {log_path} "
                    f"and {stderr_path}")
            _ready(max(deadline - time.monotonic(), 1.0))
            print(f"berth is already up (pid {holder})")
            return 0
        if _running_pid() == proc.pid and _answers():
            print(f"berth is up (pid {proc.pid}, log {log_path})")
            return 0
        time.sleep(0.05)
    raise Timeout(f"the engine did not answer within {timeout:g}s; see {log_path}")


def _running_pid() -> int | None:
    """The pid of the engine holding the lock; 0 if it holds it but has not written its
    pid yet; None if no engine holds it (a pid file left by a killed one is stale)."""
    try:
        fd = _open(_lockfile(), os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid()
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def stop_embedded(timeout: float = 30.0) -> int:
    pid = _running_pid()
    deadline = time.monotonic() + timeout
    while pid == 0 and time.monotonic() < deadline:  # an engine still starting
        time.sleep(0.05)
        pid = _running_pid()
    if not pid:
        print("berth is not running")
        return 0
    os.kill(pid, signal.SIGTERM)
    while time.monotonic() < deadline:
        if _running_pid() is None and not pid_alive(pid):
            print("berth is down (containers keep running)")
            return 0
        time.sleep(0.05)
    raise Timeout(f"berth (pid {pid}) did not stop within {timeout:g}s")
