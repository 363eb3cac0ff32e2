"""Container networks: what a network is, and every rule about them, with no I/O.

A network is a Linux bridge on one node with its own IPv4 subnet, reached through the
CNI plugins (bridge, host-local, portmap, loopback) that ``engine.networks.cni``
runs, with the network's own iptables rules (masquerade, forward) that berth keeps.
This module holds the decisions: which names and subnets are acceptable, which
bridge a network gets, the CNI configuration list and the rules it means, whether a
network may go, what ``/etc/hosts`` and ``/etc/resolv.conf`` a container gets, and
how a CNI result becomes the facts the log records.

The default network ``berth`` is built in (like podman's ``podman``): it exists on
every node without an event, and cannot be removed. User networks are created and
removed by commands and live in the log, on streams ``network:NAME``.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine import events as ev
from engine.containers.spec import PortMapping, parse_expose
from engine.errors import AlreadyExists, InvalidArgument, NotFound, Refused
from engine.networks.names import DEFAULT_NAME as DEFAULT_NAME  # noqa: PLC0414
from engine.networks.names import HOST as HOST  # noqa: PLC0414 (explicit re-export)
from engine.networks.names import MODES as MODES  # noqa: PLC0414
from engine.networks.names import NONE as NONE  # noqa: PLC0414
from engine.networks.names import check_reference as check_reference  # noqa: PLC0414
from engine.networks.names import validate_name as validate_name  # noqa: PLC0414

DEFAULT_BRIDGE = "berth0"
DEFAULT_SUBNET = "10.89.0.0/24"
STREAM_PREFIX = "network:"
CNI_VERSION = "1.0.0"
IFNAME = "eth0"
BRIDGE_PREFIX = "bn-"
"""User networks' bridges: ``bn-`` and the first 12 characters of the name's hash."""
FALLBACK_DNS = ("8.8.8.8", "8.8.4.4")
"""What a container gets when the host names only loopback resolvers (podman's choice)."""

_HOST_LINE = re.compile(r"^[a-zA-Z0-9_.-]+$")


@dataclass(frozen=True, slots=True)
class Network:
    """One bridge network of a node."""

    name: str
    subnet: str
    gateway: str
    bridge: str
    builtin: bool = False

    def to_data(self) -> dict[str, Any]:
        return {"name": self.name, "subnet": self.subnet, "gateway": self.gateway,
                "bridge": self.bridge, "builtin": self.builtin, "driver": "bridge"}


DEFAULT = Network(DEFAULT_NAME, DEFAULT_SUBNET, "10.89.0.1", DEFAULT_BRIDGE, builtin=True)


@dataclass(frozen=True, slots=True)
class Attachment:
    """What the CNI plugins gave a container on one network: recorded in the log
    (``container.network_attached``) so the history says which address it had."""

    network: str
    interface: str
    addresses: tuple[str, ...]
    gateway: str
    mac: str
    ports: tuple[PortMapping, ...] = ()

    @property
    def ip(self) -> str:
        """The first address without its prefix length ("" if there is none)."""
        return self.addresses[0].split("/")[0] if self.addresses else ""

    def to_data(self) -> dict[str, Any]:
        """The ``container.network_attached`` payload: the event's one codec."""
        return attached_event(self).to_data()

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Attachment:
        try:
            e = ev.NetworkAttached.from_data(data)
        except InvalidArgument as exc:
            raise InvalidArgument(f"invalid network attachment: {exc}") from None
        return cls(e.network, e.interface, e.addresses, e.gateway, e.mac, e.ports)


# -- names, subnets, bridges ------------------------------------------------------------


def stream_of(name: str) -> str:
    """The log stream of a network (a container name can never hold a colon)."""
    return STREAM_PREFIX + name


def bridge_for(name: str) -> str:
    """A bridge name at most 15 characters long (IFNAMSIZ), stable for the name."""
    return BRIDGE_PREFIX + hashlib.sha256(name.encode()).hexdigest()[:12]


def plan_network(name: str, subnet: str | None, gateway: str | None,
                 existing: Mapping[str, Network], free_subnet: str | None = None) -> Network:
    """The network ``network create`` would make, or a clear refusal: a name in use, a
    subnet that is not an IPv4 CIDR or overlaps another network's, a gateway outside
    it. Without ``--subnet``, ``free_subnet`` (the first unused 10.89.N.0/24)."""
    validate_name(name)
    if name in existing:
        raise AlreadyExists(f"network {name!r} already exists")
    text = subnet or free_subnet
    if not text:
        raise Refused("no free subnet left in 10.89.0.0/16: give one with --subnet")
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError:
        raise InvalidArgument(f"invalid subnet {text!r}: use an IPv4 CIDR such as "
                              "10.90.1.0/24, with no host bits set") from None
    if not isinstance(net, ipaddress.IPv4Network) or not 8 <= net.prefixlen <= 30:
        raise InvalidArgument(f"invalid subnet {text!r}: an IPv4 network from /8 to /30")
    for other in existing.values():
        if net.overlaps(ipaddress.ip_network(other.subnet)):
            raise Refused(f"subnet {text} overlaps network {other.name!r} ({other.subnet})")
    if gateway:
        try:
            gw = ipaddress.ip_address(gateway)
        except ValueError:
            raise InvalidArgument(f"invalid gateway {gateway!r}: an IPv4 address") from None
        if gw not in net or gw in (net.network_address, net.broadcast_address):
            raise InvalidArgument(f"gateway {gateway} is not a host address of {text}")
    else:
        gw = net.network_address + 1
    return Network(name, str(net), str(gw), bridge_for(name))


def free_subnet(existing: Iterable[Network],
                host_routes: Iterable[ipaddress.IPv4Network] = ()) -> str | None:
    """The first 10.89.N.0/24 (N from 1) that neither a network of this engine nor a
    route of the host (``routes_of``) overlaps: another engine on the same host (each
    test's, a second BERTH_ROOT), a VPN or a docker bridge may hold one, and a bridge on
    a subnet the host already routes elsewhere would take that traffic or lose its own."""
    taken = [ipaddress.ip_network(n.subnet) for n in existing]
    taken += [r for r in host_routes if r.prefixlen > 0]  # the default route is no subnet
    for n in range(1, 256):
        candidate = ipaddress.ip_network(f"10.89.{n}.0/24")
        if not any(candidate.overlaps(t) for t in taken):
            return str(candidate)
    return None


def routes_of(proc_net_route: str) -> list[ipaddress.IPv4Network]:
    """The IPv4 destinations of the host's routing table, from ``/proc/net/route``'s
    text (one route a line, destination and mask in little-endian hex; every interface
    that is up has its own subnet's route there). Lines of another shape are skipped."""
    found = []
    for line in proc_net_route.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        try:
            dest = int.from_bytes(bytes.fromhex(fields[1]), "little")
            mask = int.from_bytes(bytes.fromhex(fields[7]), "little")
            net = ipaddress.IPv4Network((dest, bin(mask).count("1")), strict=False)
        except ValueError:
            continue
        found.append(net)
    return found


def check_removable(name: str, networks: Mapping[str, Network],
                    attached: Sequence[str]) -> Network:
    """``network rm``: the built-in network stays, and a network with containers
    attached (running or not: they hold an address on it) is refused."""
    if name in MODES or name == DEFAULT_NAME:
        raise Refused(f"network {name!r} is built in and cannot be removed")
    network = networks.get(name)
    if network is None:
        raise NotFound(f"no such network: {name}")
    if attached:
        shown = ", ".join(sorted(a[:12] for a in attached)[:5])
        raise Refused(f"network {name!r} has {len(attached)} container(s) attached "
                      f"({shown}): remove them first")
    return network


def effective(requested: str, default: str) -> str:
    """The network a container joins: the one it asked for, else the node's default."""
    return requested or default or DEFAULT_NAME


# -- CNI configuration --------------------------------------------------------------------


def conflist(network: Network, ipam_dir: str, *, ports: bool = True) -> dict[str, Any]:
    """The CNI network configuration list of ``network``: a bridge that is the
    subnet's gateway, host-local addresses kept in ``ipam_dir`` (host-wide, see
    docs/operations.md), and published ports (portmap with SNAT so 127.0.0.1:PORT
    works) unless the container publishes none (``ports`` False: portmap would only
    cost two runs of iptables). Masquerading and forwarding are the network's rules
    (``network_rules``), not each container's: the bridge plugin's ``ipMasq`` and the
    firewall plugin would add and remove a chain and rules per container, some ten
    runs of iptables on each ADD and DEL. The list a container was given is kept
    with it, so its DEL runs exactly the plugins its ADD ran (containers created
    with the per-container plugins keep them)."""
    plugins: list[dict[str, Any]] = [
        {"type": "bridge", "bridge": network.bridge, "isGateway": True, "ipMasq": False,
         "hairpinMode": True,
         "ipam": {"type": "host-local", "dataDir": ipam_dir,
                  "ranges": [[{"subnet": network.subnet, "gateway": network.gateway}]],
                  "routes": [{"dst": "0.0.0.0/0"}]}},
        {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
    ]
    if not ports:
        plugins = [p for p in plugins if p["type"] != "portmap"]
    return {"cniVersion": CNI_VERSION, "name": cni_name(network.name), "plugins": plugins}


@dataclass(frozen=True, slots=True)
class NetworkRule:
    """One iptables rule a network keeps on a node while its bridge exists."""

    table: str
    chain: str
    spec: tuple[str, ...]
    first: bool = False
    """Inserted at the head of the chain (forwarding: before a DROP another tool put
    there) rather than appended."""


MULTICAST = "224.0.0.0/4"


def network_rules(network: Network) -> list[NetworkRule]:
    """What the bridge plugin's ``ipMasq`` and the firewall plugin did per container,
    once for the whole subnet (as netavark does): traffic from the subnet to itself
    is left alone and the rest, multicast aside, masqueraded (in that order); traffic
    to the subnet that answers a connection, and all from it, is forwarded. Each
    rule names the network in a comment, so ``iptables-save`` tells whose it is."""
    subnet = network.subnet
    tag = ("-m", "comment", "--comment", f"berth network {network.name}")
    return [
        NetworkRule("nat", "POSTROUTING", ("-s", subnet, "-d", subnet, *tag, "-j", "RETURN")),
        NetworkRule("nat", "POSTROUTING", ("-s", subnet, "!", "-d", MULTICAST, *tag,
                                           "-j", "MASQUERADE")),
        NetworkRule("filter", "FORWARD", ("-d", subnet, "-m", "conntrack", "--ctstate",
                                          "RELATED,ESTABLISHED", *tag, "-j", "ACCEPT"),
                    first=True),
        NetworkRule("filter", "FORWARD", ("-s", subnet, *tag, "-j", "ACCEPT"), first=True),
    ]


def cni_name(network: str) -> str:
    """The CNI network name (host-local keeps its addresses in a directory of it)."""
    return f"berth-{network}"


def for_check(conflist: Mapping[str, Any], result: Mapping[str, Any]) -> dict[str, Any]:
    """The list CHECK runs: portmap 1.1.1 checks IPv6 rules it never made when the
    container has only IPv4 (containernetworking/plugins#819) and always fails, so
    it is left out then; the other plugins are checked as the spec says."""
    has_v6 = any(":" in str(ip.get("address", "")) for ip in result.get("ips") or [])
    plugins = [p for p in conflist["plugins"] if has_v6 or p.get("type") != "portmap"]
    return {**conflist, "plugins": plugins}


def loopback_conf() -> dict[str, Any]:
    """The loopback plugin's configuration: brings ``lo`` up in an empty namespace."""
    return {"cniVersion": CNI_VERSION, "name": "berth-lo", "type": "loopback"}


def port_mappings(ports: Sequence[PortMapping]) -> list[dict[str, Any]]:
    """The ``runtimeConfig.portMappings`` the portmap plugin takes."""
    out = []
    for p in ports:
        entry: dict[str, Any] = {"hostPort": p.host_port, "containerPort": p.container_port,
                                 "protocol": p.protocol}
        if p.host_ip and p.host_ip != "0.0.0.0":
            entry["hostIP"] = p.host_ip
        out.append(entry)
    return out


def unpublished(expose: Sequence[str], ports: Sequence[PortMapping]) -> list[tuple[int, str]]:
    """``-P``: the exposed (port, protocol) pairs that no ``-p`` publishes yet."""
    taken = {(p.container_port, p.protocol) for p in ports}
    wanted = []
    for item in expose:
        pair = parse_expose(item)
        if pair not in taken:
            taken.add(pair)
            wanted.append(pair)
    return wanted


def attachment_from_result(network: str, result: Mapping[str, Any],
                           ports: Sequence[PortMapping]) -> Attachment:
    """The facts of a CNI 1.0 result: the container interface's addresses and MAC
    (the interface with a ``sandbox``), and the gateway of its first address."""
    try:
        interfaces = list(result.get("interfaces") or [])
        inside = [i for i, itf in enumerate(interfaces) if itf.get("sandbox")]
        index = inside[0] if inside else None
        mac = str(interfaces[index].get("mac", "")) if index is not None else ""
        ips = [ip for ip in result.get("ips") or []
               if index is None or ip.get("interface") in (None, index)]
        addresses = tuple(str(ip["address"]) for ip in ips)
        gateway = str(ips[0].get("gateway", "")) if ips else ""
        name = str(interfaces[index].get("name", IFNAME)) if index is not None else IFNAME
    except (AttributeError, KeyError, TypeError, IndexError) as exc:
        raise InvalidArgument(f"the CNI plugins returned a result berth cannot read: "
                              f"{exc}") from None
    if not addresses:
        raise InvalidArgument("the CNI plugins returned no address for the container")
    return Attachment(network, name, addresses, gateway, mac, tuple(ports))


def attached_event(attachment: Attachment) -> ev.NetworkAttached:
    """The event recording an attachment (appended with the container's created)."""
    return ev.NetworkAttached(attachment.network, attachment.interface,
                              attachment.addresses, attachment.gateway, attachment.mac,
                              attachment.ports)


def detached_event(attachment: Attachment) -> ev.NetworkDetached:
    """The event recording that an ended container gave its attachment back."""
    return ev.NetworkDetached(attachment.network, attachment.addresses)


# -- files in the container -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Member:
    """A container on a network, as other members' /etc/hosts name it."""

    container_id: str
    name: str
    hostname: str
    ip: str
    aliases: tuple[str, ...] = ()
    """``--network-alias`` names; compose's service name: shared by a service's replicas."""
    extra_hosts: tuple[tuple[str, str], ...] = ()
    """``--add-host`` (NAME, ADDRESS) pairs: lines of its own file only."""


def hosts_file(me: Member | None, hostname: str, others: Iterable[Member] = (),
               extra: Iterable[tuple[str, str]] = ()) -> str:
    """/etc/hosts: localhost, the container's own name and address, then the other
    members of its user network (so they reach each other by container name, host
    name, short id and network aliases).

    A name several members share (the replicas of one compose service) is on each of
    their lines: a resolver returns every address, in the file's order, and a client
    takes the first. So that the replicas share the clients, each reader gets the
    members in an order of its own (by a hash of its id and theirs): stable while the
    membership stands (nothing to rewrite), different from one reader to the next."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    # --add-host first: a name given by hand wins over a member's of the same name.
    lines += [f"{address}\t{name}" for name, address in (*(me.extra_hosts if me else ()),
                                                          *extra)]
    own = (hostname, me.name if me else "", *(me.aliases if me else ()))
    names = [n for n in dict.fromkeys(own) if n and _HOST_LINE.fullmatch(n)]
    if me and me.ip:
        lines.append(f"{me.ip}\t{' '.join(names)}")
    else:
        lines.append(f"127.0.1.1\t{' '.join(names)}")
    reader = me.container_id if me else ""
    for other in sorted(others, key=lambda m: _spread(reader, m)):
        line = _member_line(other)
        if line and other.container_id != reader:
            lines.append(line)
    return "\n".join(lines) + "\n"


@functools.lru_cache(maxsize=4096)
def _member_line(other: Member) -> str:
    """``other``'s line in the other members' files ('' if it has none): the same in
    every file, so a pass over N members makes each line once, not N times."""
    if not other.ip or not _HOST_LINE.fullmatch(other.name):
        return ""
    aliases = dict.fromkeys((other.name, other.hostname, other.container_id[:12],
                             *other.aliases))
    words = [a for a in aliases if a and _HOST_LINE.fullmatch(a)]
    return f"{other.ip}\t{' '.join(words)}"


def _spread(reader: str, member: Member) -> tuple[int, str]:
    """The place of ``member`` in ``reader``'s hosts file (see ``hosts_file``): CRC-32,
    not a cryptographic hash (nothing rides on it being unguessable, and a join
    computes one per pair of members: sha256 made 500 members' files take 0.7 s)."""
    return zlib.crc32(f"{reader}/{member.container_id}".encode()), member.name


def resolv_conf(host_text: str, *, keep_loopback: bool = False,
                dns: Sequence[str] = ()) -> str:
    """The host's resolv.conf minus loopback nameservers (unreachable from a
    container's own namespace); public resolvers if none is left. ``dns``
    (``--dns``): these servers instead of the host's (its search and options kept)."""
    lines, servers = [f"nameserver {s}" for s in dns], len(dns)
    for line in host_text.splitlines():
        words = line.split()
        if dns and words[:1] == ["nameserver"]:
            continue
        if words[:1] == ["nameserver"] and len(words) > 1:
            try:
                loop = ipaddress.ip_address(words[1].split("%")[0]).is_loopback
            except ValueError:
                loop = False
            if loop and not keep_loopback:
                continue
            servers += 1
        lines.append(line)
    if not servers:
        lines += [f"nameserver {s}" for s in FALLBACK_DNS]
    return "\n".join(lines) + "\n"


# -- the log -------------------------------------------------------------------------------


@dataclass
class NetworkBook:
    """The user networks the log holds, folded from ``network.*`` events."""

    networks: dict[str, Network] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)

    def all(self) -> dict[str, Network]:
        """Every network of the node, the built-in one first."""
        return {DEFAULT_NAME: DEFAULT, **self.networks}

    def get(self, name: str) -> Network:
        if name == DEFAULT_NAME:
            return DEFAULT
        try:
            return self.networks[name]
        except KeyError:
            raise NotFound(f"no such network: {name}") from None
