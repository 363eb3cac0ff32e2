"""A Compose file read into the normalised stack berth converges to.

Only the common subset is taken (see ``docs/operations.md``, "Compose"); every other
key is reported, one line each, rather than silently dropped: a stack that quietly
loses its ``cap_drop`` would run with more than its author asked for.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import shlex
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from engine.compose.source import MAX_FILE_BYTES
from engine.containers.process import normalize_cap, parse_env_file, read_env_file
from engine.containers.spec import RunSpec, parse_log_size, parse_size
from engine.errors import InvalidArgument

MAX_REPLICAS = 1000
"""``deploy.replicas`` at most: each replica is a container of this node."""
MAX_CONTAINERS = 10_000
"""The replicas of all a stack's services together."""
MAX_ENV_BYTES = 4 * MAX_FILE_BYTES
"""The env files of one stack together (each read once, however many services name it)."""

CONDITIONS = ("service_started", "service_healthy", "service_completed_successfully")
_SERVICE_KEYS = frozenset({
    "image", "x-berth-rootfs", "command", "entrypoint", "environment", "env_file", "ports",
    "volumes", "labels", "depends_on", "deploy", "restart", "healthcheck", "networks",
    "working_dir", "user", "hostname", "stop_signal", "read_only", "container_name",
    "stop_grace_period", "tty", "stdin_open", "init", "cap_add", "cap_drop", "expose",
    "mem_limit", "cpus", "logging", "tmpfs", "ulimits", "network_mode", "secrets",
    "configs", "pull_policy", "extra_hosts", "dns", "domainname", "sysctls",
})
PULL_POLICIES = {"always": "always", "missing": "missing", "if_not_present": "missing",
                 "never": "never"}
"""``pull_policy`` values berth carries out (``build`` has nothing to build from, and
``daily``/``weekly``/``every_N`` would need a record of when each image was pulled)."""
DEFAULT_NETWORK = "default"
"""The network of the services that name none: ``PROJECT_default``, made by ``up`` and
removed by ``down``, as docker compose makes it, so that a file without any
``networks:`` key still has its services reach each other by name."""
DEFAULT_GRACE = 10.0
"""``stop_grace_period`` when the file gives none: docker compose's 10 s."""
_TOP_KEYS = frozenset({"version", "name", "services", "volumes", "networks", "secrets",
                       "configs"})
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
"""A service's, a volume's or a network's name in the file."""
_PROJECT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class Unsupported(InvalidArgument):
    """Keys of the file berth does not carry out, one line each."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def check_project(project: object) -> str:
    """A project's name: [a-z0-9][a-z0-9_-]*, at most 63 characters."""
    if not isinstance(project, str) or not _PROJECT_RE.fullmatch(project):
        raise InvalidArgument(f"invalid project name {_shown(project)}: use "
                              "[a-z0-9][a-z0-9_-]*, at most 63 characters")
    return project


def project_name(text: str) -> str:
    """docker compose's normalisation: lower case, only [a-z0-9_-], starting with a
    letter or digit (a directory ``My App`` is project ``myapp``)."""
    name = re.sub(r"[^a-z0-9_-]", "", text.lower()).lstrip("_-")
    if not name:
        raise InvalidArgument(f"project name {_shown(text)} has no letter or digit: name "
                              "one with -p")
    return check_project(name)


def _key(key: Any) -> str:
    """A key of the file in a refusal's line, cut short."""
    text = str(key) if isinstance(key, (str, int, float, bool)) or key is None else "?"
    return text if len(text) <= 40 else text[:37] + "..."


def _shown(value: Any) -> str:
    """A value of the file in a refusal, cut short (a name, a short scalar)."""
    text = repr(value) if isinstance(value, (str, int, float, bool)) or value is None \
        else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _spec_fields() -> frozenset[str]:
    """The run spec's options now (restart, health checks, networks arrive with other
    changes: asked at run time so they work as soon as the spec has them)."""
    return frozenset(f.name for f in dataclasses.fields(RunSpec))


def _duration(value: Any, what: str) -> float:
    seconds = math.nan
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and value and _DURATION_RE.sub("", value) == "":
        seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION_RE.findall(value))
    if not 0 <= seconds < 1e9:  # nan and inf too: JSON has neither
        raise InvalidArgument(f"{what}: invalid duration {_shown(value)}: use e.g. 10s, 1m30s")
    return seconds


