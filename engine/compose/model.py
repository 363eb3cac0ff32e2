"""A Compose file read into the normalised stack berth converges to.

Only the common subset is taken (see ``docs/operations.md``, "Compose"); every other
key is reported, one line each, rather than silently dropped: a stack that quietly
loses its ``cap_drop`` would run with more than its author asked for.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Callable
from typing import Any

from engine.errors import InvalidArgument
from engine.spec import RunSpec, parse_size

MAX_FILE_BYTES = 1024 * 1024
"""A Compose file is a few KiB; a bigger one is a mistake (or a YAML bomb's start)."""

CONDITIONS = ("service_started", "service_healthy", "service_completed_successfully")
_SERVICE_KEYS = frozenset({
    "image", "x-berth-rootfs", "command", "entrypoint", "environment", "env_file", "ports",
    "volumes", "labels", "depends_on", "deploy", "restart", "healthcheck", "networks",
    "working_dir", "user", "hostname", "stop_signal", "read_only", "container_name",
})
_TOP_KEYS = frozenset({"version", "name", "services", "volumes", "networks"})
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class Unsupported(InvalidArgument):
    """Keys of the file berth does not carry out, one line each."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def project_name(text: str) -> str:
    """docker compose's normalisation: lower case, only [a-z0-9_-], starting with a
    letter or digit (a directory ``My App`` is project ``myapp``)."""
    name = re.sub(r"[^a-z0-9_-]", "", text.lower()).lstrip("_-")
    if not name:
        raise InvalidArgument(f"project name {text!r} has no letter or digit: name one with -p")
    return name


def load(text: bytes, *, where: str) -> dict[str, Any]:
    """The file's YAML (safe loader: no tags building objects), size-capped."""
    import yaml  # only the compose commands need it

    if len(text) > MAX_FILE_BYTES:
        raise InvalidArgument(f"{where}: compose file is larger than {MAX_FILE_BYTES} bytes")
    if b"\0" in text:
        raise InvalidArgument(f"{where}: compose file holds a NUL byte")
    try:
        data = yaml.safe_load(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidArgument(f"{where}: compose file is not UTF-8") from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "syntax error"
        raise InvalidArgument(f"{where}: not valid YAML: {first}") from None
    if not isinstance(data, dict):
        raise InvalidArgument(f"{where}: a compose file is a mapping with 'services'")
    return data


def _spec_fields() -> frozenset[str]:
    """The run spec's options now (restart, health checks, networks arrive with other
    changes: asked at run time so they work as soon as the spec has them)."""
    return frozenset(f.name for f in dataclasses.fields(RunSpec))


def _duration(value: Any, what: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if isinstance(value, str) and value and _DURATION_RE.sub("", value) == "":
        return sum(float(n) * _UNITS[u] for n, u in _DURATION_RE.findall(value))
    raise InvalidArgument(f"{what}: invalid duration {value!r}: use e.g. 10s, 1m30s")


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
                                 "disable"})
    if extra:
        raise InvalidArgument(f"{what}: unsupported key {extra[0]!r}")
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
        if names[0] not in declared:
            raise InvalidArgument(f"{what}: {names[0]!r} is not declared under the "
                                  "top-level 'networks'")
        return {"network": f"{project}_{names[0]}"}
    return convert


SPEC_MAPPING: dict[str, tuple[tuple[str, ...], str]] = {
    # compose key: (the run spec options it needs, how it is converted)
    "restart": (("restart",), "_restart"),
    "healthcheck": (("health_cmd", "health_interval", "health_timeout",
                     "health_start_period", "health_retries"), "_health"),
    "networks": (("network",), "_networks"),
}
"""The compose keys carried by run spec options that other parts of the engine add
(restart policies, health checks, networks): each works once its options exist."""


def _strings(value: Any, what: str, *, split: bool = False) -> list[str]:
    if isinstance(value, str) and split:
        import shlex

        try:
            return shlex.split(value)
        except ValueError as exc:
            raise InvalidArgument(f"{what}: {exc}") from None
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) and
                                       not isinstance(v, bool) for v in value):
        return [str(v) for v in value]
    raise InvalidArgument(f"{what}: must be a list of strings" + (" or a string" if split else ""))


