"""A berth cluster on one machine: a broker, PostgreSQL and one worker per "host".

Topology (see tests/netns.py for the hosts)::

    root namespace                          host namespaces (berth-<owner>-<N>-<host>)
    bridge bmh<N> 10.231.N.1 ── veth ──▶ eth0 10.231.N.10  berth worker --node a
      berth broker (tcp on 10.231.N.1)  ── veth ──▶ eth0 10.231.N.11  berth worker --node b
      PostgreSQL   (tcp on 10.231.N.1)          ...
      test client / benchmark

Every part is a real process started the way an operator would start it: ``berth
broker`` with tcp endpoints bound to the bridge address, ``berth worker --node
NAME`` inside each host namespace with its own BERTH_ROOT and BERTH_RUN, and
BERTH_DB naming the shared PostgreSQL over the veth link. Workers can be killed
(-9) and restarted to test what a lost host means.

CURVE keys are one parameter (``curve``): :class:`Curve` is the single place that
knows how keys are made and handed to the broker, the workers and the clients.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from bus.client import Client
from bus.endpoints import Endpoints, from_run_dir
from bus.keys import ClientKeys, client_keys
from engine.errors import BerthError
from engine.store.store import EventStore
from tests import netns, pgserver
from tests.helpers import wait_until

log = logging.getLogger(__name__)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BROKER_START_S = 30.0
WORKER_START_S = 60.0
STOP_GRACE_S = 10.0


# ---------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class Curve:
    """CURVE key material for one cluster: THE place where keys are switched on.

    The broker serves tcp only with CURVE (bus/security.py): it gets its secret key
    and the two authorised directories as options; each worker and each client
    gets its own secret key and the broker's public key (``BERTH_KEY``,
    ``BERTH_SERVER_KEY``). A key's name is the peer's identity on the bus: workers
    are named after their node, the test's publisher is ``client``. Keys are made
    and authorised with the ``berth keys`` commands an operator would use.
    """

    directory: str

    @staticmethod
    def generate(directory: str, workers: Sequence[str],
                 publishers: Sequence[str] = ("client",)) -> Curve:
        """One key pair per peer, and the workers' and publishers' public keys
        authorised in the broker's directories."""
        curve = Curve(directory)

        def berth_keys(*args: str) -> None:
            subprocess.run([sys.executable, "-m", "berth", "keys", *args], env=_base_env(),
                           check=True, capture_output=True, timeout=30)

        for name in ("broker", *workers, *publishers):
            berth_keys("generate", name, "--dir", directory)
        for role, members in (("worker", workers), ("publisher", publishers)):
            for member in members:
                berth_keys("authorize", role, curve.public(member),
                           "--dir", curve.authorised(role))
        return curve

    def secret(self, name: str) -> str:
        return os.path.join(self.directory, f"{name}.key_secret")

    def public(self, name: str) -> str:
        return os.path.join(self.directory, f"{name}.key")

    def authorised(self, role: str) -> str:
        """The broker's authorised directory for ``worker`` or ``publisher`` keys."""
        return os.path.join(self.directory, "authorized", f"{role}s")

    def broker_args(self) -> list[str]:
        return ["--key", self.secret("broker"),
                "--authorized-workers", self.authorised("worker"),
                "--authorized-publishers", self.authorised("publisher")]

    def env(self, name: str) -> dict[str, str]:
        """What the process of peer ``name`` (a worker or a publisher) needs. A worker
        admits the broker's clients on its tcp stream socket, so it reads the same
        authorised-publishers directory (a copy of it on a real host)."""
        return {"BERTH_KEY": self.secret(name), "BERTH_SERVER_KEY": self.public("broker"),
                "BERTH_AUTHORIZED_PUBLISHERS": self.authorised("publisher")}

    def client_keys(self, name: str = "client") -> ClientKeys:
        """Keys for an in-process :class:`bus.client.Client`."""
        return client_keys(self.secret(name), self.public("broker"))


# ---------------------------------------------------------------------------- cluster