def _health(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what}: must be a mapping")
    if value.get("disable") is True:
        return {}
    out: dict[str, Any] = {}
    test = value.get("test")
    if isinstance(test, str):
        out["health_cmd"] = ["/bin/sh", "-c", test]
    elif isinstance(test, list) and test and all(isinstance(t, str) for t in test):
        if test[0] == "NONE":
            return {}
        if test[0] == "CMD-SHELL" and len(test) == 2:
            out["health_cmd"] = ["/bin/sh", "-c", test[1]]
        elif test[0] == "CMD" and len(test) > 1:
            out["health_cmd"] = list(test[1:])
        else:
            raise InvalidArgument(f"{what}.test: use [CMD, ...], [CMD-SHELL, STR] or a string")
    else:
        raise InvalidArgument(f"{what}.test is required: a string or a list")
    for key, option in (("interval", "health_interval"), ("timeout", "health_timeout"),
                        ("start_period", "health_start_period")):
        if key in value:
            out[option] = _duration(value[key], f"{what}.{key}")
    if "retries" in value:
        retries = value["retries"]
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 1:
            raise InvalidArgument(f"{what}.retries: must be a positive integer")
        out["health_retries"] = retries
    extra = sorted(set(value) - {"test", "interval", "timeout", "start_period", "retries",
                                 "disable"}, key=str)
    if extra:
        raise InvalidArgument(f"{what}: unsupported key {_shown(extra[0])}")
    return out


def _restart(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, str) or not re.fullmatch(
            r"no|always|unless-stopped|on-failure(:\d+)?", value):
        raise InvalidArgument(f"{what}: use no, always, unless-stopped or on-failure[:N]")
    return {"restart": value}


def _networks(project: str, declared: set[str]) -> Callable[[Any, str], dict[str, Any]]:
    def convert(value: Any, what: str) -> dict[str, Any]:
        names = list(value) if isinstance(value, (list, dict)) else None
        if not names or not all(isinstance(n, str) for n in names):
            raise InvalidArgument(f"{what}: a list (or mapping) of network names")
        if len(names) > 1:
            raise InvalidArgument(f"{what}: one network per service is supported")
        options = value[names[0]] if isinstance(value, dict) else None
        aliases: list[str] = []
        if options not in (None, {}):
            if not isinstance(options, dict) or set(options) - {"aliases"}:
                raise InvalidArgument(f"{what}.{_key(names[0])}: only aliases are supported "
                                      "(not addresses or other options)")
            aliases = _strings(options["aliases"], f"{what}.{_key(names[0])}.aliases")
        if names[0] not in declared:
            raise InvalidArgument(f"{what}: {_shown(names[0])} is not declared under the "
                                  "top-level 'networks'")
        service = what.split(".")[1]  # services.NAME.networks
        # Every replica answers to its service's name, as under docker compose.
        return {"network": f"{project}_{names[0]}",
                "network_aliases": list(dict.fromkeys((service, *aliases)))}
    return convert


SPEC_MAPPING: dict[str, tuple[tuple[str, ...], str]] = {
    # compose key: (the run spec options it needs, how it is converted)
    "restart": (("restart",), "_restart"),
    "healthcheck": (("health_cmd", "health_interval", "health_timeout",
                     "health_start_period", "health_retries"), "_health"),
    "networks": (("network", "network_aliases"), "_networks"),
}
"""The compose keys carried by run spec options that other parts of the engine add
(restart policies, health checks, networks): each works once its options exist."""


def _strings(value: Any, what: str, *, split: bool = False) -> list[str]:
    if isinstance(value, str) and split:
        try:
            return shlex.split(value)
        except ValueError as exc:
            raise InvalidArgument(f"{what}: {exc}") from None
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) and
                                       not isinstance(v, bool) for v in value):
        return [str(v) for v in value]
    raise InvalidArgument(f"{what}: must be a list of strings" + (" or a string" if split else ""))


