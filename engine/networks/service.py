"""The application core's path for networks: create, remove, list, inspect, and the
reconciliation of container networks after a worker's death.

Like ``ContainerService`` for containers: take a lock, load what the log says,
ask the pure rules (``engine.networks.rules``), carry it out, append. A network's events
are on its own stream ``network:NAME``; the definition is in the shared log, the
bridge is made on demand by the CNI bridge plugin on each node that runs a
container on it (see docs/operations.md, "Networks").
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from dataclasses import dataclass
from typing import Any

from engine import events as ev
from engine.commands import Causation
from engine.containers.projection import RUNNING
from engine.errors import BerthError, NotFound
from engine.networks import rules as nw
from engine.networks.setup import NetworkSetup, remove_bridge, remove_network_rules
from engine.store.caused import CausedWrites
from engine.store.store import EventStore

log = logging.getLogger("berth.networks")


@dataclass(frozen=True, slots=True)
class NetworkOutcome:
    result: dict[str, Any]
    positions: tuple[int, ...] = ()


ROUTES = "/proc/net/route"
MAX_ROUTES_BYTES = 4 * 1024 * 1024
"""What of the host's routing table is read (a host with more routes than this is one
whose routes beyond it are not avoided: a subnet given with --subnet still works)."""


def _host_routes() -> list[ipaddress.IPv4Network]:
    """The host's IPv4 routes now (none if the table cannot be read: the engine's own
    networks are still avoided)."""
    try:
        with open(ROUTES, encoding="ascii", errors="replace") as f:
            text = f.read(MAX_ROUTES_BYTES)
    except OSError as exc:
        log.warning("cannot read %s (%s): host routes not avoided", ROUTES, exc)
        return []
    return nw.routes_of(text)


def fold_stream(recorded: list[ev.RecordedEvent]) -> nw.Network | None:
    """A network's stream folded: the network it defines now, or None if removed."""
    network: nw.Network | None = None
    for r in recorded:
        e = r.event
        if isinstance(e, ev.NetworkCreated):
            network = nw.Network(e.name, e.subnet, e.gateway, e.bridge)
        elif isinstance(e, ev.NetworkRemoved):
            network = None
    return network


def lookup_network(store: EventStore, name: str) -> nw.Network:
    """The network called ``name`` (one indexed read of its stream). A function of the
    store alone, so the container's network setup can be given it before the network
    service (which holds that setup) exists."""
    if name == nw.DEFAULT_NAME:
        return nw.DEFAULT
    nw.validate_name(name)
    network = fold_stream(store.read_stream(nw.stream_of(name)))
    if network is None:
        raise NotFound(f"no such network: {name}")
    return network


class NetworkService:
    """Networks of one node's worker; ``setup`` is None where no runtime has networks."""

    def __init__(self, store: EventStore, setup: NetworkSetup | None, node: str) -> None:
        self.store = store
        self.setup = setup
        self.node = node
        self._lock = threading.Lock()
        # Announces nothing: its events reach subscribers when they fill a gap.
        self.writes = CausedWrites(store, node)

    @property
    def actor(self) -> str:
        return f"berth-worker@{self.node}"

    # -- reads --------------------------------------------------------------------------

    def lookup(self, name: str) -> nw.Network:
        """The network called ``name`` (one indexed read of its stream)."""
        return lookup_network(self.store, name)

    def all(self) -> dict[str, nw.Network]:
        """Every network: the built-in one, then the log's, by name."""
        found: dict[str, nw.Network] = {}
        for r in self.store.query(types=[ev.NETWORK_CREATED, ev.NETWORK_REMOVED]):
            e = r.event
            if isinstance(e, ev.NetworkCreated):
                found[e.name] = nw.Network(e.name, e.subnet, e.gateway, e.bridge)
            elif isinstance(e, ev.NetworkRemoved):
                found.pop(e.name, None)
        return {nw.DEFAULT_NAME: nw.DEFAULT, **dict(sorted(found.items()))}

    def attached(self, name: str) -> list[nw.Member]:
        return self.setup.members(name) if self.setup is not None else []

    def address_of(self, container_id: str) -> dict[str, Any] | None:
        """Where the container is attached now (its network, address, gateway,
        aliases), for inspect; None when it holds no address on this node."""
        if self.setup is None:
            return None
        on, member = self.setup.member_of(container_id)
        if member is None:
            return None
        try:
            network = self.lookup(on)
        except NotFound:
            return None
        return {"network": on, "ip": member.ip, "gateway": network.gateway,
                "prefix": int(network.subnet.partition("/")[2] or 0),
                "aliases": list(member.aliases)}

    def list(self) -> list[dict[str, Any]]:
        return [{**n.to_data(), "containers": len(self.attached(n.name))}
                for n in self.all().values()]

    def inspect(self, name: str) -> dict[str, Any]:
        network = self.lookup(name)
        return {**network.to_data(), "node": self.node,
                "containers": [{"id": m.container_id, "name": m.name, "ip": m.ip}
                               for m in self.attached(name)]}

    # -- changes ------------------------------------------------------------------------

    def _replayed(self, causation: Causation) -> NetworkOutcome | None:
        done = self.writes.done(causation)
        if done is None:
            return None
        return NetworkOutcome({"replayed": True, "name": done.stream.partition(":")[2]},
                              tuple(done.positions))

    def create(self, name: str, subnet: str | None, gateway: str | None,
               causation: Causation) -> NetworkOutcome:
        with self._lock:
            replayed = self._replayed(causation)
            if replayed is not None:
                return replayed
            existing = self.all()
            network = nw.plan_network(name, subnet, gateway, existing,
                                      nw.free_subnet(existing.values(), _host_routes()))
            stream = nw.stream_of(name)
            version = len(self.store.read_stream(stream))
            recorded = self.writes.append(
                stream, version, [ev.NetworkCreated(network.name, network.subnet,
                                                    network.gateway, network.bridge)],
                causation)
        return NetworkOutcome(network.to_data(), tuple(r.position for r in recorded))

    def remove(self, name: str, causation: Causation) -> NetworkOutcome:
        with self._lock:
            replayed = self._replayed(causation)
            if replayed is not None:
                return replayed
            networks = self.all()
            attached = [m.container_id for m in self.attached(name)]
            network = nw.check_removable(name, networks, attached)
            stream = nw.stream_of(name)
            version = len(self.store.read_stream(stream))
            recorded = self.writes.append(stream, version, [ev.NetworkRemoved(name)], causation)
            remove_bridge(network.bridge)
            remove_network_rules(network)
            if self.setup is not None:
                self.setup.forget_network(name)
        return NetworkOutcome({"name": name}, tuple(r.position for r in recorded))

    # -- reconciliation -----------------------------------------------------------------

    def reconcile(self) -> tuple[int, int]:
        """After the container reconciliation: CNI DEL (and the namespace and files
        gone) for every container with network state that the log no longer has
        alive, CNI CHECK for the running ones. Returns (released, failed checks)."""
        if self.setup is None:
            return 0, 0
        released = failed = 0
        for cid in self.setup.attached():
            try:
                state = self.store.get_container(cid, include_removed=True)
                gone = state.removed
            except NotFound:
                gone = True
            except BerthError as exc:
                log.error("cannot tell whether container %s lives: %s", cid, exc)
                continue
            if gone:
                self.setup.leave(cid)
                released += 1
                log.warning("released the network of container %s, which no longer "
                            "exists", cid)
            elif state.state == RUNNING:
                problem = self.setup.check(cid)
                if problem:
                    failed += 1
                    log.error("network of container %s fails CNI CHECK: %s", cid, problem)
        return released, failed
