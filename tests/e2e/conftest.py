"""A real embedded engine per test: broker and worker on private ipc sockets, a
private SQLite store, real runc/conmon containers, all removed afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from bus.broker import Broker
from bus.client import Client
from bus.endpoints import Endpoints, from_run_dir
from engine.errors import BerthError, NotFound
from engine.faults import ARMED_ENV, POINTS_ENV, arming_text
from engine.networks.rules import Network
from engine.networks.setup import NetworkSetup
from engine.runtime import OCIRuntime
from engine.store.store import EventStore
from tests.helpers import wait_until
from workers.worker import Worker, WorkerConfig

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class Engine:
    root: str
    run: str
    rootfs: str
    endpoints: Endpoints
    broker: Broker
    worker: Worker | None = None
    worker_proc: subprocess.Popen[bytes] | None = None
    clients: list[Client] = field(default_factory=list)
    default_network: str | None = None
    """networks (issue 11): the worker's default network (None: berth's default)."""

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.root}/berth.db"

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(BERTH_ROOT=self.root, BERTH_RUN=self.run, BERTH_DB=self.db_url,
                   BERTH_BUS=self.endpoints.frontend, BERTH_BUS_WORKERS=self.endpoints.backend,
                   BERTH_BUS_EVENTS=self.endpoints.events, PYTHONPATH=REPO)
        if self.default_network:
            env["BERTH_DEFAULT_NETWORK"] = self.default_network
        return env

    def client(self, **kw: Any) -> Client:
        c = Client(self.endpoints.frontend, events_endpoint=self.endpoints.events, **kw)
        self.clients.append(c)
        return c

    def cli(
        self, *args: str, timeout: float = 60, input: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "berth", *args], env=self.env, capture_output=True, check=False,
            text=True, timeout=timeout, input=None if input is None else input.decode(),
        )

    def config(self) -> WorkerConfig:
        return WorkerConfig(node="local", root=self.root, run=self.run, db_url=self.db_url,
                            backend=self.endpoints.backend,
                            default_network=self.default_network)

    def start_worker(self) -> Worker:
        self.worker = Worker(self.config())
        self.worker.start()
        wait_until(lambda: self.worker is not None and self.worker.link is not None
                   and self.worker.link.connected.is_set(), 10, what="worker connected")
        return self.worker

    def start_worker_process(self) -> subprocess.Popen[bytes]:
        """A worker in its own process, so a test can kill -9 it."""
        self.worker_proc = subprocess.Popen(
            [sys.executable, "-m", "berth", "worker", "--node", "local",
             "--connect", self.endpoints.backend],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        with self.client(timeout=1, retries=0) as c:
            wait_until(lambda: _answers(c), 30, what="worker process answering")
        return self.worker_proc

    def start_armed_worker(self, point: str) -> subprocess.Popen[bytes]:
        """A worker process that kills itself -9 at crash point ``point``
        (engine.faults: the environment names it, a file only this test wrote
        confirms it)."""
        path = os.path.join(os.path.dirname(self.root), "faults.armed")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(arming_text(point))
        env = dict(self.env, **{POINTS_ENV: point, ARMED_ENV: os.path.realpath(path)})
        self.worker_proc = subprocess.Popen(
            [sys.executable, "-m", "berth", "worker", "--node", "local",
             "--connect", self.endpoints.backend],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self.worker_proc

    def through_crash(self, point: str, *args: str,
                      while_down: Callable[[], object] | None = None,
                      ) -> subprocess.CompletedProcess[str]:
        """``berth ARGS`` against a worker armed at crash point ``point``: this
        engine's worker process is replaced by the armed one, which dies there;
        ``while_down`` looks at what it left; the next worker takes the command the
        broker held for the node. The CLI's result."""
        assert self.worker_proc is not None, "start_worker_process first"
        self.worker_proc.terminate()
        self.worker_proc.wait(30)
        armed = self.start_armed_worker(point)
        proc = subprocess.Popen([sys.executable, "-m", "berth", *args], env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert armed.wait(60) == -signal.SIGKILL, f"the worker did not die at {point}"
            if while_down is not None:
                while_down()
            self.start_worker_process()
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def store(self) -> EventStore:
        return EventStore(self.db_url)


def _no_user_networks(name: str) -> Network:
    raise NotFound(f"no such network: {name}")


def _answers(c: Client) -> bool:
    try:
        c.ps()
        return True
    except BerthError:
        return False


def _remove_all(engine: Engine) -> None:
    config = engine.config().runtime_config()
    # networks (issue 11): what a test left behind leaves its network too (CNI DEL).
    runtime = OCIRuntime(config, networks=NetworkSetup(config.tmp_dir, _no_user_networks))
    containers_dir = os.path.join(engine.root, "containers")
    ids = os.listdir(containers_dir) if os.path.isdir(containers_dir) else []
    for cid in ids:
        try:
            runtime.delete(cid, force=True)
        except BerthError:
            pass
        runtime.cleanup(cid)
    for cid in runtime.networks.attached():
        runtime.networks.leave(cid)


@pytest.fixture
def default_network() -> str | None:
    """The worker's default network: berth's own default. A module whose tests are
    about something else may override this fixture with "none" (no CNI cost)."""
    return None


@pytest.fixture
def engine(short_tmp: str, busybox_rootfs: str,
           default_network: str | None) -> Iterator[Engine]:
    root, run = os.path.join(short_tmp, "root"), os.path.join(short_tmp, "run")
    endpoints = from_run_dir(run)
    # Default heartbeats (0.5 s, 3 missed): shorter ones drop a live worker when
    # twenty CLI processes starve it of CPU on a 2-core machine.
    broker = Broker(endpoints.frontend, endpoints.backend, endpoints.events)
    broker.start()
    eng = Engine(root, run, busybox_rootfs, endpoints, broker,
                 default_network=default_network)
    try:
        yield eng
    finally:
        for c in eng.clients:
            c.close()
        if eng.worker is not None:
            eng.worker.close()
        if eng.worker_proc is not None and eng.worker_proc.poll() is None:
            eng.worker_proc.send_signal(signal.SIGTERM)
            try:
                eng.worker_proc.wait(10)
            except subprocess.TimeoutExpired:
                eng.worker_proc.kill()
        _remove_all(eng)
        broker.stop()


@pytest.fixture
def up(engine: Engine) -> Engine:
    """The engine with an in-process worker running."""
    engine.start_worker()
    return engine