def _mapping(value: Any, what: str, environ: Mapping[str, str] | None = None
             ) -> dict[str, str]:
    """``environment``/``labels``: a map, or a list of KEY=VALUE. With ``environ``
    (``environment``), a key without a value (``- FOO``, ``FOO:``) takes the value
    ``berth compose`` has for it, and is left out when it has none (unset, not
    empty), as the specification says."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or isinstance(v, (dict, list, set, bytes)):
                raise InvalidArgument(f"{what}: {_shown(k)} must map to a plain value")
            if v is None and environ is not None:
                if k in environ:
                    out[k] = environ[k]
                continue
            out[k] = "" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
        return out
    if isinstance(value, list):
        pairs = {}
        for item in value:
            if not isinstance(item, str) or not item or item.startswith("="):
                raise InvalidArgument(f"{what}: {_shown(item)} is not KEY=VALUE")
            key, sep, val = item.partition("=")
            if not sep and environ is not None:
                if key in environ:
                    pairs[key] = environ[key]
                continue
            pairs[key] = val
        return pairs
    raise InvalidArgument(f"{what}: a mapping or a list of KEY=VALUE")


class _EnvFiles:
    """The env files of one stack: each read once (``engine.containers.process``: a
    regular file, bounded, its lines checked by number), ``MAX_ENV_BYTES`` in all."""

    def __init__(self, base_dir: str) -> None:
        self.base_dir = base_dir
        self.read: dict[str, dict[str, str]] = {}
        self.total = 0

    def get(self, name: str, what: str) -> dict[str, str]:
        """``name`` as the file gives it (relative to its directory)."""
        path = os.path.normpath(os.path.join(self.base_dir, name))
        if path not in self.read:
            try:
                text = read_env_file(path, f"env file {name}")
                self.total += len(text)
                if self.total > MAX_ENV_BYTES:
                    raise InvalidArgument(f"the env files add up to more than "
                                          f"{MAX_ENV_BYTES} bytes")
                # Compose trims the value (podman keeps it as written).
                self.read[path] = {key: value.strip() for key, _, value in
                                   (e.partition("=") for e in parse_env_file(text, name))}
            except InvalidArgument as exc:  # its sentences never quote a line
                raise InvalidArgument(f"{what}: {exc.message}") from None
        return self.read[path]


def _depends(value: Any, what: str) -> dict[str, str]:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return dict.fromkeys(value, "service_started")
    if isinstance(value, dict):
        out = {}
        for dep, opts in value.items():
            cond = opts.get("condition", "service_started") if isinstance(opts, dict) else None
            if not isinstance(dep, str) or cond not in CONDITIONS:
                raise InvalidArgument(f"{what}.{_shown(dep)}: condition must be one of "
                                      + ", ".join(CONDITIONS))
            out[str(dep)] = str(cond)
        return out
    raise InvalidArgument(f"{what}: a list of services or a mapping with conditions")


def _positive(value: Any, what: str, most: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"{what}: must be a non-negative integer")
    if most is not None and value > most:
        raise InvalidArgument(f"{what}: at most {most}")
    return value


def _deploy(value: Any, what: str, problems: list[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what}: must be a mapping")
    out: dict[str, Any] = {"replicas": 1}
    for key, item in value.items():
        if key == "replicas":
            out["replicas"] = _positive(item, f"{what}.replicas", MAX_REPLICAS)
        elif key == "resources" and isinstance(item, dict):
            for rkey, ritem in item.items():
                if rkey != "limits" or not isinstance(ritem, dict):
                    problems.append(f"{what}.resources.{_key(rkey)}: not supported")
                    continue
                for lkey, lval in ritem.items():
                    if lkey == "memory":
                        if isinstance(lval, bool) or not isinstance(lval, (str, int)):
                            raise InvalidArgument(f"{what}.resources.limits.memory: a size "
                                                  "such as 64m")
                        out["memory"] = parse_size(str(lval))
                    elif lkey == "pids":
                        out["pids_limit"] = _positive(lval, f"{what}.resources.limits.pids")
                    else:
                        problems.append(f"{what}.resources.limits.{_key(lkey)}: not supported")
        else:
            problems.append(f"{what}.{_key(key)}: not supported")
    return out


def normalise(data: dict[str, Any], *, project: str, base_dir: str,
              environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The file's stack as plain data (what ``compose config`` prints and
    ``stack.applied`` records); raises Unsupported naming every key berth would drop.
    ``environ``: the variables a bare ``environment`` key takes its value from (the
    shell's over ``.env``'s); none given, the process's own."""
    if environ is None:
        environ = dict(os.environ)
    problems: list[str] = []
    if data.get("name") is not None and not isinstance(data["name"], str):
        raise InvalidArgument("name: must be a string")
    project = project_name(data.get("name") or project)
    for key in sorted(set(data) - _TOP_KEYS, key=str):  # keys may be numbers too
        if not str(key).startswith("x-"):
            problems.append(f"{_key(key)}: top-level key not supported")
    services = data.get("services")
    if not isinstance(services, dict) or not services:
        raise InvalidArgument("compose file: 'services' must be a non-empty mapping")
    volumes_top = data.get("volumes") or {}
    if not isinstance(volumes_top, dict):
        raise InvalidArgument("compose file: top-level 'volumes' must be a mapping")
    for vname, vdef in volumes_top.items():
        if not isinstance(vname, str) or not NAME_RE.fullmatch(vname):
            raise InvalidArgument(f"volumes: invalid volume name {_shown(vname)}")
        if vdef not in (None, {}):
            problems.append(f"volumes.{vname}: options are not supported")
    networks_top = data.get("networks") or {}
    if not isinstance(networks_top, dict):
        raise InvalidArgument("compose file: top-level 'networks' must be a mapping")
    subnets: dict[str, str] = {}
    for nname, ndef in networks_top.items():
        if not isinstance(nname, str) or not NAME_RE.fullmatch(nname):
            raise InvalidArgument(f"networks: invalid network name {_shown(nname)}")
        subnets[nname] = _subnet(ndef, f"networks.{nname}", problems)
    have = _spec_fields()
    env_files = _EnvFiles(base_dir)
    files = {kind: _file_sources(data.get(kind), kind, base_dir) for kind in
             ("secrets", "configs")}
    out_services: dict[str, Any] = {}
    for name, svc in services.items():
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise InvalidArgument(f"services: invalid service name {_shown(name)}")
        what = f"services.{name}"
        if not isinstance(svc, dict):
            raise InvalidArgument(f"{what}: must be a mapping")
        for key in sorted(set(svc) - _SERVICE_KEYS, key=str):
            if not str(key).startswith("x-"):
                problems.append(f"{what}.{_key(key)}: not supported")
        out_services[name] = _service(svc, what, project, base_dir, set(volumes_top),
                                      set(networks_top), have, problems, env_files, environ)
        for kind in ("secrets", "configs"):
            if kind in svc:
                mounts = _file_mounts(svc[kind], f"{what}.{kind}", kind, files[kind])
                opts = out_services[name]["options"]
                opts["volumes"] = [*opts.get("volumes", []), *mounts]
        if "pull_policy" in svc:
            policy = svc["pull_policy"]
            if not isinstance(policy, str) or policy not in PULL_POLICIES:
                raise InvalidArgument(f"{what}.pull_policy: use always, missing or never")
            out_services[name]["pull_policy"] = PULL_POLICIES[policy]
        if "networks" not in svc and "network_mode" not in svc:
            # Compose's implicit network (its subnet, if the file declares ``default``).
            subnets.setdefault(DEFAULT_NETWORK, "")
            out_services[name]["options"].update(
                network=f"{project}_{DEFAULT_NETWORK}", network_aliases=[name])
    for name, svc in out_services.items():
        for dep, cond in svc["depends_on"].items():
            if dep not in out_services:
                raise InvalidArgument(f"services.{name}.depends_on: no service {_shown(dep)}")
            if cond == "service_healthy" and "health_cmd" not in out_services[dep]["options"]:
                raise InvalidArgument(f"services.{name}.depends_on.{dep}: service_healthy "
                                      f"needs a healthcheck on {dep}")
    check_container_names(out_services)
    if sum(svc["replicas"] for svc in out_services.values()) > MAX_CONTAINERS:
        raise InvalidArgument(f"services: more than {MAX_CONTAINERS} replicas in all")
    if problems:
        raise Unsupported(problems)
    stack = {"name": project, "services": out_services, "volumes": sorted(volumes_top),
             "networks": dict(sorted(subnets.items()))}
    order(stack)  # refuses a dependency cycle
    return stack


