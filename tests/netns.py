"""Several "hosts" on one machine: network namespaces joined by a bridge we own.

A :class:`Network` is one private IPv4 /24 in 10.231.0.0/16: a bridge in the root
namespace holds ``10.231.N.1`` (the "hub": the broker and PostgreSQL listen there),
and each host is a namespace ``berth-<owner>-<N>-<host>`` whose ``eth0`` (a veth
pair, the other end enslaved to the bridge) holds ``10.231.N.<10+i>``. Hosts get no
default route, so nothing they run can send traffic beyond the bridge.

Why ``nsenter --net`` and not ``ip netns exec``: ``ip netns exec`` also unshares
the mount namespace and remounts ``/sys`` for the namespace, which hides
``/sys/fs/cgroup``; runc then cannot place containers in cgroups. Entering only
the network namespace keeps the host's view of the filesystem, which is what a
worker on a real second host would have.

Everything is torn down by :meth:`Network.close` (call it from a fixture
finalizer). Names carry the creating process's pid and start time, so parallel
runs (pytest-xdist workers, two sessions) never collide, and a later run removes
what a killed run left behind (:func:`cleanup_stale`) without touching the
namespaces of runs that are still alive. The /24 is chosen under a file lock.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NETNS_DIR = Path("/run/netns")
NETNS_PREFIX = "berth-"
LINK_PREFIX = "bmh"  # bridge bmh<N>, root-side veth ends bmh<N>-<host> (IFNAMSIZ is 16)
SUBNET = "10.231"
FIRST_NET, LAST_NET = 1, 254
HOST_NAME_RE = re.compile(r"^[a-z0-9]{1,8}$")
_NETNS_RE = re.compile(r"^berth-(?P<pid>\d+)-(?P<start>\d+)-(?P<net>\d+)-(?P<host>[a-z0-9]+)$")
_LINK_RE = re.compile(r"^bmh(?P<net>\d+)(?:-(?P<host>[a-z0-9]+))?$")
_LOCK_PATH = "/run/lock/berth-netns.lock"
_IP_TIMEOUT = 30.0


class NetnsError(RuntimeError):
    """A namespace, link or address could not be set up (the ip command's stderr)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=_IP_TIMEOUT,
                          check=False)
    if check and done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat),
    which tells a live owner from an unrelated process that reused its pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def owner_tag(pid: int | None = None) -> str:
    """``<pid>-<start time>`` of a process (default: this one)."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}-{_start_time(pid)}"


def _owner_alive(pid: int, start: int) -> bool:
    return _start_time(pid) == start


@dataclass(frozen=True)
class Host:
    """One "machine": a network namespace with one address on the bridge."""

    name: str
    netns: str
    address: str
    gateway: str

    @property
    def netns_path(self) -> str:
        return str(NETNS_DIR / self.netns)

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside this host's network namespace."""
        return ["nsenter", f"--net={self.netns_path}", "--", *argv]

    def run(self, argv: Sequence[str], env: Mapping[str, str] | None = None, *,
            timeout: float = 60.0, input: str | None = None,
            check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run a command to completion inside the namespace; text output captured."""
        return subprocess.run(self.argv(argv), env=None if env is None else dict(env),
                              capture_output=True, text=True, timeout=timeout, input=input,
                              check=check)

    def popen(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
              **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start a long-running process inside the namespace (a worker). nsenter execs
        the command, so the Popen's pid is the command's own pid."""
        return subprocess.Popen(self.argv(argv), env=None if env is None else dict(env),
                                **kwargs)

    def net_inode(self) -> int:
        """Identity of the namespace: compare with ``os.stat(f"/proc/{pid}/ns/net")``."""
        return os.stat(self.netns_path).st_ino

    def holds(self, pid: int) -> bool:
        """Whether process ``pid`` lives in this host's network namespace."""
        try:
            return os.stat(f"/proc/{pid}/ns/net").st_ino == self.net_inode()
        except OSError:
            return False

    def pids(self) -> list[int]:
        """Processes living in this namespace (``ip netns pids``)."""
        return _netns_pids(self.netns)


@dataclass
class Network:
    """A bridge in the root namespace and the hosts attached to it."""

    net: int
    bridge: str
    gateway: str
    hosts: dict[str, Host] = field(default_factory=dict)
    closed: bool = False

    @property
    def cidr(self) -> str:
        return f"{SUBNET}.{self.net}.0/24"

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def close(self) -> None:
        """Kill whatever still runs in the hosts, delete the hosts, links and bridge.
        Idempotent and best effort: every step runs even if an earlier one failed."""
        if self.closed:
            return
        self.closed = True
        for host in self.hosts.values():
            _delete_netns(host.netns)
            _ip("link", "del", _veth_name(self.net, host.name), check=False)
        _ip("link", "del", self.bridge, check=False)


def _veth_name(net: int, host: str) -> str:
    return f"{LINK_PREFIX}{net}-{host}"


def _netns_pids(netns: str) -> list[int]:
    done = _ip("netns", "pids", netns, check=False)
    return [int(p) for p in done.stdout.split() if p.isdigit()]


def _delete_netns(netns: str) -> None:
    """Kill the processes left in a namespace (ours: workers, conmon) and delete it."""
    for pid in _netns_pids(netns):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _ip("netns", "delete", netns, check=False)


def _list_netns() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def _links() -> dict[str, str]:
    """Root-namespace links with our prefix: name -> alias (the owner tag, or "")."""
    done = _ip("-o", "link", "show", check=False)
    links: dict[str, str] = {}
    for line in done.stdout.splitlines():
        match = re.match(r"^\d+:\s+([^:@\s]+)", line)
        if match is None or not _LINK_RE.match(match[1]):
            continue
        alias = re.search(r"\balias (\S+)", line)
        links[match[1]] = alias[1] if alias else ""
    return links


def _used_nets() -> set[int]:
    """/24s of 10.231 that hold an address in the root namespace or a bridge of ours."""
    used = {int(m["net"]) for name in _links() if (m := _LINK_RE.match(name))}
    done = _ip("-o", "-4", "addr", "show", check=False)
    for match in re.finditer(rf"\binet {re.escape(SUBNET)}\.(\d+)\.", done.stdout):
        used.add(int(match[1]))
    return used


def cleanup_stale() -> list[str]:
    """Delete the namespaces and links whose owner process is gone; return their names.

    Only names that match our patterns and carry a dead owner are touched; those of
    a live run (another xdist worker, another session) are left alone.
    """
    removed: list[str] = []
    for netns in _list_netns():
        match = _NETNS_RE.match(netns)
        if match and not _owner_alive(int(match["pid"]), int(match["start"])):
            _delete_netns(netns)
            removed.append(netns)
    for name, alias in _links().items():
        owner = re.match(r"^berth-(\d+)-(\d+)$", alias)
        if owner and not _owner_alive(int(owner[1]), int(owner[2])):
            _ip("link", "del", name, check=False)
            removed.append(name)
    return removed


@contextmanager
def _allocation_lock() -> Iterator[None]:
    """Serialise choosing a /24 between processes (xdist workers, parallel sessions)."""
    fd = os.open(_LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def create_network(host_names: Sequence[str]) -> Network:
    """A bridge on a fresh 10.231.N.0/24 and one namespace per host name, all up.

    Stale leftovers of killed runs are removed first. On any failure everything made
    so far is removed before the error propagates.
    """
    names = list(host_names)
    if len(set(names)) != len(names) or not all(HOST_NAME_RE.match(n) for n in names):
        raise ValueError(f"host names must be distinct and match {HOST_NAME_RE.pattern}: {names}")
    if len(names) > 200:
        raise ValueError("at most 200 hosts per network")
    tag = owner_tag()
    with _allocation_lock():
        cleanup_stale()
        used = _used_nets()
        free = [n for n in range(FIRST_NET, LAST_NET + 1) if n not in used]
        if not free:
            raise NetnsError(f"no free /24 left in {SUBNET}.0.0/16")
        net = free[0]
        bridge = f"{LINK_PREFIX}{net}"
        network = Network(net=net, bridge=bridge, gateway=f"{SUBNET}.{net}.1")
        try:
            # The alias records the owner so a later run can tell a stale bridge.
            _ip("link", "add", bridge, "type", "bridge", "forward_delay", "0")
            _ip("link", "set", bridge, "alias", f"berth-{tag}")
            _ip("addr", "add", f"{network.gateway}/24", "dev", bridge)
            _ip("link", "set", bridge, "up")
        except BaseException:
            network.close()
            raise
    try:
        for index, name in enumerate(names):
            _add_host(network, name, f"{SUBNET}.{net}.{10 + index}", tag)
    except BaseException:
        network.close()
        raise
    return network


def _add_host(network: Network, name: str, address: str, tag: str) -> Host:
    netns = f"{NETNS_PREFIX}{tag}-{network.net}-{name}"
    outer = _veth_name(network.net, name)
    host = Host(name=name, netns=netns, address=address, gateway=network.gateway)
    network.hosts[name] = host  # registered first so close() removes a half-made host
    _ip("netns", "add", netns)
    _ip("link", "add", outer, "type", "veth", "peer", "name", f"{outer}p", "netns", netns)
    _ip("link", "set", outer, "alias", f"berth-{tag}")
    _ip("link", "set", outer, "master", network.bridge)
    _ip("link", "set", outer, "up")
    _ip("-n", netns, "link", "set", f"{outer}p", "name", "eth0")
    _ip("-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
    _ip("-n", netns, "link", "set", "eth0", "up")
    _ip("-n", netns, "link", "set", "lo", "up")
    return host


@contextmanager
def network(host_names: Sequence[str]) -> Iterator[Network]:
    """``create_network`` as a context manager that always tears down."""
    net = create_network(host_names)
    try:
        yield net
    finally:
        net.close()
