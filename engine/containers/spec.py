"""The run specification: what a user asked a container to be.

It is recorded whole in ``container.created`` so the log alone can rebuild the
bundle, and validated once here so that nothing downstream (bundle writer,
conmon, runc) ever sees a relative rootfs, a bad signal or a negative limit.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from engine.containers.mountspec import Mount, check_host_paths, check_mounts, mounts_from_user
from engine.errors import InvalidArgument
from engine.health.rules import check_health_options, health_from_user
from engine.networks.names import (
    DEFAULT_NAME,
    MODES,
    check_reference,
    parse_add_host,
    parse_dns,
)
from engine.restarts.rules import check_restart_options
from engine.signals import parse_signal

if TYPE_CHECKING:  # loaded where used: the CLI's start-up path imports this module
    from engine.containers.process import Ulimit

PROTOCOLS = ("tcp", "udp")
_LABEL = r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
_HOSTNAME_RE = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
_CAP_RE = re.compile(r"^CAP_[A-Z_]+$")
# The wire type of each option (from_data refuses any other): a string where a list
# is due would otherwise become a tuple of characters, a bool would pass for an int.
_STR, _BOOL, _LIST, _INT = (str,), (bool,), (list, tuple), (int,)
_NUM: tuple[type, ...] = (int, float)
_OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "rootfs": _STR, "args": _LIST, "env": _LIST, "cwd": _STR, "user": _STR,
    "hostname": _STR, "terminal": _BOOL, "stop_signal": (int, str), "memory": _INT,
    "pids_limit": _INT, "read_only": _BOOL, "ports": _LIST, "auto_remove": _BOOL,
    "no_new_privileges": _BOOL, "cap_add": _LIST,
    "mounts": _LIST,  # volumes
    # images
    "entrypoint": _LIST, "image": _STR, "image_digest": _STR, "image_id": _STR,
    "exposed_ports": _LIST,
    # restart policies and health checks (engine.restarts.rules, engine.health.rules)
    "restart": _STR, "health_cmd": _LIST, "health_interval": _NUM, "health_timeout": _NUM,
    "health_retries": _INT, "health_start_period": _NUM, "health_on_failure": _STR,
    "no_healthcheck": _BOOL, "cpus": _NUM,
    "network": _STR, "expose": _LIST, "publish_all": _BOOL,  # networks
    "network_aliases": _LIST,  # --network-alias, compose's service names
    "add_hosts": _LIST, "dns": _LIST,  # --add-host NAME:ADDRESS, --dns ADDRESS
    "domainname": _STR, "sysctls": _LIST,  # --domainname, --sysctl KEY=VALUE
    # CLI verbs (podman's run flags)
    "labels": (dict,), "init": _BOOL, "cap_drop": _LIST, "ulimits": _LIST, "seccomp": _STR,
    # interactive stdio
    "stdin": _BOOL,
    "log_size_max": _INT,  # --log-opt max-size
    "pid_ns": _STR, "ipc_ns": _STR, "uts_ns": _STR,  # --pid, --ipc, --uts host
}
_WHAT = {_STR: "a string", _BOOL: "true or false", _LIST: "a list", _INT: "an integer",
         (int, str): "a signal name or number", _NUM: "a number of seconds",
         (dict,): "a map of strings"}
_OPTIONAL = frozenset({"memory", "pids_limit", "entrypoint", "cpus", "log_size_max"})
_MOUNT_FORMS = ("volumes", "mount", "tmpfs", "mounts")
"""The user's ways of naming mounts (engine.containers.mountspec.mounts_from_user)."""
_IMAGE_FIELDS = ("image", "image_digest", "image_id")
_IMAGE_LISTS = ("exposed_ports",)


_SIZE_RE = re.compile(r"^(\d+)([bkmg]?)$", re.IGNORECASE)
_SIZES = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(text: str) -> int:
    """A size as podman takes it: bytes, or a number with k, m or g (``64m``)."""
    m = _SIZE_RE.match(text.strip())
    if not m:
        raise InvalidArgument(f"invalid size {text!r}: use bytes, or a number with k, m or g")
    return int(m.group(1)) * _SIZES[m.group(2).lower()]


