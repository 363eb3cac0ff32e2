"""A container's network, set up and torn down: its namespace, CNI, /etc files.

Each container with a network (not ``none``, not ``host``) gets its own network
namespace, made by berth as ``ip netns add`` does (a namespace kept alive by a bind
mount on a file) under ``$BERTH_RUN/runtime/net/<id>/netns``; its path goes into
``config.json``, and the CNI plugins are ADDed on it before the container's process
exists. The namespace lives as long as the container's process, as in podman and
Docker: when it ends (not by a checkpoint, whose restore needs the same address)
``leave`` runs CNI DEL and removes the namespace and the files
(``ContainerService.release_network``, recorded as ``container.network_detached``),
and the next start joins again.

Intent before action: ``record.json`` (which network, which configuration list,
which namespace) is written before the namespace or any plugin is touched, and the
plugins' result is added to it after ADD. Whatever a crash interrupts, the record
is there for reconciliation to run DEL with exactly the configuration ADD had.

What runs at once: the CNI specification lets a runtime run operations for
different containers in parallel (only one container's own operations must not
overlap), and the plugins berth uses keep their shared state safe themselves:
host-local allocates under a file lock in its data directory, the bridge plugin
treats "bridge exists" and "address exists" as done, every iptables chain or rule a
container gets is named for it or its address, and DEL removes only those. What
can race is the host-wide state the first ADD makes: portmap's ``CNI-HOSTPORT-*``
chains (and the firewall plugin's ``CNI-FORWARD``, in older records' lists) are made
and hooked in by check-then-insert, and so are the network's own rules
(``ensure_network_rules``: masquerade and forward, once per network instead of a
chain per container), so two first ADDs at once could hook something twice. So the
first ADD of each configuration (network and plugin set) runs alone under a
host-wide file lock, after making sure of the network's rules, and once one has
succeeded in this process the others run in parallel; DEL never waits.

``/etc/hosts``, ``/etc/resolv.conf`` and ``/etc/hostname`` are files in the same
directory, bind-mounted into the container. On a user network, every member's
``/etc/hosts`` names the other members; it is rewritten in place (the bind mount
holds the inode, so a rename would not be seen) whenever a member joins or leaves.
Those rewrites are batched: a join or leave asks for one and waits until a rewrite
that began after its own change has finished, so joins arriving together share one
pass, and a pass writes only the files whose text changes.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import functools
import json
import logging
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from engine.containers.spec import PortMapping
from engine.errors import BerthError, RuntimeFailure
from engine.faults import crash_point
from engine.ids import validate_container_id
from engine.networks import rules as nw
from engine.networks.cni import CNI, Invocation

log = logging.getLogger("berth.network")

IPAM_DIR_ENV = "BERTH_CNI_IPAM_DIR"
DEFAULT_IPAM_DIR = "/run/berth-ipam"
"""host-local's address files: host-wide (every berth root on the host shares the
bridges, so they must share the allocations), and on /run so that addresses go with
the namespaces when the host reboots."""
DEFAULT_NETWORK_ENV = "BERTH_DEFAULT_NETWORK"
MNT_DETACH = 2
MS_BIND = 4096
CLONE_NEWNET = 0x40000000
ETC_FILES = ("hosts", "resolv.conf", "hostname")
SETUP_LOCK = ".berth-first-add.lock"
"""The host-wide lock (in the IPAM directory, which every berth root shares) a
configuration's first ADD holds, see the module's docstring."""

Lookup = Callable[[str], nw.Network]


@dataclass(frozen=True)
class Joined:
    """How a container's namespace is made: what ``config.json`` needs, and the
    attachment to record (None for ``none`` and ``host``)."""

    mode: str
    """``bridge``, ``none`` or ``host``."""
    netns: str | None
    files: dict[str, str]
    """Container path -> host file, bind-mounted."""
    attachment: nw.Attachment | None = None


@functools.cache
def _libc() -> ctypes.CDLL:
    """libc, loaded once (finding it runs ``ldconfig -p``: ~1.5 ms a call)."""
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class NetworkSetup:
    """Joins containers to networks and takes them out again, on one node."""

    def __init__(self, run_dir: str, lookup: Lookup, *, default: str | None = None,
                 cni: CNI | None = None, ipam_dir: str | None = None,
                 host_resolv: str = "/etc/resolv.conf") -> None:
        self.base = os.path.join(run_dir, "net")
        self.lookup = lookup
        self.default = default or os.environ.get(DEFAULT_NETWORK_ENV) or nw.DEFAULT_NAME
        self.cni = cni or CNI()
        self.ipam_dir = ipam_dir or os.environ.get(IPAM_DIR_ENV) or DEFAULT_IPAM_DIR
        self.host_resolv = host_resolv
        self._files = threading.Lock()
        self._primed: dict[tuple[str, tuple[str, ...]], int] = {}
        """Configuration -> the ifindex its bridge had when one ADD of it succeeded: a
        bridge deleted since (``network rm`` here or by another root) means start over."""
        self._members: dict[str, tuple[tuple[int, int, int], str, nw.Member | None]] = {}
        self._refreshes: dict[str, _Batch] = {}
        os.makedirs(self.base, mode=0o700, exist_ok=True)

    # -- paths ------------------------------------------------------------------------

    def dir_of(self, container_id: str) -> str:
        return os.path.join(self.base, validate_container_id(container_id))

    def netns_path(self, container_id: str) -> str:
        return os.path.join(self.dir_of(container_id), "netns")

    def _record_path(self, container_id: str) -> str:
        return os.path.join(self.dir_of(container_id), "record.json")

    def attached(self) -> list[str]:
        """Containers that have network state on this node (a record or files)."""
        try:
            return sorted(os.listdir(self.base))
        except FileNotFoundError:
            return []

    def record(self, container_id: str) -> dict[str, Any] | None:
        try:
            with open(self._record_path(container_id)) as f:
                data = json.load(f)
        except (FileNotFoundError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _write_record(self, container_id: str, data: dict[str, Any]) -> None:
        path = self._record_path(container_id)
        with open(path + ".tmp", "w") as f:
            json.dump(data, f)
        os.replace(path + ".tmp", path)

    @contextlib.contextmanager
    def _first_add(self, net: nw.Network, conflist: dict[str, Any]) -> Iterator[None]:
        """Alone (host-wide), with the network's rules made sure of, until one ADD of
        this configuration has succeeded in this process; in parallel after that (see
        the module's docstring for why)."""
        key = (str(conflist["name"]), tuple(str(p["type"]) for p in conflist["plugins"]))
        if key in self._primed and self._primed[key] == _ifindex(net.bridge):
            yield
            return
        os.makedirs(self.ipam_dir, mode=0o755, exist_ok=True)
        fd = os.open(os.path.join(self.ipam_dir, SETUP_LOCK), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            ensure_network_rules(net)
            yield
            index = _ifindex(net.bridge)
            if index is not None:
                self._primed[key] = index
        finally:
            os.close(fd)  # releases the flock

    # -- join -------------------------------------------------------------------------

    def join(self, container_id: str, *, name: str, hostname: str, requested: str,
             ports: Sequence[PortMapping], aliases: Sequence[str] = (),
             extra_hosts: Sequence[tuple[str, str]] = (), dns: Sequence[str] = ()
             ) -> Joined:
        """Give the container its network: ``requested`` ("" for the node's default,
        ``none``, ``host`` or a network's name). A container that still holds its
        namespace (a restore after a checkpoint) gets it and its address again."""
        network = nw.effective(requested, self.default)
        directory = self.dir_of(container_id)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if network in nw.MODES:
            files = self._write_etc(container_id, hostname, me=None,
                                    keep_loopback=network == nw.HOST, extra=extra_hosts,
                                    dns=dns)
            self._write_record(container_id, {"mode": network, "name": name})
            return Joined(network, None, files)
        net = self.lookup(network)
        previous = self.record(container_id)
        if previous and previous.get("result") and os.path.ismount(self.netns_path(
                container_id)):
            # The ports portmap forwards are the ones ADD was given (-P chose them then).
            ports = tuple(PortMapping(str(p[0]), int(p[1]), int(p[2]), str(p[3]))
                          for p in previous.get("ports") or ())
            attachment = nw.attachment_from_result(net.name, previous["result"], ports)
        else:
            attachment = self._add(container_id, net, name, hostname, ports, aliases,
                                   extra_hosts)
        if previous and previous.get("result"):
            aliases = _aliases(previous)  # the names it joined with (a spec never changes)
        me = nw.Member(container_id, name, hostname, attachment.ip, tuple(aliases),
                       tuple(extra_hosts))
        files = self._write_etc(container_id, hostname, me=me, network=net, dns=dns)
        self._refresh_hosts(net.name)
        return Joined("bridge", self.netns_path(container_id), files, attachment)

    def _add(self, container_id: str, net: nw.Network, name: str, hostname: str,
             ports: Sequence[PortMapping], aliases: Sequence[str],
             extra_hosts: Sequence[tuple[str, str]] = ()) -> nw.Attachment:
        conflist = nw.conflist(net, self.ipam_dir, ports=bool(ports))
        netns = self.netns_path(container_id)
        capabilities = {"portMappings": nw.port_mappings(ports)}
        record = {"mode": "bridge", "network": net.name, "name": name, "hostname": hostname,
                  "conflist": conflist, "ifname": nw.IFNAME, "capabilities": capabilities,
                  "ports": [list(p) for p in ports], "aliases": list(aliases),
                  "extra_hosts": [list(h) for h in extra_hosts]}
        self._write_record(container_id, record)  # the intent, before any side effect
        call = Invocation(container_id, netns, nw.IFNAME, capabilities)
        try:
            make_netns(netns)
            # lo is a network of its own: brought up while the chain runs.
            with ThreadPoolExecutor(1) as pool:
                lo = pool.submit(self.cni.add_one, nw.loopback_conf(),
                                 Invocation(container_id, netns, "lo", {}))
                with self._first_add(net, conflist):
                    result = self.cni.add(conflist, call)
                lo.result()
            crash_point("container.create.network_added")
            attachment = nw.attachment_from_result(net.name, result, ports)
        except BaseException:
            self.leave(container_id)
            raise
        record["result"] = result
        self._write_record(container_id, record)
        return attachment

    def attachment(self, container_id: str) -> nw.Attachment | None:
        """The address the container's record says CNI gave it (None: none, or the
        record is unreadable)."""
        record = self.record(container_id) or {}
        if record.get("mode") != "bridge" or not record.get("result"):
            return None
        ports = tuple(PortMapping(str(p[0]), int(p[1]), int(p[2]), str(p[3]))
                      for p in record.get("ports") or ())
        try:
            return nw.attachment_from_result(str(record.get("network", "")), record["result"],
                                             ports)
        except (BerthError, TypeError, ValueError, IndexError):
            return None

    # -- leave ------------------------------------------------------------------------

    def leave(self, container_id: str) -> list[str]:
        """Take the container off its network: CNI DEL with the configuration ADD
        had (reverse order), the namespace unmounted and removed, the files gone, the
        other members' /etc/hosts rewritten. Safe to repeat; the DEL errors are
        returned (and logged), the rest is removed whatever they say."""
        directory = self.dir_of(container_id)
        if not os.path.isdir(directory):
            return []
        record = self.record(container_id) or {}
        errors: list[str] = []
        netns = self.netns_path(container_id)
        conflist = record.get("conflist")
        if record.get("mode") == "bridge" and isinstance(conflist, dict):
            call = Invocation(container_id, netns if os.path.ismount(netns) else "",
                              str(record.get("ifname", nw.IFNAME)),
                              record.get("capabilities") or {})
            errors = self.cni.delete(conflist, call, record.get("result"))
            for err in errors:
                log.warning("CNI DEL for container %s: %s", container_id, err)
        remove_netns(netns)
        shutil.rmtree(directory, ignore_errors=True)
        self._members.pop(container_id, None)
        if record.get("network"):
            self._refresh_hosts(str(record["network"]))
        return errors

    def forget_network(self, name: str) -> None:
        """A removed network's host-local directory goes too (no container holds an
        address on it any more: removal is refused while one is attached)."""
        shutil.rmtree(os.path.join(self.ipam_dir, nw.cni_name(name)), ignore_errors=True)
        self._primed = {k: v for k, v in self._primed.items() if k[0] != nw.cni_name(name)}

    def check(self, container_id: str) -> str | None:
        """CNI CHECK of a live container's network; the problem, or None."""
        record = self.record(container_id) or {}
        if record.get("mode") != "bridge" or not record.get("result"):
            return None
        call = Invocation(container_id, self.netns_path(container_id),
                          str(record.get("ifname", nw.IFNAME)), record.get("capabilities") or {})
        try:
            self.cni.check(nw.for_check(record["conflist"], record["result"]), call,
                           record["result"])
        except BerthError as exc:
            return exc.message
        return None

    # -- members and files ------------------------------------------------------------

    def members(self, network: str) -> list[nw.Member]:
        """Containers of this node on ``network`` that have an address."""
        found = []
        for cid in self.attached():
            on, member = self._member(cid)
            if on == network and member is not None:
                found.append(member)
        return found

    def member_of(self, container_id: str) -> tuple[str, nw.Member | None]:
        """(the network, the container's membership on it) while it holds an address
        on this node; ("", None) otherwise."""
        return self._member(container_id)

    def _member(self, container_id: str) -> tuple[str, nw.Member | None]:
        """(network, member or None) from the container's record, parsed once per
        version of it: a record is only ever replaced whole (a new inode), so the
        inode, time and size tell a changed one apart."""
        try:
            st = os.stat(self._record_path(container_id))
        except (FileNotFoundError, NotADirectoryError):
            self._members.pop(container_id, None)
            return "", None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._members.get(container_id)
        if cached is not None and cached[0] == stamp:
            return cached[1], cached[2]
        record = self.record(container_id) or {}
        network, member = str(record.get("network") or ""), None
        if network and record.get("result"):
            try:
                ip = nw.attachment_from_result(network, record["result"], ()).ip
                member = nw.Member(container_id, str(record.get("name", "")),
                                   str(record.get("hostname", "")), ip, _aliases(record),
                                   _extra_hosts(record))
            except BerthError:
                member = None
        self._members[container_id] = (stamp, network, member)
        return network, member

    def _write_etc(self, container_id: str, hostname: str, *, me: nw.Member | None,
                   network: nw.Network | None = None, keep_loopback: bool = False,
                   extra: Sequence[tuple[str, str]] = (), dns: Sequence[str] = (),
                   ) -> dict[str, str]:
        directory = self.dir_of(container_id)
        try:
            with open(self.host_resolv) as f:
                host_resolv = f.read()
        except OSError:
            host_resolv = ""
        others = self.members(network.name) if network and not network.builtin else []
        texts = {"hosts": nw.hosts_file(me, hostname, others, extra),
                 "resolv.conf": nw.resolv_conf(host_resolv, keep_loopback=keep_loopback,
                                               dns=dns),
                 "hostname": hostname + "\n"}
        files = {}
        for name, text in texts.items():
            path = os.path.join(directory, name)
            with self._files:  # never two writers on one file (see _rewrite_hosts)
                _write_in_place(path, text)
            files[f"/etc/{name}"] = path
        return files

    def _refresh_hosts(self, network: str) -> None:
        """Bring every member's /etc/hosts of a user network up to date with the
        membership as it is now: returns once a rewrite that began after this call
        has finished (joins and leaves arriving together share one)."""
        try:
            net = self.lookup(network)
        except BerthError:
            return
        if net.builtin:
            return
        with self._files:
            batch = self._refreshes.setdefault(network, _Batch())
        batch.run(lambda: self._rewrite_hosts(network))

    def _rewrite_hosts(self, network: str) -> None:
        """One pass: each member's file from the current membership, written (in
        place) only where its text changes."""
        members = self.members(network)
        for me in members:
            path = os.path.join(self.dir_of(me.container_id), "hosts")
            text = nw.hosts_file(me, me.hostname, members)
            data = text.encode()
            with self._files:
                try:
                    # the container can write its /etc/hosts: never read more of it
                    # than tells whether it is the new text
                    with open(path, "rb") as f:
                        if f.read(len(data) + 1) == data:
                            continue
                except FileNotFoundError:
                    continue  # leaving, or not written yet (its join writes it)
                _write_in_place(path, text)


def _extra_hosts(record: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """A record's ``--add-host`` pairs (none in records written before they existed)."""
    found = record.get("extra_hosts")
    if not isinstance(found, list):
        return ()
    return tuple((str(h[0]), str(h[1])) for h in found
                 if isinstance(h, list) and len(h) == 2)


def _aliases(record: dict[str, Any]) -> tuple[str, ...]:
    """A record's network aliases (none in records written before they existed)."""
    found = record.get("aliases")
    return tuple(str(a) for a in found) if isinstance(found, list) else ()


class _Batch:
    """Group commit of one idempotent job: a caller asks for a run and waits until
    a run that started after its request has finished. One caller runs the job at a
    time; the requests that arrive meanwhile are all served by the next run."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._asked = 0
        self._done = 0
        self._running = False

    def run(self, job: Callable[[], None]) -> None:
        with self._cond:
            self._asked += 1
            ticket = self._asked
            while self._done < ticket and self._running:
                self._cond.wait()
            if self._done >= ticket:
                return
            self._running = True
            target = self._asked  # every request so far is served by this run
        served = False
        try:
            job()
            served = True
        finally:
            with self._cond:
                self._running = False
                if served:  # else a waiter runs it again (and meets the error itself)
                    self._done = max(self._done, target)
                self._cond.notify_all()


def apply_to_config(config: dict[str, Any], joined: Joined) -> None:
    """Put the namespace and the /etc files into a runtime-spec document."""
    linux = config.setdefault("linux", {})
    namespaces = [n for n in linux.get("namespaces", []) if n.get("type") != "network"]
    if joined.mode != nw.HOST:
        entry: dict[str, Any] = {"type": "network"}
        if joined.netns:
            entry["path"] = joined.netns
        namespaces.append(entry)
    linux["namespaces"] = namespaces
    mounts = config.setdefault("mounts", [])
    taken = {m.get("destination") for m in mounts}
    for target, source in joined.files.items():
        if target not in taken:
            mounts.append({"destination": target, "type": "bind", "source": source,
                           "options": ["rbind", "rprivate"]})


def _write_in_place(path: str, text: str) -> None:
    """Write keeping the inode (a bind mount of the file sees the new content). The
    new text goes over the old and the rest is cut after, so a reader never finds
    the file empty (a join makes /etc/hosts longer: nothing of the old is left)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        data = text.encode()
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


def make_netns(path: str) -> None:
    """A new network namespace kept alive by a bind mount on ``path`` (what
    ``ip netns add`` and ``unshare --net=PATH`` do), made in-process: a thread of
    its own unshares its network namespace, binds it onto ``path`` and ends (a
    namespace belongs to a thread, so the rest of the process stays where it is).
    Running ``unshare`` cost a fork and an exec per container."""
    if os.path.ismount(path):
        return
    with open(path, "a"):
        pass
    failed: list[str] = []

    def inside() -> None:
        libc = _libc()
        if libc.unshare(CLONE_NEWNET) != 0:
            failed.append(f"unshare: {os.strerror(ctypes.get_errno())}")
        elif libc.mount(b"/proc/thread-self/ns/net", path.encode(), None, MS_BIND,
                        None) != 0:
            failed.append(f"mount: {os.strerror(ctypes.get_errno())}")

    thread = threading.Thread(target=inside, name="berth-netns", daemon=True)
    thread.start()
    thread.join()
    if failed:
        raise RuntimeFailure(f"cannot create a network namespace at {path}: {failed[0]}")


def remove_netns(path: str) -> None:
    """Unmount (lazily: a process may still be leaving it) and delete ``path``."""
    if os.path.ismount(path) and _libc().umount2(path.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        log.warning("cannot unmount network namespace %s: %s", path, os.strerror(err))
    with contextlib.suppress(FileNotFoundError, IsADirectoryError):
        os.unlink(path)


def remove_bridge(bridge: str) -> None:
    """Delete a removed network's bridge (the CNI bridge plugin never deletes one)."""
    if not os.path.exists(f"/sys/class/net/{bridge}"):
        return
    done = subprocess.run(["ip", "link", "delete", bridge, "type", "bridge"],
                          capture_output=True, timeout=30, check=False)
    if done.returncode != 0:
        log.warning("cannot delete bridge %s: %s", bridge,
                    done.stderr.decode(errors="replace").strip())


def _ifindex(bridge: str) -> int | None:
    """The bridge's interface index (a new one each time it is made), None if absent."""
    try:
        with open(f"/sys/class/net/{bridge}/ifindex") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def _iptables(table: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["iptables", "-w", "-t", table, *args], capture_output=True,
                          timeout=30, check=False)


def ensure_network_rules(network: nw.Network) -> None:
    """Add whichever of the network's rules (``engine.networks.rules.network_rules``) the
    host lacks, in order; the caller holds the first-ADD lock."""
    for rule in nw.network_rules(network):
        if _iptables(rule.table, "-C", rule.chain, *rule.spec).returncode == 0:
            continue
        where = ("-I", rule.chain, "1") if rule.first else ("-A", rule.chain)
        done = _iptables(rule.table, *where, *rule.spec)
        if done.returncode != 0:
            raise RuntimeFailure(f"cannot add the iptables rules of network "
                                 f"{network.name!r}: "
                                 f"{done.stderr.decode(errors='replace').strip()}")


def remove_network_rules(network: nw.Network) -> None:
    """Delete a removed network's rules (every copy, should one be there twice)."""
    for rule in nw.network_rules(network):
        for _ in range(16):
            if _iptables(rule.table, "-D", rule.chain, *rule.spec).returncode != 0:
                break


def published_ports(ports: Sequence[PortMapping], expose: Sequence[str],
                    publish_all: bool) -> tuple[PortMapping, ...]:
    """The ``-p`` ports, plus (``-P``) each exposed port on a free host port: one the
    kernel hands out for port 0 (conmon binds it again at once to reserve it)."""
    if not publish_all:
        return tuple(ports)
    added = []
    for container_port, proto in nw.unpublished(expose, ports):
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("0.0.0.0", 0))
            added.append(PortMapping("", int(s.getsockname()[1]), container_port, proto))
    return (*ports, *added)