def _base_env() -> dict[str, str]:
    """The environment of every process we start: ours minus berth's own settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
    env["PYTHONPATH"] = REPO
    return env


def _free_ports(address: str, count: int) -> list[int]:
    """Distinct free tcp ports on ``address`` (held open together while chosen);
    only our processes bind the bridge address, so they stay free for the broker."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                 for _ in range(count)]
        for sock in socks:
            sock.bind((address, 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def _terminate(proc: subprocess.Popen[bytes], grace: float = STOP_GRACE_S) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(grace)


@dataclass(frozen=True)
class LocalHost:
    """A "host" that is the root namespace itself: the ipc baseline of the benchmark
    runs its workers here, with the same interface as :class:`tests.netns.Host`."""

    name: str

    def run(self, argv: Sequence[str], env: Mapping[str, str] | None = None, *,
            timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), env=None if env is None else dict(env),
                              capture_output=True, text=True, timeout=timeout, check=False)

    def popen(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
              **kwargs: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(list(argv), env=None if env is None else dict(env), **kwargs)

    def holds(self, pid: int) -> bool:
        """Whether process ``pid`` lives in the root network namespace (ours)."""
        try:
            return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino
        except OSError:
            return False


@dataclass
class HostState:
    """One host's worker and directories."""

    host: netns.Host | LocalHost
    root: str
    run: str
    log: str
    proc: subprocess.Popen[bytes] | None = None


@dataclass
class Cluster:
    """A running cluster; build it with :func:`cluster`."""

    network: netns.Network | None
    pg: pgserver.PgServer
    db_url: str
    endpoints: Endpoints
    rootfs: str
    tmp: str
    curve: Curve | None = None
    hosts: dict[str, HostState] = field(default_factory=dict)
    broker_proc: subprocess.Popen[bytes] | None = None
    clients: list[Client] = field(default_factory=list)
    broker_command: Sequence[str] = (sys.executable, "-m", "berth", "broker")
    """How the broker is started; its endpoint options are appended."""

    # ------------------------------------------------------------------ environment

    def env(self, *, role: str = "client", host: str | None = None) -> dict[str, str]:
        """Environment for a berth process: endpoints, store and (with CURVE) keys."""
        env = _base_env()
        env.update(BERTH_BUS=self.endpoints.frontend, BERTH_BUS_WORKERS=self.endpoints.backend,
                   BERTH_BUS_EVENTS=self.endpoints.events, BERTH_DB=self.db_url,
                   BERTH_ACTOR=f"test@{host or 'root'}")
        if host is not None:
            state = self.hosts[host]
            # Hosts are about the bus and the store, not container networks (which
            # are per node): their containers get none.
            env.update(BERTH_ROOT=state.root, BERTH_RUN=state.run,
                       BERTH_DEFAULT_NETWORK="none")
        if self.curve is not None and role != "broker":
            env.update(self.curve.env(role))
        return env

    # ------------------------------------------------------------------ broker

    def start_broker(self) -> None:
        argv = [*self.broker_command, "--bind", self.endpoints.frontend,
                "--workers-bind", self.endpoints.backend, "--events-bind", self.endpoints.events]
        if self.curve is not None:
            argv += self.curve.broker_args()
        log = os.path.join(self.tmp, "broker.log")
        with open(log, "ab") as out:
            self.broker_proc = subprocess.Popen(argv, env=self.env(role="broker"),
                                                stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        probe = self.client(timeout=0.5, retries=0)
        wait_until(lambda: self._alive("the broker", self.broker_proc, log) and _pings(probe),
                   BROKER_START_S, interval=0.05, what="the broker answering on tcp")

    def nodes(self) -> list[str]:
        """Nodes the broker has a live worker for (its own view, from query.ping)."""
        with self.client(timeout=2, retries=1) as c:
            return sorted({w["node"] for w in c.ping()["workers"]})

    # ------------------------------------------------------------------ workers

    def add_host(self, host: netns.Host | LocalHost) -> HostState:
        base = os.path.join(self.tmp, host.name)
        state = HostState(host, os.path.join(base, "root"), os.path.join(base, "run"),
                          os.path.join(base, "worker.log"))
        os.makedirs(base, mode=0o700, exist_ok=True)
        self.hosts[host.name] = state
        return state

    def start_worker(self, name: str, *, wait: bool = True) -> subprocess.Popen[bytes]:
        """``berth worker --node NAME`` inside the host's namespace."""
        state = self.hosts[name]
        if state.proc is not None and state.proc.poll() is None:
            raise RuntimeError(f"the worker of host {name} is already running")
        argv = [sys.executable, "-m", "berth", "worker", "--node", name,
                "--connect", self.endpoints.backend]
        with open(state.log, "ab") as log:
            state.proc = state.host.popen(argv, env=self.env(role=name, host=name),
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        if wait:
            self.wait_worker(name)
        return state.proc

    def wait_worker(self, name: str, timeout: float = WORKER_START_S) -> None:
        """Until the broker lists a live worker for the node (it has sent Ready)."""
        state = self.hosts[name]
        wait_until(lambda: self._alive(f"the worker of host {name}", state.proc, state.log)
                   and name in self.nodes(),
                   timeout, interval=0.05, what=f"the worker of host {name} to connect")

    def kill_worker(self, name: str) -> None:
        """kill -9 the host's worker, as a crashed host would; its containers live on."""
        proc = self.hosts[name].proc
        assert proc is not None
        proc.kill()
        proc.wait(STOP_GRACE_S)

    def stop_worker(self, name: str) -> None:
        proc = self.hosts[name].proc
        if proc is not None:
            _terminate(proc)

    def wait_node_gone(self, name: str, timeout: float = 10.0) -> None:
        """Until the broker has dropped the node's worker (missed heartbeats)."""
        wait_until(lambda: name not in self.nodes(), timeout, interval=0.05,
                   what=f"the broker to drop node {name}")

    @staticmethod
    def _alive(what: str, proc: subprocess.Popen[bytes] | None, log: str) -> bool:
        """True while ``proc`` runs; its exit (a start-up failure) fails at once,
        with the end of its log, instead of running into the deadline."""
        if proc is not None and proc.poll() is not None:
            try:
                with open(log, errors="replace") as f:
                    tail = f.read()[-3000:]
            except OSError:
                tail = ""
            raise AssertionError(f"{what} exited with status {proc.returncode}:\n{tail}")
        return True

    # ------------------------------------------------------------------ clients

    def client(self, **kw: Any) -> Client:
        """A client in the root namespace over tcp (closed with the cluster)."""
        if self.curve is not None:
            kw.setdefault("curve", self.curve.client_keys())
        c = Client(self.endpoints.frontend, events_endpoint=self.endpoints.events, **kw)
        self.clients.append(c)
        return c

    def cli(self, *args: str, host: str | None = None,
            timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """The ``berth`` CLI, in the root namespace or inside a host's namespace."""
        argv = [sys.executable, "-m", "berth", *args]
        env = self.env()
        if host is None:
            return subprocess.run(argv, env=env, capture_output=True, text=True,
                                  timeout=timeout, check=False)
        return self.hosts[host].host.run(argv, env, timeout=timeout)

    def store(self) -> EventStore:
        """The shared event store, read over the bridge like the workers do."""
        return EventStore(self.db_url)

    def log_problems(self) -> list[str]:
        """What is wrong with the shared event log, as sentences (empty: nothing).

        Checked: global positions strictly increase; each stream's versions are
        1..n with no gap; each stream was written by one node only (the worker of
        the container's host: one writer per stream, even across hosts); the read
        model equals a replay; the audit hash chain is intact.
        """
        problems: list[str] = []
        versions: dict[str, list[int]] = {}
        writers: dict[str, set[str]] = {}
        with self.store() as store:
            last = 0
            for recorded in store.iter_all():
                meta = recorded.metadata
                if meta.position <= last:
                    problems.append(f"position {meta.position} follows {last}")
                last = meta.position
                versions.setdefault(meta.stream, []).append(meta.stream_version)
                writers.setdefault(meta.stream, set()).add(meta.node)
            for stream, found in versions.items():
                if sorted(found) != list(range(1, len(found) + 1)):
                    problems.append(f"stream {stream} has versions {sorted(found)}")
                if len(writers[stream]) != 1:
                    problems.append(f"stream {stream} written by nodes {sorted(writers[stream])}")
            problems += [f"read model: {line}" for line in store.verify_read_model()]
            broken = store.verify_chain()
            if broken is not None:
                problems.append(f"audit chain broken at position {broken}")
        return problems

    # ------------------------------------------------------------------ cleanup

    def remove_all(self) -> None:
        """Remove every container through the bus (recorded in the log) while the
        workers are up; used between tests sharing one cluster."""
        c = self.client(timeout=5, retries=1)
        for row in c.ps(all=True):
            try:
                c.remove(row["id"], force=True, node=row["node"])
            except BerthError:
                pass  # its worker is down: force_delete_leftovers gets it at close

    def force_delete_leftovers(self) -> None:
        """Delete containers with runc directly (conmon outlives the workers)."""
        from engine.runtime import OCIRuntime, RuntimeConfig

        for state in self.hosts.values():
            runtime = OCIRuntime(RuntimeConfig(state_dir=state.root,
                                               tmp_dir=os.path.join(state.run, "runtime")))
            containers = os.path.join(state.root, "containers")
            for cid in os.listdir(containers) if os.path.isdir(containers) else []:
                try:
                    runtime.delete(cid, force=True)
                except BerthError:
                    pass
                runtime.cleanup(cid)

    def close(self) -> None:
        """Stop everything this cluster started, in dependency order, best effort."""
        for c in self.clients:
            c.close()
        self.clients.clear()
        broker_up = self.broker_proc is not None and self.broker_proc.poll() is None
        steps: list[tuple[str, Callable[[], object]]] = []
        if broker_up:
            steps.append(("remove the containers through the bus", self.remove_all))
        steps += [(f"stop the worker of {name}", functools.partial(_terminate, s.proc))
                  for name, s in self.hosts.items() if s.proc]
        steps.append(("delete leftover containers", self.force_delete_leftovers))
        if self.broker_proc is not None:
            steps.append(("stop the broker", functools.partial(_terminate, self.broker_proc)))
        for what, step in steps:
            try:
                step()
            except Exception:  # teardown goes on: the network and PostgreSQL go last
                log.warning("cluster teardown: could not %s", what, exc_info=True)
        for c in self.clients:
            c.close()


def _pings(c: Client) -> bool:
    try:
        c.ping()
        return True
    except BerthError:
        return False


@contextmanager
def cluster(host_names: Sequence[str], rootfs: str, *, transport: str = "tcp",
            curve: bool = True, start_workers: bool = True, durable: bool = False,
            broker_command: Sequence[str] | None = None,
            publishers: Sequence[str] = ("client",)) -> Iterator[Cluster]:
    """PostgreSQL, the schema, a broker and one worker per host, torn down on exit
    (also when setting up fails half way).

    ``transport="tcp"``: each host is a network namespace on a bridge, the broker
    and PostgreSQL listen on the bridge address, with CURVE keys (``curve=False``
    would run plain tcp, which a berth broker refuses since bus/security.py landed;
    it stays a parameter for a broker that allows it). ``transport="ipc"``: the
    same parts all in the root namespace on ipc sockets, the benchmark's baseline.
    ``durable``: PostgreSQL with fsync on (benchmarks). ``broker_command``: start
    the broker with this instead of ``berth broker`` (a benchmark's own broker).
    ``publishers``: names of the publisher keys to make (``client`` is the one
    :meth:`Cluster.client` uses).
    """
    if transport not in ("tcp", "ipc"):
        raise ValueError(f"transport must be tcp or ipc, not {transport!r}")
    if pgserver.find_bin_dir() is None:
        raise pgserver.PgUnavailable("the multi-host cluster needs the PostgreSQL binaries")
    with ExitStack() as stack:
        tmp = tempfile.mkdtemp(prefix="berth-mh-", dir="/tmp")
        stack.callback(shutil.rmtree, tmp, True)
        net: netns.Network | None = None
        hosts: list[netns.Host | LocalHost]
        if transport == "tcp":
            net = netns.create_network(host_names)
            stack.callback(net.close)
            hosts = list(net.hosts.values())
        else:
            hosts = [LocalHost(name) for name in host_names]
        # Always a private server: it must listen on the bridge, which an external
        # BERTH_PG_HOST server cannot.
        server = pgserver.start_private(
            durable=durable, extra_listen=(net.gateway,) if net else (),
            trust_cidrs=(net.cidr,) if net else ())
        stack.callback(pgserver.stop, server)
        reachable = dataclasses.replace(server, host=net.gateway) if net else server
        db_url = reachable.url(reachable.create_database("berth_mh"))
        if net is not None:
            endpoints = Endpoints(*(f"tcp://{net.gateway}:{port}"
                                    for port in _free_ports(net.gateway, 3)))
        else:
            endpoints = from_run_dir(os.path.join(tmp, "bus"))
        use_curve = curve and transport == "tcp"
        keys = (Curve.generate(os.path.join(tmp, "keys"), host_names, publishers)
                if use_curve else None)
        c = Cluster(net, reachable, db_url, endpoints, rootfs, tmp, keys)
        if broker_command is not None:
            c.broker_command = tuple(broker_command)
        stack.callback(c.close)
        for host in hosts:
            c.add_host(host)
        migrate = c.cli("db", "upgrade", timeout=120)
        if migrate.returncode != 0:
            raise RuntimeError(f"berth db upgrade failed: {migrate.stderr}")
        c.start_broker()
        if start_workers:
            for name in host_names:
                c.start_worker(name, wait=False)
            for name in host_names:
                c.wait_worker(name)
        yield c