def _long_volume(item: dict[str, Any], what: str) -> str:
    """A ``volumes`` entry in the long form (``type: bind|volume``, ``source``,
    ``target``, ``read_only``) as the short ``SOURCE:TARGET[:ro]`` it means; its other
    options (bind propagation, volume nocopy, tmpfs size...) are refused by name."""
    kind, source, target = item.get("type"), item.get("source"), item.get("target")
    if kind not in ("bind", "volume"):
        raise InvalidArgument(f"{what}: type {_shown(kind)} is not supported (bind or "
                              "volume; a tmpfs is the tmpfs key)")
    extra = sorted(set(item) - {"type", "source", "target", "read_only"}, key=str)
    if extra:
        raise InvalidArgument(f"{what}: {_shown(extra[0])} is not supported in a volume")
    if not isinstance(source, str) or not source or not isinstance(target, str) \
            or not target or ":" in source + target:
        raise InvalidArgument(f"{what}: source and target are required strings without ':'")
    if kind == "bind" and not (source in (".", "..") or source.startswith(
            ("/", "./", "../", "~"))):
        source = "./" + source  # a bind's source is a path, relative to the project
    read_only = item.get("read_only", False)
    if not isinstance(read_only, bool):
        raise InvalidArgument(f"{what}: read_only must be true or false")
    return f"{source}:{target}" + (":ro" if read_only else "")


def check_container_names(services: Mapping[str, Any]) -> None:
    """``container_name``: a service of one replica (two containers cannot share a name),
    and no two services naming theirs alike."""
    seen: dict[str, str] = {}
    for name, svc in services.items():
        custom = svc.get("container_name") if isinstance(svc, dict) else None
        if custom is None:
            continue
        if not isinstance(custom, str) or not custom:
            raise InvalidArgument(f"services.{name}.container_name: must be a string")
        if svc.get("replicas", 1) > 1:
            raise InvalidArgument(f"services.{name}: container_name names one container: "
                                  "deploy.replicas must be 1")
        if custom in seen:
            raise InvalidArgument(f"services.{name}.container_name: {_shown(custom)} is "
                                  f"services.{seen[custom]}'s too")
        seen[custom] = name


