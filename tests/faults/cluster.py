"""Real engine processes a fault test can kill -9: a broker process, worker processes
(each its own node, ``BERTH_ROOT`` and ``BERTH_RUN``) sharing one store.

Everything a ``Cluster`` starts is stopped by ``close`` (SIGKILL if SIGTERM is not
heeded), and every container any node made is force-deleted, so a failing test
leaves no process and no container behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from bus.broker import Broker
from bus.client import Client
from bus.endpoints import Endpoints, from_run_dir
from engine.errors import BerthError
from engine.runtime import OCIRuntime, RuntimeConfig
from engine.store.retry import NO_RETRY
from engine.store.store import EventStore
from tests.helpers import wait_until

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class Node:
    name: str
    root: str
    run: str
    proc: subprocess.Popen[bytes] | None = None
    log: str = ""

    def runtime(self) -> OCIRuntime:
        return OCIRuntime(
            RuntimeConfig(state_dir=self.root, tmp_dir=os.path.join(self.run, "runtime"))
        )


@dataclass
class Cluster:
    """A broker (thread or process) and worker processes on one machine."""

    base: str
    rootfs: str
    db_url: str
    endpoints: Endpoints = field(init=False)
    broker: Broker | None = None
    broker_proc: subprocess.Popen[bytes] | None = None
    nodes: dict[str, Node] = field(default_factory=dict)
    clients: list[Client] = field(default_factory=list)
    extra_env: dict[str, str] = field(
        default_factory=lambda: {"BERTH_DEFAULT_NETWORK": "none"})
    """Added to every process's environment. Faults are not about networks: their
    containers get none (no CNI cost, nothing on the host's bridges to clean up)."""

    def __post_init__(self) -> None:
        self.endpoints = from_run_dir(os.path.join(self.base, "bus"))

    # -- environment -------------------------------------------------------------

    def env(self, node: Node | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(BERTH_DB=self.db_url, BERTH_BUS=self.endpoints.frontend,
                   BERTH_BUS_WORKERS=self.endpoints.backend,
                   BERTH_BUS_EVENTS=self.endpoints.events, PYTHONPATH=REPO)
        if node is not None:
            env.update(BERTH_ROOT=node.root, BERTH_RUN=node.run)
        env.update(self.extra_env)
        return env

    def client(self, **kw: Any) -> Client:
        c = Client(self.endpoints.frontend, events_endpoint=self.endpoints.events, **kw)
        self.clients.append(c)
        return c

    def store(self) -> EventStore:
        """A store for the test's own checks: fails at once instead of retrying."""
        return EventStore(self.db_url, retry=NO_RETRY)

    def health(self) -> dict[str, Any]:
        with Client(self.endpoints.frontend, timeout=1, retries=0) as c:
            return c.ping()

    def _serving(self, node: str) -> bool:
        try:
            return any(w["node"] == node for w in self.health()["workers"])
        except BerthError:
            return False

    # -- broker --------------------------------------------------------------------

    def start_broker_thread(self) -> Broker:
        self.broker = Broker(self.endpoints.frontend, self.endpoints.backend,
                             self.endpoints.events, heartbeat_interval=0.2)
        self.broker.start()
        return self.broker

    def start_broker_process(self) -> subprocess.Popen[bytes]:
        """``berth broker`` on the cluster's endpoints (from the environment)."""
        with open(os.path.join(self.base, "broker.log"), "ab") as log:
            self.broker_proc = subprocess.Popen(
                [sys.executable, "-m", "berth", "broker"], env=self.env(),
                stdout=subprocess.DEVNULL, stderr=log)

        def answers() -> bool:
            try:
                return bool(self.health()["broker"])
            except BerthError:
                return False

        wait_until(answers, 30, interval=0.05, what="broker process answering")
        return self.broker_proc

    # -- workers ---------------------------------------------------------------------

    def node(self, name: str) -> Node:
        if name not in self.nodes:
            d = os.path.join(self.base, name)
            self.nodes[name] = Node(name, os.path.join(d, "root"), os.path.join(d, "run"),
                                    log=os.path.join(self.base, f"{name}.log"))
        return self.nodes[name]

    def start_worker(self, name: str, *, wait: bool = True) -> subprocess.Popen[bytes]:
        """``berth worker --node NAME`` in its own process; waits until the broker
        routes to it (unless ``wait=False``)."""
        node = self.node(name)
        with open(node.log, "ab") as log:
            node.proc = subprocess.Popen(
                [sys.executable, "-m", "berth", "worker", "--node", name,
                 "--connect", self.endpoints.backend],
                env=self.env(node), stdout=subprocess.DEVNULL, stderr=log)
        if wait:
            self.wait_serving(name)
        return node.proc

    def wait_serving(self, name: str, timeout: float = 60) -> None:
        node = self.nodes[name]

        def ready() -> bool:
            if node.proc is not None and node.proc.poll() is not None:
                raise AssertionError(f"worker {name} exited with {node.proc.returncode}: "
                                     f"{_tail(node.log)}")
            return self._serving(name)

        wait_until(ready, timeout, interval=0.05, what=f"worker {name} serving")

    # -- faults and teardown ----------------------------------------------------------

    @staticmethod
    def kill9(proc: subprocess.Popen[bytes] | None) -> None:
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def close(self) -> None:
        for c in self.clients:
            c.close()
        procs = [n.proc for n in self.nodes.values()] + [self.broker_proc]
        for proc in procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            if proc is None:
                continue
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if self.broker is not None:
            self.broker.stop()
        for node in self.nodes.values():
            remove_all_containers(node)


def remove_all_containers(node: Node) -> None:
    """Force-delete every container the node's runtime made (even ones never recorded)."""
    containers_dir = os.path.join(node.root, "containers")
    if not os.path.isdir(containers_dir):
        return
    runtime = node.runtime()
    for cid in os.listdir(containers_dir):
        try:
            runtime.delete(cid, force=True)
        except BerthError:
            pass
        runtime.cleanup(cid)


def _tail(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()[-3000:]
    except OSError:
        return ""