def _mapping(value: Any, what: str) -> dict[str, str]:
    """``environment``/``labels``: a map, or a list of KEY=VALUE."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or isinstance(v, (dict, list)):
                raise InvalidArgument(f"{what}: {k!r} must map to a plain value")
            out[k] = "" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
        return out
    if isinstance(value, list):
        pairs = {}
        for item in value:
            if not isinstance(item, str) or not item or item.startswith("="):
                raise InvalidArgument(f"{what}: {item!r} is not KEY=VALUE")
            key, _, val = item.partition("=")
            pairs[key] = val
        return pairs
    raise InvalidArgument(f"{what}: a mapping or a list of KEY=VALUE")


def _env_file(path: str, what: str) -> dict[str, str]:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise InvalidArgument(f"{what}: cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES or b"\0" in raw:
        raise InvalidArgument(f"{what}: {path} is too large or holds a NUL byte")
    out = {}
    for line in raw.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, val = line.partition("=")
            out[key.strip()] = val.strip()
    return out


def _depends(value: Any, what: str) -> dict[str, str]:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return dict.fromkeys(value, "service_started")
    if isinstance(value, dict):
        out = {}
        for dep, opts in value.items():
            cond = opts.get("condition", "service_started") if isinstance(opts, dict) else None
            if cond not in CONDITIONS:
                raise InvalidArgument(f"{what}.{dep}: condition must be one of "
                                      + ", ".join(CONDITIONS))
            out[str(dep)] = str(cond)
        return out
    raise InvalidArgument(f"{what}: a list of services or a mapping with conditions")


def _positive(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"{what}: must be a non-negative integer")
    return value


def _deploy(value: Any, what: str, problems: list[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what}: must be a mapping")
    out: dict[str, Any] = {"replicas": 1}
    for key, item in value.items():
        if key == "replicas":
            out["replicas"] = _positive(item, f"{what}.replicas")
        elif key == "resources" and isinstance(item, dict):
            for rkey, ritem in item.items():
                if rkey != "limits" or not isinstance(ritem, dict):
                    problems.append(f"{what}.resources.{rkey}: not supported")
                    continue
                for lkey, lval in ritem.items():
                    if lkey == "memory":
                        out["memory"] = parse_size(str(lval))
                    elif lkey == "pids":
                        out["pids_limit"] = _positive(lval, f"{what}.resources.limits.pids")
                    else:
                        problems.append(f"{what}.resources.limits.{lkey}: not supported")
        else:
            problems.append(f"{what}.{key}: not supported")
    return out


def normalise(data: dict[str, Any], *, project: str, base_dir: str) -> dict[str, Any]:
    """The file's stack as plain data (what ``compose config`` prints and
    ``stack.applied`` records); raises Unsupported naming every key berth would drop."""
    problems: list[str] = []
    project = project_name(str(data.get("name") or project))
    for key in sorted(set(data) - _TOP_KEYS):
        if not str(key).startswith("x-"):
            problems.append(f"{key}: top-level key not supported")
    services = data.get("services")
    if not isinstance(services, dict) or not services:
        raise InvalidArgument("compose file: 'services' must be a non-empty mapping")
    volumes_top = data.get("volumes") or {}
    if not isinstance(volumes_top, dict):
        raise InvalidArgument("compose file: top-level 'volumes' must be a mapping")
    for vname, vdef in volumes_top.items():
        if not isinstance(vname, str) or not _NAME_RE.fullmatch(vname):
            raise InvalidArgument(f"volumes: invalid volume name {vname!r}")
        if vdef not in (None, {}):
            problems.append(f"volumes.{vname}: options are not supported")
    networks_top = data.get("networks") or {}
    if not isinstance(networks_top, dict):
        raise InvalidArgument("compose file: top-level 'networks' must be a mapping")
    subnets: dict[str, str] = {}
    for nname, ndef in networks_top.items():
        if not isinstance(nname, str) or not _NAME_RE.fullmatch(nname):
            raise InvalidArgument(f"networks: invalid network name {nname!r}")
        subnets[nname] = _subnet(ndef, f"networks.{nname}", problems)
    have = _spec_fields()
    out_services: dict[str, Any] = {}
    for name, svc in services.items():
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise InvalidArgument(f"services: invalid service name {name!r}")
        what = f"services.{name}"
        if not isinstance(svc, dict):
            raise InvalidArgument(f"{what}: must be a mapping")
        for key in sorted(set(svc) - _SERVICE_KEYS):
            if not str(key).startswith("x-"):
                problems.append(f"{what}.{key}: not supported")
        out_services[name] = _service(svc, what, project, base_dir, set(volumes_top),
                                      set(networks_top), have, problems)
    for name, svc in out_services.items():
        for dep, cond in svc["depends_on"].items():
            if dep not in out_services:
                raise InvalidArgument(f"services.{name}.depends_on: no service {dep!r}")
            if cond == "service_healthy" and "health_cmd" not in out_services[dep]["options"]:
                raise InvalidArgument(f"services.{name}.depends_on.{dep}: service_healthy "
                                      f"needs a healthcheck on {dep}")
    if problems:
        raise Unsupported(problems)
    stack = {"name": project, "services": out_services, "volumes": sorted(volumes_top),
             "networks": dict(sorted(subnets.items()))}
    order(stack)  # refuses a dependency cycle
    return stack


def _subnet(value: Any, what: str, problems: list[str]) -> str:
    """A network's ``ipam.config[0].subnet`` ('' for one the engine picks); any other
    option is reported."""
    if value in (None, {}):
        return ""
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what}: must be a mapping")
    for key in sorted(set(value) - {"ipam"}):
        problems.append(f"{what}.{key}: not supported")
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
             problems: list[str]) -> dict[str, Any]:
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
            env.update(_env_file(os.path.join(base_dir, path), f"{what}.env_file"))
    if "environment" in svc:
        env.update(_mapping(svc["environment"], f"{what}.environment"))
    opts["env"] = [f"{k}={v}" for k, v in env.items()]
    if "ports" in svc:
        opts["ports"] = _strings(svc["ports"], f"{what}.ports")
    if "volumes" in svc:
        mounts = []
        for item in _strings(svc["volumes"], f"{what}.volumes"):
            source, sep, rest = item.partition(":")
            if not sep:
                raise InvalidArgument(f"{what}.volumes: {item!r}: use SOURCE:TARGET[:ro]")
            if source.startswith(("/", "./", "../", "~")):
                source = os.path.normpath(os.path.join(base_dir, os.path.expanduser(source)))
            elif source in volumes:
                source = f"{project}_{source}"
            else:
                raise InvalidArgument(f"{what}.volumes: {source!r} is not declared under "
                                      "the top-level 'volumes'")
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
    if "container_name" in svc:
        problems.append(f"{what}.container_name: not supported (names are "
                        "PROJECT-SERVICE-N)")
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


def order(stack: dict[str, Any]) -> list[str]:
    """Services with every dependency before its dependants (ties by name)."""
    services: dict[str, Any] = stack["services"]
    done: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        if name in visiting:
            raise InvalidArgument(f"services: dependency cycle through {name!r}")
        visiting.add(name)
        for dep in sorted(services[name]["depends_on"]):
            visit(dep)
        visiting.discard(name)
        done.append(name)

    for name in sorted(services):
        visit(name)
    return done


def digest(stack: dict[str, Any]) -> str:
    """The stack's identity: sha256 of its canonical JSON."""
    text = json.dumps(stack, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def container_name(project: str, service: str, number: int) -> str:
    return f"{project}-{service}-{number}"


CONFIG_HASH_LABEL = "com.docker.compose.config-hash"
"""The label holding the service's ``config_hash`` on each of its containers, as docker
compose names it: a replica whose label differs from the file's service is recreated."""


def config_hash(stack: dict[str, Any], service: str) -> str:
    """What a replica is made from: the service's run options and labels (sha256 of
    their canonical JSON). ``deploy.replicas`` and ``depends_on`` are left out, as docker
    compose leaves them out: scaling or reordering does not recreate a replica."""
    svc = stack["services"][service]
    text = json.dumps({"options": svc["options"], "labels": svc["labels"]}, sort_keys=True,
                      separators=(",", ":"))
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