_HUMAN_SIZE = re.compile(r"^(\d+(?:\.\d+)?) ?([kmgtp]?)i?b?$", re.IGNORECASE)


def parse_log_size(text: str) -> int:
    """``--log-opt max-size``'s SIZE as podman reads it (go-units' FromHumanSize):
    bytes, or a number with k, m, g, t or p, in powers of 1000 (``10m`` and ``10MB``
    are 10,000,000 bytes)."""
    m = _HUMAN_SIZE.match(text.strip())
    size = 0 if m is None else int(float(m.group(1)) * 1000 ** " kmgtp".index(
        m.group(2).lower() or " "))
    if size <= 0:
        raise InvalidArgument(f"invalid --log-opt max-size {text!r}: give a size > 0 such "
                              "as 10m")
    return size


def spec_from_user(options: dict[str, Any]) -> dict[str, Any]:
    """Run options as a program writes them -> the wire form, checked by the same type
    rules as the worker's. Accepts what the CLI accepts: sizes with units (``64m``),
    ports as ``[IP:]HOST:CTR[/PROTO]``, an env map; refuses a command given as one
    string (it would be run character by character)."""
    data = dict(options)
    for key in ("args", "env", "cap_add", "cap_drop"):
        if isinstance(data.get(key), str):
            raise InvalidArgument(f"run option {key} must be a list of strings, not one "
                                  f"string: for example ['sh', '-c', 'echo hi']")
        if isinstance(data.get(key), tuple):
            data[key] = list(data[key])
    if isinstance(data.get("env"), dict):
        data["env"] = [f"{k}={v}" for k, v in data["env"].items()]
    if isinstance(data.get("memory"), str):
        data["memory"] = parse_size(data["memory"])
    if isinstance(data.get("entrypoint"), str):
        data["entrypoint"] = [data["entrypoint"]]
    if isinstance(data.get("entrypoint"), tuple):
        data["entrypoint"] = list(data["entrypoint"])
    if isinstance(data.get("ulimits"), (list, tuple)):
        from engine.containers.process import parse_ulimit  # ~10 ms on the CLI's start-up path

        data["ulimits"] = [list(parse_ulimit(u)) if isinstance(u, str) else u
                           for u in data["ulimits"]]
    ports = data.get("ports")
    if isinstance(ports, (list, tuple)):
        data["ports"] = [list(PortMapping.parse(p)) if isinstance(p, str)
                         else list(p) if isinstance(p, (list, tuple)) else p for p in ports]
    if any(key in data for key in _MOUNT_FORMS):  # volumes: -v, --mount, --tmpfs forms
        data["mounts"] = mounts_from_user({k: data.pop(k) for k in _MOUNT_FORMS if k in data})
    health_from_user(data)
    RunSpec.from_data(data)  # the worker's type rules, at the publisher's edge
    return data


SYSCTL_RE = re.compile(r"^(net\.[a-z0-9_.-]+|kernel\.(shm[a-z_]+|msg[a-z_]+|sem)"
                       r"|fs\.mqueue\.[a-z_]+)$")
"""The sysctls a container may set: those of its own network namespace (``net.*``) and
IPC namespace (``kernel.shm*``, ``kernel.msg*``, ``kernel.sem``, ``fs.mqueue.*``), as
runc and Docker allow; any other is the host's, shared by every container."""


def parse_sysctl(text: object, network: str = "") -> tuple[str, str]:
    """``KEY=VALUE`` of ``SYSCTL_RE``; a ``net.*`` key with ``--network host`` would
    set the host's own, and is refused."""
    key, sep, value = text.partition("=") if isinstance(text, str) else ("", "", "")
    if not sep or not SYSCTL_RE.fullmatch(key) or len(key + value) > 512 \
            or not value.isprintable():
        shown = text if isinstance(text, str) and len(text) <= 80 else type(text).__name__
        raise InvalidArgument(f"invalid sysctl {shown!r}: use KEY=VALUE with a key of the "
                              "container's own namespaces (net.*, kernel.shm*, kernel.msg*, "
                              "kernel.sem, fs.mqueue.*)")
    if key.startswith("net.") and network == "host":
        raise InvalidArgument(f"sysctl {key} would set the host's: not with --network host")
    return key, value