def _file_sources(value: Any, kind: str, base_dir: str) -> dict[str, str]:
    """Top-level ``secrets``/``configs``: NAME -> the host file, each ``file:`` only (a
    secret from the environment or a swarm's is not this node's), resolved inside the
    project directory (symbolic links too: a file outside it, ``/etc/shadow`` by a link,
    is refused), a regular file. Its content is never read: it is bind-mounted
    read-only, so it is in no event, no log line and no ``config`` output."""
    if value in (None, {}):
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument(f"{kind}: must be a mapping")
    root = os.path.realpath(base_dir)
    out = {}
    for name, item in value.items():
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise InvalidArgument(f"{kind}: invalid name {_shown(name)}")
        what = f"{kind}.{name}"
        if not isinstance(item, dict) or set(item) != {"file"} or not isinstance(
                item["file"], str) or not item["file"] or "\0" in item["file"]:
            raise InvalidArgument(f"{what}: only file: PATH is supported (not environment, "
                                  "content or external)")
        path = os.path.realpath(os.path.join(root, os.path.expanduser(item["file"])))
        if os.path.commonpath([root, path]) != root:
            raise InvalidArgument(f"{what}: {_shown(item['file'])} is outside the project "
                                  "directory")
        if not os.path.isfile(path):
            raise InvalidArgument(f"{what}: {_shown(item['file'])} is not a regular file")
        out[name] = path
    return out


def _file_mounts(value: Any, what: str, kind: str, sources: Mapping[str, str]
                 ) -> list[str]:
    """A service's ``secrets``/``configs``: each a read-only bind mount of its file, at
    /run/secrets/NAME (a secret) or /NAME (a config) unless ``target`` says where."""
    if not isinstance(value, list):
        raise InvalidArgument(f"{what}: must be a list")
    mounts = []
    for item in value:
        source = item if isinstance(item, str) else item.get("source") \
            if isinstance(item, dict) else None
        if not isinstance(source, str) or source not in sources:
            raise InvalidArgument(f"{what}: {_shown(source)} is not declared under the "
                                  f"top-level '{kind}'")
        target = item.get("target", source) if isinstance(item, dict) else source
        if isinstance(item, dict) and set(item) - {"source", "target"}:
            raise InvalidArgument(f"{what}.{source}: only source and target are supported "
                                  "(not uid, gid or mode)")
        if not isinstance(target, str) or not target or "\0" in target or ":" in target:
            raise InvalidArgument(f"{what}.{source}: invalid target {_shown(target)}")
        if not target.startswith("/"):
            target = ("/run/secrets/" if kind == "secrets" else "/") + target
        mounts.append(f"{sources[source]}:{os.path.normpath(target)}:ro")
    return mounts


def _subnet(value: Any, what: str, problems: list[str]) -> str:
    """A network's ``ipam.config[0].subnet`` ('' for one the engine picks); any other
    option is reported."""
    if value in (None, {}):
        return ""
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what}: must be a mapping")
    for key in sorted(set(value) - {"ipam"}, key=str):
        problems.append(f"{what}.{_key(key)}: not supported")
    config = (value.get("ipam") or {}).get("config") if isinstance(value.get("ipam"),
                                                                  dict) else None
    if (not isinstance(config, list) or len(config) != 1 or not isinstance(config[0], dict)
            or not isinstance(config[0].get("subnet"), str) or set(config[0]) != {"subnet"}):
        problems.append(f"{what}.ipam: only config: [{{subnet: CIDR}}] is supported")
        return ""
    subnet: str = config[0]["subnet"]
    return subnet