def parse_expose(text: object) -> tuple[int, str]:
    """An exposed port as images and ``--expose`` give it: ``PORT[/tcp|udp]``."""
    if not isinstance(text, str):
        raise InvalidArgument(f"invalid exposed port {text!r}: use PORT[/tcp|udp]")
    number, _, proto = text.partition("/")
    proto = proto or "tcp"
    if proto not in PROTOCOLS or not number.isdigit() or not 1 <= int(number) <= 65535:
        raise InvalidArgument(f"invalid exposed port {text!r}: use PORT[/tcp|udp]")
    return int(number), proto


class PortMapping(NamedTuple):
    """A host port to reserve for the container's lifetime (libpod's bindPorts).

    A NamedTuple so it is both the plain ``[ip, host, ctr, proto]`` of the wire and
    self-describing.
    """

    host_ip: str
    host_port: int
    container_port: int
    protocol: str = "tcp"

    def validate(self) -> PortMapping:
        if self.protocol not in PROTOCOLS:
            raise InvalidArgument(f"unknown protocol {self.protocol!r}: use tcp or udp")
        for port in (self.host_port, self.container_port):
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise InvalidArgument(f"invalid port {port!r}: must be 1-65535")
        if self.host_ip and not _is_ipv4(self.host_ip):  # bound AF_INET (runtime.ports)
            shown = self.host_ip if len(self.host_ip) <= 40 else self.host_ip[:37] + "..."
            raise InvalidArgument(f"invalid host IP {shown!r} in a port mapping: an IPv4 "
                                  "address such as 127.0.0.1")
        return self

    @classmethod
    def parse(cls, text: str) -> PortMapping:
        """Parse podman's ``[IP:]HOST:CTR[/tcp|udp]``."""
        rest, _, proto = text.partition("/")
        parts = rest.rsplit(":", 2)
        try:
            if len(parts) == 3:
                ip, host, ctr = parts
            elif len(parts) == 2:
                ip, (host, ctr) = "", parts
            else:
                raise ValueError
            return cls(ip, int(host), int(ctr), proto or "tcp").validate()
        except ValueError:
            raise InvalidArgument(
                f"invalid port mapping {text!r}: use [IP:]HOST:CONTAINER[/tcp|udp]"
            ) from None


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


NAMESPACE_MODES = ("", "host")
"""A run spec's ``pid_ns``/``ipc_ns``/``uts_ns``: private ("") or the host's."""

PIDS_MAX = 4 * 1024 * 1024
"""The kernel's PID_MAX_LIMIT: a cgroup's ``pids.max`` above it is refused (EINVAL)."""