def _service(svc: dict[str, Any], what: str, project: str, base_dir: str,
             volumes: set[str], networks: set[str], have: frozenset[str],
             problems: list[str], env_files: _EnvFiles, environ: Mapping[str, str],
             ) -> dict[str, Any]:
    out: dict[str, Any] = {"depends_on": {}, "replicas": 1}
    opts: dict[str, Any] = {}
    image, rootfs = svc.get("image"), svc.get("x-berth-rootfs")
    if image is not None and not isinstance(image, str):
        raise InvalidArgument(f"{what}.image: must be a string")
    if rootfs is None and isinstance(image, str) and image.startswith(("/", "./", "../")):
        rootfs, image = image, None  # berth: an image that is a path is a root filesystem
    if rootfs is not None:
        if not isinstance(rootfs, str) or not rootfs:
            raise InvalidArgument(f"{what}.x-berth-rootfs: must be a path")
        opts["rootfs"] = os.path.normpath(os.path.join(base_dir, rootfs))
        if os.path.realpath(opts["rootfs"]) == "/":  # ../../.. from the file's directory
            raise InvalidArgument(f"{what}: the root filesystem is the host's own root")
    if image:
        opts["image"], opts["rootfs"] = image, ""
    if not rootfs and not image:
        raise InvalidArgument(f"{what}: needs an image (a reference or a ./path)")
    if "command" in svc:
        opts["args"] = _strings(svc["command"], f"{what}.command", split=True)
    elif rootfs:
        raise InvalidArgument(f"{what}: a root filesystem service needs a command")
    if "entrypoint" in svc:
        opts["entrypoint"] = _strings(svc["entrypoint"], f"{what}.entrypoint", split=True)
    env: dict[str, str] = {}
    if "env_file" in svc:
        files = [svc["env_file"]] if isinstance(svc["env_file"], str) else svc["env_file"]
        for path in _strings(files, f"{what}.env_file"):
            env.update(env_files.get(path, f"{what}.env_file"))
    if "environment" in svc:
        env.update(_mapping(svc["environment"], f"{what}.environment", environ))
    opts["env"] = [f"{k}={v}" for k, v in env.items()]
    if "ports" in svc:
        opts["ports"] = _ports(svc["ports"], f"{what}.ports")
    if "volumes" in svc:
        mounts = []
        if not isinstance(svc["volumes"], list):
            raise InvalidArgument(f"{what}.volumes: must be a list")
        items = [_long_volume(v, f"{what}.volumes") if isinstance(v, dict) else v
                 for v in svc["volumes"]]
        for item in _strings(items, f"{what}.volumes"):
            source, sep, rest = item.partition(":")
            if not sep:
                raise InvalidArgument(f"{what}.volumes: {_shown(item)}: use SOURCE:TARGET[:ro]"
                                      " (a volume without a source is not supported)")
            if source in (".", "..") or source.startswith(("/", "./", "../", "~")):
                source = os.path.normpath(os.path.join(base_dir, os.path.expanduser(source)))
            elif source in volumes:
                source = f"{project}_{source}"
            else:
                raise InvalidArgument(f"{what}.volumes: {_shown(source)} is not declared "
                                      "under the top-level 'volumes'")
            mounts.append(f"{source}:{rest}")
        opts["volumes"] = mounts
    labels = _mapping(svc.get("labels", {}), f"{what}.labels")
    for key, option in (("working_dir", "cwd"), ("user", "user"), ("hostname", "hostname"),
                        ("stop_signal", "stop_signal")):
        if key in svc:
            if not isinstance(svc[key], str):
                raise InvalidArgument(f"{what}.{key}: must be a string")
            opts[option] = svc[key]
    if "read_only" in svc:
        if not isinstance(svc["read_only"], bool):
            raise InvalidArgument(f"{what}.read_only: must be true or false")
        opts["read_only"] = svc["read_only"]
    _more_keys(svc, what, opts)
    if "extra_hosts" in svc:
        hosts = svc["extra_hosts"]
        if isinstance(hosts, dict):  # NAME: ADDRESS (a list of addresses: one line each)
            hosts = [f"{k}={a}" for k, v in hosts.items()
                     for a in (v if isinstance(v, list) else [v])]
        opts["add_hosts"] = _strings(hosts, f"{what}.extra_hosts")
    if "dns" in svc:
        opts["dns"] = _strings([svc["dns"]] if isinstance(svc["dns"], str) else svc["dns"],
                               f"{what}.dns")
    if "domainname" in svc:
        if not isinstance(svc["domainname"], str):
            raise InvalidArgument(f"{what}.domainname: must be a string")
        opts["domainname"] = svc["domainname"]
    if "sysctls" in svc:
        opts["sysctls"] = list(_mapping(svc["sysctls"], f"{what}.sysctls").items())
        opts["sysctls"] = [f"{k}={v}" for k, v in opts["sysctls"]]
    if "network_mode" in svc:
        if svc["network_mode"] != "none" or "networks" in svc:
            raise InvalidArgument(f"{what}.network_mode: only none is supported (and not "
                                  "with networks:)")
        opts["network"] = "none"
    if "container_name" in svc:
        # The container's name (and so a name on its network): one replica only, as
        # docker compose has it; the reconciler knows it by its labels (plan.identify).
        if not isinstance(svc["container_name"], str) or not svc["container_name"]:
            raise InvalidArgument(f"{what}.container_name: must be a string")
        out["container_name"] = svc["container_name"]
    if "stop_grace_period" in svc:
        # Not a run option: how long down/stop/restart wait before they kill is the
        # reconciler's to apply (and changing it does not recreate a replica).
        out["stop_grace_period"] = _duration(svc["stop_grace_period"],
                                             f"{what}.stop_grace_period")
    if "depends_on" in svc:
        out["depends_on"] = _depends(svc["depends_on"], f"{what}.depends_on")
    if "deploy" in svc:
        deploy = _deploy(svc["deploy"], f"{what}.deploy", problems)
        out["replicas"] = deploy.pop("replicas")
        opts.update(deploy)
    converters: dict[str, Callable[[Any, str], dict[str, Any]]] = {
        "_restart": _restart, "_health": _health, "_networks": _networks(project, networks)}
    for key, (needs, how) in SPEC_MAPPING.items():
        if key not in svc:
            continue
        missing = [n for n in needs if n not in have]
        if missing:
            problems.append(f"{what}.{key}: not supported by this engine yet (its run "
                            f"spec has no {missing[0]!r} option)")
            continue
        opts.update(converters[how](svc[key], f"{what}.{key}"))
    out["labels"] = labels
    out["options"] = opts
    return out


def _ports(value: Any, what: str) -> list[str]:
    """``ports``: short strings (``[IP:]HOST:CTR[/PROTO]``, a bare number), or the
    long form's mappings (``target``, ``published``, ``host_ip``, ``protocol``,
    ``mode: host``), each made the short string ``berth run -p`` takes."""
    if not isinstance(value, list):
        raise InvalidArgument(f"{what}: must be a list")
    out = []
    for n, item in enumerate(value):
        if not isinstance(item, dict):
            out += _strings([item], f"{what}[{n}]")
            continue
        extra = set(item) - {"target", "published", "host_ip", "protocol", "mode", "name",
                             "app_protocol"}
        if extra:
            raise InvalidArgument(f"{what}[{n}]: unsupported key {_shown(sorted(extra)[0])}")
        target, published = item.get("target"), item.get("published")
        if isinstance(target, bool) or not isinstance(target, int):
            raise InvalidArgument(f"{what}[{n}].target: a port number")
        if item.get("mode", "host") not in ("host", "ingress"):
            raise InvalidArgument(f"{what}[{n}].mode: host or ingress")
        proto = item.get("protocol", "tcp")
        host_ip = item.get("host_ip", "")
        if not isinstance(proto, str) or not isinstance(host_ip, str) or (
                published is not None and (isinstance(published, bool)
                                           or not isinstance(published, (int, str)))):
            raise InvalidArgument(f"{what}[{n}]: protocol and host_ip are strings, published "
                                  "a port")
        text = f"{target}/{proto}"
        if published is not None and str(published) != "":
            text = f"{host_ip + ':' if host_ip else ''}{published}:{text}"
        out.append(text)
    return out


_LOG_DRIVERS = ("json-file", "k8s-file", "local")
"""Accepted as berth's own log (conmon's k8s-file): the file every container has."""


def _more_keys(svc: dict[str, Any], what: str, opts: dict[str, Any]) -> None:
    """The keys that map one to one onto ``berth run``'s options."""
    for key, option in (("tty", "terminal"), ("stdin_open", "stdin"), ("init", "init")):
        if key in svc:
            if not isinstance(svc[key], bool):
                raise InvalidArgument(f"{what}.{key}: must be true or false")
            if svc[key]:
                opts[option] = True
    for key in ("cap_add", "cap_drop"):
        if key in svc:
            opts[key] = [normalize_cap(c) for c in _strings(svc[key], f"{what}.{key}")]
    if "expose" in svc:
        opts["expose"] = [p if "/" in p else f"{p}/tcp"
                          for p in _strings(svc["expose"], f"{what}.expose")]
    if "mem_limit" in svc:
        if isinstance(svc["mem_limit"], bool) or not isinstance(svc["mem_limit"], (str, int)):
            raise InvalidArgument(f"{what}.mem_limit: a size such as 64m")
        opts["memory"] = parse_size(str(svc["mem_limit"]))
    if "cpus" in svc:
        try:
            cpus = float(svc["cpus"]) if not isinstance(svc["cpus"], bool) else math.nan
        except (TypeError, ValueError):
            cpus = math.nan
        if not 0.01 <= cpus <= 1024:  # nan too
            raise InvalidArgument(f"{what}.cpus: a number from 0.01 to 1024")
        opts["cpus"] = cpus
    if "tmpfs" in svc:
        tmpfs = svc["tmpfs"]
        opts["tmpfs"] = _strings([tmpfs] if isinstance(tmpfs, str) else tmpfs,
                                 f"{what}.tmpfs")
    if "ulimits" in svc:
        opts["ulimits"] = _ulimits(svc["ulimits"], f"{what}.ulimits")
    if "logging" in svc:
        _logging(svc["logging"], f"{what}.logging", opts)