@dataclass(frozen=True, slots=True)
class RunSpec:
    rootfs: str
    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str = "/"
    user: str = "0:0"
    hostname: str = ""
    terminal: bool = False
    stop_signal: int = 15
    memory: int | None = None
    pids_limit: int | None = None
    read_only: bool = False
    ports: tuple[PortMapping, ...] = ()
    auto_remove: bool = False
    no_new_privileges: bool = False
    cap_add: tuple[str, ...] = field(default=())
    mounts: tuple[Mount, ...] = ()
    # images: what the worker records of the image a container runs (its reference,
    # manifest digest and id) and the ports it exposes (for -P)
    entrypoint: tuple[str, ...] | None = None
    """The entrypoint: the user's ``--entrypoint``, or the image's once the worker
    applied it (None: none). The process runs ``argv``: this, then ``args``."""
    image: str = ""
    image_digest: str = ""
    image_id: str = ""
    exposed_ports: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    """``--label`` and the image's labels (the user's win), sorted by key."""
    # restart policies and health checks (engine.restarts.rules, engine.health.rules)
    restart: str = "no"
    health_cmd: tuple[str, ...] = ()
    health_interval: float = 30.0
    health_timeout: float = 30.0
    health_retries: int = 3
    health_start_period: float = 0.0
    health_on_failure: str = "none"
    no_healthcheck: bool = False
    cpus: float | None = None
    """CPUs' worth of time per period (``--cpus 0.5``): a CFS quota, as Docker's."""
    network: str = ""
    """networks: "" the node's default network, "none", "host" or a name."""
    expose: tuple[str, ...] = ()
    """Container ports ``PORT[/tcp|udp]`` the image or ``--expose`` declares."""
    publish_all: bool = False
    """``-P``: publish every exposed port not given with ``-p`` on a free host port."""
    network_aliases: tuple[str, ...] = ()
    """More names the other members of its user network resolve it by (``--network-alias``;
    compose gives each replica its service's name and the file's ``aliases``)."""
    add_hosts: tuple[str, ...] = ()
    """``--add-host NAME:ADDRESS``: lines of its own /etc/hosts."""
    dns: tuple[str, ...] = ()
    """``--dns``: the nameservers of its resolv.conf instead of the host's."""
    domainname: str = ""
    """``--domainname``: its NIS domain name (its own UTS namespace's)."""
    sysctls: tuple[str, ...] = ()
    """``--sysctl KEY=VALUE``: only keys of its own namespaces (``SYSCTL_RE``)."""
    # CLI verbs (podman's run flags)
    init: bool = False
    cap_drop: tuple[str, ...] = ()
    ulimits: tuple[Ulimit, ...] = ()
    seccomp: str = ""
    """"" for the default profile, "unconfined" for none."""
    stdin: bool = False
    """Keep the process's stdin open (conmon ``-i``) for an attached client (``run -i``)."""
    log_size_max: int | None = None
    """``--log-opt max-size``: conmon truncates the container's log when it would grow
    past this many bytes (conmon ``--log-size-max``). None: the worker's default, which
    is podman's: no limit (docs/operations.md)."""

    pid_ns: str = ""
    ipc_ns: str = ""
    uts_ns: str = ""
    """``--pid``/``--ipc``/``--uts``: "" a namespace of the container's own (podman's
    ``private``), "host" the host's (the namespace is left out of ``config.json``)."""

    def __post_init__(self) -> None:
        """Structural checks only (no filesystem): events decoded from the log pass here."""
        if not self.rootfs and not self.image:
            raise InvalidArgument("run spec: a rootfs or an image is required")
        if not self.argv and not self.image:
            raise InvalidArgument("run spec: args must name a command")
        for item in self.env:
            if "=" not in item or item.startswith("="):
                raise InvalidArgument(
                    f"run spec: invalid environment entry {item!r}: use KEY=VALUE")
        if isinstance(self.stop_signal, bool) or not 1 <= self.stop_signal <= 64:
            raise InvalidArgument(f"run spec: stop signal {self.stop_signal} out of range")
        if self.memory is not None and self.memory <= 0:
            raise InvalidArgument("run spec: memory limit must be positive")
        if self.pids_limit is not None and self.pids_limit <= 0:
            raise InvalidArgument("run spec: pids limit must be positive")
        if self.log_size_max is not None and self.log_size_max <= 0:
            raise InvalidArgument(f"invalid log max-size {self.log_size_max}: give a size > 0")
        for port in self.ports:
            if port.protocol not in PROTOCOLS:
                raise InvalidArgument(f"run spec: unknown protocol {port.protocol!r}")
            for number in (port.host_port, port.container_port):
                if not 0 <= number <= 65535:
                    raise InvalidArgument(f"run spec: port {number} out of range")
        check_mounts(self.mounts)
        check_restart_options(self.restart, self.auto_remove)
        if self.cpus is not None and not 0.01 <= self.cpus <= 1024:
            raise InvalidArgument(f"run spec: invalid cpus {self.cpus!r}: from 0.01 to 1024")
        check_health_options(self)
        for flag, value in (("--pid", self.pid_ns), ("--ipc", self.ipc_ns),
                            ("--uts", self.uts_ns)):
            if value not in NAMESPACE_MODES:
                raise InvalidArgument(f"invalid {flag} {value!r}: berth knows host and private")
        if self.uts_ns == "host" and self.hostname:
            raise InvalidArgument("--hostname and --uts host conflict: the host's UTS "
                                  "namespace has the host's name")

    def validate(self) -> RunSpec:
        """Check everything that can be checked without starting a process."""
        from engine.containers.process import (  # ~10 ms on the CLI's start-up path
            check_argv,
            check_caps,
            check_cwd,
            check_env,
            check_labels,
            check_ulimits,
            check_user,
            is_user_form,
            resolve_user,
        )

        if self.image and not self.rootfs:  # the worker mounts the image's layers
            _check_image_fields(self)
        elif not isinstance(self.rootfs, str) or not os.path.isabs(self.rootfs):
            raise InvalidArgument(f"rootfs {self.rootfs!r} must be an absolute path")
        elif "\0" in self.rootfs or not os.path.isdir(self.rootfs):
            raise InvalidArgument(f"rootfs {self.rootfs!r} is not an existing directory")
        if self.argv or not self.image:  # an image's own command comes at the worker
            check_argv(self.argv, "the container command")
        check_env(self.env)
        check_cwd(self.cwd)
        if not is_user_form(self.user):
            check_user(self.user)  # its sentence for a malformed user
        if self.rootfs:  # an image's names are resolved once the worker mounted it
            resolve_user(self.rootfs, self.user)  # a name must be in the container's files
        check_labels(self.labels)
        check_caps(self.cap_add, "--cap-add")
        check_caps(self.cap_drop, "--cap-drop")
        check_ulimits(self.ulimits)
        if self.seccomp not in ("", "unconfined"):
            raise InvalidArgument(f"invalid seccomp option {self.seccomp!r}: use unconfined, "
                                  "or nothing for the default profile")
        if self.init:
            from engine.containers.process import INIT_PATH  # ~10 ms on the CLI's start-up path

            if not os.path.isfile(INIT_PATH):
                raise InvalidArgument(f"--init needs catatonit at {INIT_PATH} on the node")
        if self.hostname and not _HOSTNAME_RE.fullmatch(self.hostname):
            raise InvalidArgument(f"invalid hostname {self.hostname!r}")
        parse_signal(self.stop_signal)
        if self.memory is not None and (not isinstance(self.memory, int)
                                        or self.memory < 4 * 1024 * 1024):
            raise InvalidArgument(f"invalid memory limit {self.memory!r}: at least 4 MiB, in bytes")
        if self.pids_limit is not None and (not isinstance(self.pids_limit, int)
                                            or not 1 <= self.pids_limit <= PIDS_MAX):
            raise InvalidArgument(f"invalid pids limit {self.pids_limit!r}: from 1 to "
                                  f"{PIDS_MAX}")
        seen: set[tuple[str, int]] = set()
        for port in self.ports:
            port.validate()
            if (port.protocol, port.host_port) in seen:
                raise InvalidArgument(f"host port {port.host_port}/{port.protocol} is given twice")
            seen.add((port.protocol, port.host_port))
        for cap in self.cap_add:
            if not isinstance(cap, str) or not (cap == "ALL" or _CAP_RE.fullmatch(cap)):
                raise InvalidArgument(f"invalid capability {cap!r}: use CAP_NAME")
        check_host_paths(self.mounts)
        if self.network:
            check_reference(self.network)
        for item in self.expose:
            parse_expose(item)
        check_aliases(self.network_aliases, self.network)
        for item in self.add_hosts:
            parse_add_host(item)
        for item in self.dns:
            parse_dns(item)
        if self.domainname and (len(self.domainname) > 64
                                or not _HOSTNAME_RE.fullmatch(self.domainname)):
            raise InvalidArgument(f"invalid domain name {self.domainname!r}")
        for item in self.sysctls:
            parse_sysctl(item, self.network)
        return self

    @property
    def extra_hosts(self) -> tuple[tuple[str, str], ...]:
        """``add_hosts`` as (NAME, ADDRESS) pairs (checked by ``validate``)."""
        return tuple(parse_add_host(h) for h in self.add_hosts)

    @property
    def uid_gid(self) -> tuple[int, int]:
        """The numeric user (a user given by name: see ``process_options.resolve_user``)."""
        uid, _, gid = self.user.partition(":")
        return int(uid), int(gid or 0)

    @property
    def argv(self) -> tuple[str, ...]:
        """The process's command line: the entrypoint, then the arguments."""
        return (*(self.entrypoint or ()), *self.args)

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "rootfs": self.rootfs,
            "args": list(self.args),
            "env": list(self.env),
            "cwd": self.cwd,
            "user": self.user,
            "hostname": self.hostname,
            "terminal": self.terminal,
            "stop_signal": self.stop_signal,
            "memory": self.memory,
            "pids_limit": self.pids_limit,
            "read_only": self.read_only,
            "ports": [[p.host_ip, p.host_port, p.container_port, p.protocol] for p in self.ports],
            "auto_remove": self.auto_remove,
            "no_new_privileges": self.no_new_privileges,
            "cap_add": list(self.cap_add),
            "mounts": [m.to_data() for m in self.mounts],
            **self._image_data(),
            "restart": self.restart,
            "health_cmd": list(self.health_cmd),
            "health_interval": self.health_interval,
            "health_timeout": self.health_timeout,
            "health_retries": self.health_retries,
            "health_start_period": self.health_start_period,
            "health_on_failure": self.health_on_failure,
            "no_healthcheck": self.no_healthcheck,
            "cpus": self.cpus,
            "network": self.network,
            "expose": list(self.expose),
            "publish_all": self.publish_all,
            "entrypoint": None if self.entrypoint is None else list(self.entrypoint),
            "labels": dict(self.labels),
            "init": self.init,
            "cap_drop": list(self.cap_drop),
            "ulimits": [list(u) for u in self.ulimits],
            "seccomp": self.seccomp,
        }
        if self.stdin:  # only when set: the records of earlier specs stay byte for byte
            data["stdin"] = True
        if self.log_size_max is not None:  # the same
            data["log_size_max"] = self.log_size_max
        if self.network_aliases:  # the same
            data["network_aliases"] = list(self.network_aliases)
        for key in ("pid_ns", "ipc_ns", "uts_ns"):  # the same
            if getattr(self, key):
                data[key] = getattr(self, key)
        if self.add_hosts:  # the same
            data["add_hosts"] = list(self.add_hosts)
        if self.dns:  # the same
            data["dns"] = list(self.dns)
        if self.domainname:  # the same
            data["domainname"] = self.domainname
        if self.sysctls:  # the same
            data["sysctls"] = list(self.sysctls)
        return data

    def _image_data(self) -> dict[str, Any]:
        """The image fields, only when set: a spec without an image is stored as before."""
        out: dict[str, Any] = {k: getattr(self, k) for k in _IMAGE_FIELDS if getattr(self, k)}
        out.update({k: list(getattr(self, k)) for k in _IMAGE_LISTS if getattr(self, k)})
        return out

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> RunSpec:
        """Build from a wire or stored map; unknown keys are refused, not ignored."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise InvalidArgument(f"unknown run option(s): {', '.join(sorted(unknown))}")
        for key, value in data.items():
            if value is None and key in _OPTIONAL:
                continue
            if (not isinstance(value, _OPTION_TYPES[key])
                    or (isinstance(value, bool) and bool not in _OPTION_TYPES[key])):
                raise InvalidArgument(f"invalid run option {key} {value!r}: must be "
                                      f"{_WHAT[_OPTION_TYPES[key]]}")
        for port in data.get("ports") or ():
            if (not isinstance(port, (list, tuple)) or len(port) != 4
                    or not isinstance(port[0], str) or not isinstance(port[3], str)
                    or any(isinstance(n, bool) or not isinstance(n, int) for n in port[1:3])):
                raise InvalidArgument(f"invalid port mapping {port!r}: use "
                                      "[host ip, host port, container port, protocol]")
        try:
            kwargs: dict[str, Any] = dict(data)
            kwargs["args"] = tuple(data.get("args") or ())
            kwargs["env"] = tuple(data.get("env") or ())
            kwargs["cap_add"] = tuple(data.get("cap_add") or ())
            kwargs["mounts"] = tuple(Mount.from_data(m) for m in data.get("mounts") or ())
            for key in _IMAGE_LISTS:
                kwargs[key] = tuple(data.get(key) or ())
            kwargs["health_cmd"] = tuple(data.get("health_cmd") or ())
            kwargs["expose"] = tuple(data.get("expose") or ())
            kwargs["network_aliases"] = tuple(data.get("network_aliases") or ())
            kwargs["add_hosts"] = tuple(data.get("add_hosts") or ())
            kwargs["dns"] = tuple(data.get("dns") or ())
            kwargs["sysctls"] = tuple(data.get("sysctls") or ())
            kwargs["cap_drop"] = tuple(data.get("cap_drop") or ())
            if data.get("entrypoint") is not None:
                kwargs["entrypoint"] = tuple(data["entrypoint"])
            labels = data.get("labels") or {}
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
                raise InvalidArgument("invalid run option labels: a map of strings to strings")
            kwargs["labels"] = tuple(sorted(labels.items()))
            kwargs["ulimits"] = ()
            if data.get("ulimits"):
                from engine.containers.process import Ulimit  # ~10 ms on the CLI's start-up path

                kwargs["ulimits"] = tuple(Ulimit(str(u[0]), int(u[1]), int(u[2]))
                                          for u in data["ulimits"])
            kwargs["ports"] = tuple(
                PortMapping(str(p[0]), int(p[1]), int(p[2]), str(p[3]))
                for p in data.get("ports") or ()
            )
            if "stop_signal" in data:
                kwargs["stop_signal"] = parse_signal(data["stop_signal"])
            return cls(**kwargs)
        except (TypeError, ValueError, IndexError) as exc:
            raise InvalidArgument(f"invalid run specification: {exc}") from None


MAX_ALIASES = 64
"""Aliases of one container at most: each is a line's word in every member's hosts file."""


def check_aliases(aliases: tuple[str, ...], network: str) -> None:
    """Network aliases are host names (they go into other members' /etc/hosts, where a
    space or a newline would forge an entry), only on a user network (the default
    network and ``none``/``host`` name nobody: podman refuses them there too; "" is the
    node's default, which an operator may have made a user network)."""
    if not aliases:
        return
    if len(aliases) > MAX_ALIASES:
        raise InvalidArgument(f"too many network aliases ({len(aliases)}): at most "
                              f"{MAX_ALIASES}")
    for alias in aliases:
        if not isinstance(alias, str) or len(alias) > 253 or not _HOSTNAME_RE.fullmatch(alias):
            shown = repr(alias)[:60] if isinstance(alias, str) else type(alias).__name__
            raise InvalidArgument(f"invalid network alias {shown}: use a host name "
                                  "(letters, digits, '-', '.')")
    if network in (DEFAULT_NAME, *MODES):
        raise InvalidArgument("--network-alias needs a user network (--network NAME): "
                              "the default network names no one")


def _check_image_fields(spec: RunSpec) -> None:
    """An image reference as a publisher may send it (the worker resolves it)."""
    for key in (*_IMAGE_FIELDS, *_IMAGE_LISTS):
        value = getattr(spec, key)
        items = value if isinstance(value, tuple) else (value,)
        if any(not isinstance(v, str) or "\0" in v or len(v) > 4096 for v in items):
            raise InvalidArgument(f"invalid run option {key} {value!r}")