def _ulimits(value: Any, what: str) -> list[str]:
    """``nofile: 1024`` or ``nofile: {soft: 1024, hard: 2048}`` -> ``nofile=1024:2048``."""
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what}: a mapping of limits")
    out = []
    for name, limit in value.items():
        if isinstance(limit, dict) and set(limit) == {"soft", "hard"}:
            soft, hard = limit["soft"], limit["hard"]
        else:
            soft = hard = limit
        if any(isinstance(v, bool) or not isinstance(v, int) for v in (soft, hard)):
            raise InvalidArgument(f"{what}.{_key(name)}: a number or {{soft: N, hard: N}}")
        out.append(f"{name}={soft}:{hard}")
    return out


def _logging(value: Any, what: str, opts: dict[str, Any]) -> None:
    if not isinstance(value, dict) or set(value) - {"driver", "options"}:
        raise InvalidArgument(f"{what}: a mapping of driver and options")
    driver = value.get("driver", "json-file")
    if driver not in _LOG_DRIVERS:
        raise InvalidArgument(f"{what}.driver: {_shown(driver)} is not supported (berth "
                              "keeps every container's log in its own file: json-file, "
                              "k8s-file or local)")
    options = value.get("options") or {}
    if not isinstance(options, dict):
        raise InvalidArgument(f"{what}.options: a mapping")
    for key, item in options.items():
        if key == "max-size":
            if not isinstance(item, (str, int)) or isinstance(item, bool):
                raise InvalidArgument(f"{what}.options.max-size: a size such as 10m")
            try:
                opts["log_size_max"] = parse_log_size(str(item))
            except InvalidArgument:
                raise InvalidArgument(f"{what}.options.max-size: a size such as 10m"
                                      ) from None
        elif key not in ("max-file", "compress", "mode"):
            raise InvalidArgument(f"{what}.options.{_key(key)}: not supported (max-size is)")


def order(stack: dict[str, Any]) -> list[str]:
    """Services with every dependency before its dependants (ties by name). A walk
    with its own stack: a chain of thousands of services does not recurse."""
    services: dict[str, Any] = stack["services"]
    done: list[str] = []
    placed: set[str] = set()

    def deps(name: str) -> Iterator[str]:
        return iter(sorted(services[name]["depends_on"]))

    for first in sorted(services):
        if first in placed:
            continue
        path: list[tuple[str, Iterator[str]]] = [(first, deps(first))]
        visiting = {first}
        while path:
            name, pending = path[-1]
            for dep in pending:
                if dep in placed:
                    continue
                if dep in visiting:
                    raise InvalidArgument(f"services: dependency cycle through {dep!r}")
                visiting.add(dep)
                path.append((dep, deps(dep)))
                break
            else:
                path.pop()
                visiting.discard(name)
                placed.add(name)
                done.append(name)
    return done


def digest(stack: dict[str, Any]) -> str:
    """The stack's identity: sha256 of its canonical JSON."""
    text = json.dumps(stack, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def container_name(project: str, service: str, number: int) -> str:
    return f"{project}-{service}-{number}"


def replica_name(stack: Mapping[str, Any], service: str, number: int) -> str:
    """A replica's container name: its service's ``container_name`` (one replica only),
    else ``PROJECT-SERVICE-N``."""
    custom = stack["services"][service].get("container_name")
    return str(custom) if custom else container_name(stack["name"], service, number)


CONFIG_HASH_LABEL = "com.docker.compose.config-hash"
"""The label holding the service's ``config_hash`` on each of its containers, as docker
compose names it: a replica whose label differs from the file's service is recreated."""


def config_hash(stack: dict[str, Any], service: str) -> str:
    """What a replica is made from: the service's run options and labels (sha256 of
    their canonical JSON). ``deploy.replicas`` and ``depends_on`` are left out, as docker
    compose leaves them out: scaling or reordering does not recreate a replica."""
    svc = stack["services"][service]
    made = {"options": svc["options"], "labels": svc["labels"]}
    if svc.get("container_name"):  # renamed: made again (absent: the hashes as before)
        made["container_name"] = svc["container_name"]
    text = json.dumps(made, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def run_options(stack: dict[str, Any], service: str, number: int) -> dict[str, Any]:
    """The run options (``spec_from_user`` form) of one replica, with compose's labels."""
    svc = stack["services"][service]
    opts = dict(svc["options"])
    labels = dict(svc["labels"])
    labels.update({"com.docker.compose.project": stack["name"],
                   "com.docker.compose.service": service,
                   "com.docker.compose.container-number": str(number),
                   CONFIG_HASH_LABEL: config_hash(stack, service)})
    opts["labels"] = dict(sorted(labels.items()))
    return opts
