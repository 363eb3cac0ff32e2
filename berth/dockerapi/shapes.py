"""Docker's request and response shapes, translated to and from berth's: pure
functions, no I/O, so each rule is unit-tested on its own.

The create body is read strictly: every field berth maps is type-checked; a field
berth does not implement is accepted only while it is empty (None, "", 0, false,
[] or {}), because docker-py and the docker CLI send most fields with their zero
values. A non-empty one would change what the container does, so it is refused
with one sentence rather than silently ignored.
"""

from __future__ import annotations

import io
import re
import secrets
import tarfile
from datetime import UTC, datetime
from typing import Any, Final

from berth.dockerapi.server import HttpError
from engine.networks.names import DEFAULT_NAME as DEFAULT_NETWORK

MAX_STRING: Final = 64 * 1024
MAX_ITEMS: Final = 4096

CONFIG_FIELDS: Final = frozenset({
    "Image", "Cmd", "Entrypoint", "Env", "WorkingDir", "User", "Labels", "Tty",
    "OpenStdin", "ExposedPorts", "StopSignal", "Hostname", "Healthcheck", "Volumes"})
CONFIG_IGNORED: Final = frozenset({
    # how a client attaches, not what the container is: berth's attach reads them
    # from the request instead
    "AttachStdin", "AttachStdout", "AttachStderr", "StdinOnce", "NetworkingConfig",
    "HostConfig", "Domainname", "ArgsEscaped"})
HOST_FIELDS: Final = frozenset({
    "Binds", "PortBindings", "PublishAllPorts", "NetworkMode", "RestartPolicy",
    "AutoRemove", "Memory", "NanoCpus", "CapAdd", "CapDrop", "Init", "PidsLimit",
    "ReadonlyRootfs", "Tmpfs", "Mounts", "SecurityOpt", "Ulimits", "LogConfig"})
HOST_IGNORED: Final = frozenset({
    # the terminal's size when the container starts: berth sizes it on attach (resize)
    "ConsoleSize"})
_DEFAULT_NETWORKS: Final = ("", "default", "bridge")
_NAME_RE: Final = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
ANONYMOUS_RE: Final = re.compile(r"^[0-9a-f]{64}$")
"""An anonymous volume's name: 64 hex digits, as Docker names them, so ``rm -v`` (and
``docker volume ls``) tell them from the volumes a user named."""


# --------------------------------------------------------------------------- checks


def _where(path: str) -> str:
    return f"invalid {path}"


def text(value: object, path: str, *, allow_empty: bool = True) -> str:
    if not isinstance(value, str):
        raise HttpError(400, f"{_where(path)}: expected a string, got {_kind(value)}")
    if "\x00" in value:
        raise HttpError(400, f"{_where(path)}: contains a NUL character")
    if len(value) > MAX_STRING:
        raise HttpError(400, f"{_where(path)}: longer than {MAX_STRING} characters")
    if not allow_empty and not value:
        raise HttpError(400, f"{_where(path)}: must not be empty")
    return value


def strings(value: object, path: str) -> list[str]:
    if not isinstance(value, list):
        raise HttpError(400, f"{_where(path)}: expected a list of strings, got {_kind(value)}")
    if len(value) > MAX_ITEMS:
        raise HttpError(400, f"{_where(path)}: more than {MAX_ITEMS} items")
    return [text(v, f"{path}[{i}]") for i, v in enumerate(value)]


def str_or_strings(value: object, path: str) -> list[str]:
    """Docker's StrSlice: one string is a list of one."""
    if isinstance(value, str):
        return [text(value, path)]
    return strings(value, path)


def mapping(value: object, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise HttpError(400, f"{_where(path)}: expected an object, got {_kind(value)}")
    if len(value) > MAX_ITEMS:
        raise HttpError(400, f"{_where(path)}: more than {MAX_ITEMS} entries")
    for key in value:
        text(key, f"{path} key")
    return value


def boolean(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise HttpError(400, f"{_where(path)}: expected true or false, got {_kind(value)}")
    return value


def integer(value: object, path: str, *, low: int = 0, high: int = 2 ** 63 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise HttpError(400, f"{_where(path)}: expected an integer, got {_kind(value)}")
    if not low <= value <= high:
        raise HttpError(400, f"{_where(path)}: {value} is out of range {low}..{high}")
    return value


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "null"}.get(
        type(value), type(value).__name__)


def empty(value: object) -> bool:
    return value is None or value is False or value == 0 or value in ("", [], {})


UNSET: Final = {"MemorySwappiness": -1, "MemorySwap": -1}
"""Fields whose "not set" is not a zero value (the docker CLI sends these)."""


def _refuse_unknown(body: dict[str, Any], known: frozenset[str], where: str) -> None:
    for key, value in body.items():
        if key not in known and not empty(value) and not (
                key in UNSET and value == UNSET[key] and not isinstance(value, bool)):
            raise HttpError(400, f"{where}{key} is not supported by berth "
                                 f"(it would change the container; leave it out)")


# --------------------------------------------------------------------------- create


def container_name(raw: str | None) -> str | None:
    """The ``name`` query parameter: Docker's rule, one leading slash allowed."""
    if raw is None or raw == "":
        return None
    if not _NAME_RE.match(raw) or len(raw) > 253:
        raise HttpError(400, f"Invalid container name ({raw}), only [a-zA-Z0-9][a-zA-Z0-9_.-] "
                             "are allowed")
    return raw.lstrip("/")


def create_spec(body: object) -> dict[str, Any]:
    """A container create body -> berth's run options (as bus.client.Client.create
    takes them). Raises HttpError(400) naming the first bad field."""
    config = mapping(body if body is not None else {}, "body")
    _refuse_unknown(config, CONFIG_FIELDS | CONFIG_IGNORED, "Config.")
    image = text(config.get("Image"), "Config.Image", allow_empty=False) \
        if config.get("Image") is not None else None
    if image is None:
        raise HttpError(400, "Config.Image is required")
    spec: dict[str, Any] = {"rootfs": "", "image": image}
    if config.get("Cmd") is not None:
        spec["args"] = str_or_strings(config["Cmd"], "Config.Cmd")
    if config.get("Entrypoint") is not None:
        entry = str_or_strings(config["Entrypoint"], "Config.Entrypoint")
        spec["entrypoint"] = [] if entry == [""] else entry
    if config.get("Env") is not None:
        env = strings(config["Env"], "Config.Env")
        for item in env:
            if "=" not in item or item.startswith("="):
                raise HttpError(400, f"invalid Config.Env entry {item!r}: use KEY=VALUE")
        spec["env"] = env
    if config.get("WorkingDir"):
        spec["cwd"] = text(config["WorkingDir"], "Config.WorkingDir")
    if config.get("User"):
        spec["user"] = text(config["User"], "Config.User")
    if config.get("Hostname"):
        spec["hostname"] = text(config["Hostname"], "Config.Hostname")
    if config.get("Labels") is not None:
        labels = mapping(config["Labels"], "Config.Labels")
        spec["labels"] = {k: text(v, f"Config.Labels[{k}]") for k, v in labels.items()}
    if config.get("Tty") is not None:
        spec["terminal"] = boolean(config["Tty"], "Config.Tty")
    if config.get("OpenStdin") is not None:
        spec["stdin"] = boolean(config["OpenStdin"], "Config.OpenStdin")
    if config.get("ExposedPorts") is not None:
        spec["expose"] = sorted(mapping(config["ExposedPorts"], "Config.ExposedPorts"))
    if config.get("StopSignal"):
        spec["stop_signal"] = text(config["StopSignal"], "Config.StopSignal")
    if config.get("Healthcheck") is not None:
        spec.update(healthcheck(mapping(config["Healthcheck"], "Config.Healthcheck")))
    host = config.get("HostConfig")
    if host is not None:
        spec.update(host_spec(mapping(host, "HostConfig")))
    if config.get("Volumes") is not None:
        spec["mount"] = list(spec.get("mount") or []) + anonymous_volumes(
            mapping(config["Volumes"], "Config.Volumes"), spec)
    networking = config.get("NetworkingConfig")
    if networking is not None:
        _networking(mapping(networking, "NetworkingConfig"), spec)
    return spec


def anonymous_volumes(volumes: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    """``Config.Volumes`` (``-v /data``): each path not already given a bind, volume or
    tmpfs gets a volume of its own, named as Docker names anonymous ones (64 hex
    digits; berth creates a named volume on first use)."""
    taken = {m.split(":")[1] for m in spec.get("volumes") or [] if ":" in m}
    taken |= {p.partition(":")[0] for p in spec.get("tmpfs") or []}
    taken |= {part[len("target="):] for m in spec.get("mount") or []
              for part in m.split(",") if part.startswith("target=")}
    out = []
    for path, options in volumes.items():
        if not path.startswith("/") or "," in path or "\0" in path:
            raise HttpError(400, f"invalid Config.Volumes path {path!r}: an absolute path "
                                 "without commas")
        if not empty(options):
            raise HttpError(400, f"Config.Volumes[{path}] takes no options ({{}})")
        if path.rstrip("/") not in {t.rstrip("/") for t in taken}:
            out.append(f"type=volume,source={secrets.token_hex(32)},target={path}")
    return out


def healthcheck(check: dict[str, Any]) -> dict[str, Any]:
    """Docker's Healthcheck (Test, and durations in nanoseconds) -> berth's options."""
    where = "Config.Healthcheck"
    _refuse_unknown(check, frozenset({"Test", "Interval", "Timeout", "Retries",
                                      "StartPeriod"}), f"{where}.")
    out: dict[str, Any] = {}
    test = strings(check.get("Test") or [], f"{where}.Test")
    if test and test[0] == "NONE":
        return {"no_healthcheck": True}
    if test and test[0] == "CMD" and len(test) > 1:
        out["health_cmd"] = test[1:]
    elif test and test[0] == "CMD-SHELL" and len(test) == 2:
        out["health_cmd"] = ["/bin/sh", "-c", test[1]]
    elif test:
        raise HttpError(400, f"invalid {where}.Test {test!r}: [\"CMD\", ARG...], "
                             "[\"CMD-SHELL\", COMMAND] or [\"NONE\"]")
    for key, name in (("Interval", "health_interval"), ("Timeout", "health_timeout"),
                      ("StartPeriod", "health_start_period")):
        if check.get(key):
            out[name] = integer(check[key], f"{where}.{key}", low=1_000_000) / 1e9
    if check.get("Retries"):
        out["health_retries"] = integer(check["Retries"], f"{where}.Retries", low=1)
    return out


def host_spec(host: dict[str, Any]) -> dict[str, Any]:
    _refuse_unknown(host, HOST_FIELDS | HOST_IGNORED, "HostConfig.")
    spec: dict[str, Any] = {}
    if host.get("Binds") is not None:
        spec["volumes"] = strings(host["Binds"], "HostConfig.Binds")
    if host.get("PortBindings") is not None:
        spec["ports"] = port_bindings(mapping(host["PortBindings"], "HostConfig.PortBindings"))
    if host.get("PublishAllPorts") is not None:
        spec["publish_all"] = boolean(host["PublishAllPorts"], "HostConfig.PublishAllPorts")
    if host.get("NetworkMode") is not None:
        mode = text(host["NetworkMode"], "HostConfig.NetworkMode")
        if mode.startswith("container:"):
            raise HttpError(400, "HostConfig.NetworkMode container:NAME is not supported "
                                 "by berth")
        spec["network"] = "" if mode in _DEFAULT_NETWORKS else mode
    if host.get("RestartPolicy") is not None:
        spec["restart"] = restart_policy(mapping(host["RestartPolicy"],
                                                 "HostConfig.RestartPolicy"))
    if host.get("AutoRemove") is not None:
        spec["auto_remove"] = boolean(host["AutoRemove"], "HostConfig.AutoRemove")
    if host.get("Memory"):
        spec["memory"] = integer(host["Memory"], "HostConfig.Memory", low=1)
    if host.get("NanoCpus"):
        nano = integer(host["NanoCpus"], "HostConfig.NanoCpus", low=1)
        spec["cpus"] = nano / 1e9
    if host.get("PidsLimit") is not None:
        limit = integer(host["PidsLimit"], "HostConfig.PidsLimit", low=-1)
        if limit > 0:
            spec["pids_limit"] = limit
    if host.get("CapAdd") is not None:
        spec["cap_add"] = strings(host["CapAdd"], "HostConfig.CapAdd")
    if host.get("CapDrop") is not None:
        spec["cap_drop"] = strings(host["CapDrop"], "HostConfig.CapDrop")
    if host.get("Init") is not None:
        spec["init"] = boolean(host["Init"], "HostConfig.Init")
    if host.get("ReadonlyRootfs") is not None:
        spec["read_only"] = boolean(host["ReadonlyRootfs"], "HostConfig.ReadonlyRootfs")
    if host.get("Tmpfs") is not None:
        tmpfs = mapping(host["Tmpfs"], "HostConfig.Tmpfs")
        spec["tmpfs"] = [f"{path}:{text(opts, f'HostConfig.Tmpfs[{path}]')}" if opts
                         else path for path, opts in tmpfs.items()]
    if host.get("Mounts") is not None:
        spec["mount"] = [_mount(m, i) for i, m in enumerate(
            _items(host["Mounts"], "HostConfig.Mounts"))]
    if host.get("SecurityOpt") is not None:
        for opt in strings(host["SecurityOpt"], "HostConfig.SecurityOpt"):
            if opt not in ("seccomp=unconfined", "seccomp:unconfined"):
                raise HttpError(400, f"HostConfig.SecurityOpt {opt!r} is not supported by "
                                     "berth: it knows seccomp=unconfined")
            spec["seccomp"] = "unconfined"
    if host.get("Ulimits") is not None:
        spec["ulimits"] = [_ulimit(u, i) for i, u in enumerate(
            _items(host["Ulimits"], "HostConfig.Ulimits"))]
    if host.get("LogConfig") is not None:
        log_config = mapping(host["LogConfig"], "HostConfig.LogConfig")
        kind = log_config.get("Type") or ""
        options = mapping(log_config.get("Config") or {}, "HostConfig.LogConfig.Config")
        if kind not in ("", "json-file", "k8s-file", "none", "journald", "syslog", "local",
                        "fluentd", "gelf", "awslogs", "splunk", "etwlogs", "gcplogs",
                        "logentries"):
            # Docker's own sentence for a driver nobody has (clients match it)
            raise HttpError(400, f"logger: no log driver named {kind!r} is registered")
        if kind not in ("", "json-file", "k8s-file") or set(options) - {"max-size"}:
            raise HttpError(400, f"HostConfig.LogConfig {kind!r} {sorted(options)} is not "
                                 "supported by berth: it keeps each container's log in a "
                                 "file (json-file), with max-size")
        if options.get("max-size"):
            from engine.containers.spec import parse_log_size
            from engine.errors import InvalidArgument

            try:
                spec["log_size_max"] = parse_log_size(
                    text(options["max-size"], "HostConfig.LogConfig.Config.max-size"))
            except InvalidArgument as e:
                raise HttpError(400, str(e)) from None
    return spec


def _items(value: object, path: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or len(value) > MAX_ITEMS:
        raise HttpError(400, f"{_where(path)}: expected a list of objects")
    return [mapping(v, f"{path}[{i}]") for i, v in enumerate(value)]


def _mount(m: dict[str, Any], i: int) -> str:
    path = f"HostConfig.Mounts[{i}]"
    _refuse_unknown(m, frozenset({"Type", "Source", "Target", "ReadOnly", "Consistency",
                                  "TmpfsOptions", "VolumeOptions", "BindOptions"}),
                    f"{path}.")
    kind = text(m.get("Type", "volume"), f"{path}.Type")
    if kind not in ("bind", "volume", "tmpfs"):
        raise HttpError(400, f"{path}.Type {kind!r} is not supported: bind, volume or tmpfs")
    parts = [f"type={kind}", f"target={text(m.get('Target'), f'{path}.Target', allow_empty=False)}"]
    if m.get("Source"):
        parts.append(f"source={text(m['Source'], f'{path}.Source')}")
    if m.get("ReadOnly") is not None and boolean(m["ReadOnly"], f"{path}.ReadOnly"):
        parts.append("readonly")
    for key in ("TmpfsOptions", "VolumeOptions", "BindOptions"):
        options = m.get(key)
        if isinstance(options, dict) and all(empty(v) for v in options.values()):
            continue  # docker-py sends each option with its zero value
        if not empty(options):
            raise HttpError(400, f"{path}.{key} is not supported by berth")
    for part in parts:
        if "," in part.partition("=")[2]:
            raise HttpError(400, f"invalid {path}: a comma in a path is not supported")
    return ",".join(parts)


def _ulimit(u: dict[str, Any], i: int) -> str:
    path = f"HostConfig.Ulimits[{i}]"
    name = text(u.get("Name"), f"{path}.Name", allow_empty=False)
    soft = integer(u.get("Soft"), f"{path}.Soft", low=-1)
    hard = integer(u.get("Hard", soft), f"{path}.Hard", low=-1)
    return f"{name}={soft}:{hard}"


def port_bindings(bindings: dict[str, Any]) -> list[list[Any]]:
    """``{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}`` -> berth's
    ``[host_ip, host_port, container_port, protocol]`` (port 0: a free one)."""
    out: list[list[Any]] = []
    for key, targets in bindings.items():
        number, _, proto = key.partition("/")
        proto = proto or "tcp"
        if not number.isdigit() or not 1 <= int(number) <= 65535 or proto not in ("tcp", "udp"):
            raise HttpError(400, f"invalid HostConfig.PortBindings key {key!r}: use PORT/tcp "
                                 "or PORT/udp")
        if targets is None:
            targets = [{}]
        for j, target in enumerate(_items(targets, f"HostConfig.PortBindings[{key}]")):
            where = f"HostConfig.PortBindings[{key}][{j}]"
            host_ip = text(target.get("HostIp") or "", f"{where}.HostIp")
            raw = target.get("HostPort") or "0"
            port_text = str(raw) if isinstance(raw, int) and not isinstance(raw, bool) \
                else text(raw, f"{where}.HostPort")
            if not port_text.isdigit() or int(port_text) > 65535:
                raise HttpError(400, f"invalid {where}.HostPort {raw!r}: a port number")
            out.append([host_ip, int(port_text), int(number), proto])
    return out


def restart_policy(policy: dict[str, Any]) -> str:
    name = text(policy.get("Name") or "no", "HostConfig.RestartPolicy.Name")
    count = policy.get("MaximumRetryCount") or 0
    count = integer(count, "HostConfig.RestartPolicy.MaximumRetryCount")
    if name not in ("no", "always", "unless-stopped", "on-failure"):
        raise HttpError(400, f"invalid restart policy {name!r}: no, always, unless-stopped "
                             "or on-failure")
    if count and name != "on-failure":
        raise HttpError(400, f"invalid restart policy: maximum retry count cannot be used "
                             f"with restart policy {name!r}")
    return f"{name}:{count}" if count else name


def _networking(networking: dict[str, Any], spec: dict[str, Any]) -> None:
    endpoints = networking.get("EndpointsConfig")
    if endpoints is None:
        return
    endpoints = mapping(endpoints, "NetworkingConfig.EndpointsConfig")
    if len(endpoints) > 1:
        raise HttpError(400, "NetworkingConfig: berth connects a container to one network "
                             "at create")
    for name, config in endpoints.items():
        config = mapping(config or {}, f"NetworkingConfig.EndpointsConfig[{name}]")
        _refuse_unknown(config, frozenset({"NetworkID", "EndpointID", "Gateway",
                                           "IPAddress", "IPPrefixLen", "MacAddress",
                                           "Aliases"}),
                        f"NetworkingConfig.EndpointsConfig[{name}].")
        if spec.get("network") not in (None, "", name):
            raise HttpError(400, f"NetworkingConfig names {name!r} but HostConfig.NetworkMode "
                                 f"is {spec['network']!r}")
        spec["network"] = "" if name in _DEFAULT_NETWORKS else name
        if config.get("Aliases") is not None:
            aliases = strings(config["Aliases"], f"NetworkingConfig.EndpointsConfig[{name}]"
                                                 ".Aliases")
            if aliases:  # berth's --network-alias (the engine checks the names)
                spec["network_aliases"] = aliases


# --------------------------------------------------------------------------- answers


def docker_time(value: object) -> str:
    """berth's ISO time -> Docker's RFC 3339 (the zero time when there is none)."""
    if not isinstance(value, str) or not value:
        return "0001-01-01T00:00:00Z"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def unix_time(value: object) -> int:
    if not isinstance(value, str) or not value:
        return 0
    try:
        return int(datetime.fromisoformat(value).timestamp())
    except ValueError:
        return 0


def docker_status(state: str) -> str:
    """berth's states are Docker's but for ``removed`` (gone: ``removing``)."""
    return "removing" if state == "removed" else state


def _ports(spec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, list[dict[str, str]]] = {}
    for port in spec.get("ports") or []:
        host_ip, host_port, container_port, proto = port
        out.setdefault(f"{container_port}/{proto}", []).append(
            {"HostIp": host_ip or "0.0.0.0", "HostPort": str(host_port)})
    return out


def _restart(policy: str) -> dict[str, Any]:
    name, _, count = (policy or "no").partition(":")
    return {"Name": "" if name == "no" else name,
            "MaximumRetryCount": int(count) if count.isdigit() else 0}


def _network_mode(spec: dict[str, Any]) -> str:
    network = spec.get("network") or ""
    return network or "bridge"


def status_text(info: dict[str, Any], now: datetime) -> str:
    """``ps``'s Status column as Docker words it."""
    state = info.get("state")
    if state in ("running", "paused"):
        since = info.get("started_at")
        text_ = f"Up {_ago(since, now)}"
        return text_ + " (Paused)" if state == "paused" else text_
    if state == "exited":
        return f"Exited ({info.get('exit_code')}) {_ago(info.get('finished_at'), now)} ago"
    if state == "created":
        return "Created"
    return "Removal In Progress"


def _ago(value: object, now: datetime) -> str:
    if not isinstance(value, str):
        return "Less than a second"
    seconds = max(0.0, (now - datetime.fromisoformat(value)).total_seconds())
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= 2 * size:
            return f"{int(seconds // size)} {unit}"
    if seconds >= 60:
        return "About a minute"
    return f"{int(seconds)} seconds" if seconds >= 1 else "Less than a second"


def _health_state(info: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """State.Health, present only for a container with a health check (as Docker's)."""
    if not spec.get("health_cmd") or spec.get("no_healthcheck"):
        return {}
    details = info.get("health_log") or {}
    log = [{"Start": docker_time(p.get("started_at")), "End": docker_time(p.get("ended_at")),
            "ExitCode": p.get("exit_code"), "Output": p.get("output", "")}
           for p in details.get("log") or [] if isinstance(p, dict)]
    return {"Health": {"Status": info.get("health") or "starting",
                       "FailingStreak": details.get("failing_streak") or 0, "Log": log}}


def _health_config(spec: dict[str, Any]) -> dict[str, Any] | None:
    if spec.get("no_healthcheck"):
        return {"Test": ["NONE"]}
    command = list(spec.get("health_cmd") or [])
    if not command:
        return None
    # berth keeps CMD-SHELL's command as sh -c: shown as it was given
    shell = len(command) == 3 and command[:2] == ["/bin/sh", "-c"]
    return {"Test": ["CMD-SHELL", command[2]] if shell else ["CMD", *command],
            "Interval": int((spec.get("health_interval") or 0) * 1e9),
            "Timeout": int((spec.get("health_timeout") or 0) * 1e9),
            "StartPeriod": int((spec.get("health_start_period") or 0) * 1e9),
            "Retries": spec.get("health_retries") or 0}


def _signal_name(number: object) -> str:
    import signal

    try:
        return signal.Signals(int(str(number))).name
    except ValueError:
        return str(number)


def container_summary(info: dict[str, Any], now: datetime) -> dict[str, Any]:
    """berth's ``ps`` entry (bus results) -> one entry of ``GET /containers/json``."""
    command = info.get("command") or []
    image = info.get("image") or info.get("rootfs") or ""
    ports = [{"IP": p[0] or "0.0.0.0", "PrivatePort": p[2], "PublicPort": p[1], "Type": p[3]}
             for p in info.get("ports") or []]
    return {
        "Id": info["id"], "Names": [f"/{info['name']}"],
        "Image": familiar(info.get("image") or "") or image,
        "ImageID": info.get("image_id") or "", "Command": " ".join(command),
        "Created": unix_time(info.get("created_at")), "Ports": ports,
        "Labels": dict(info.get("labels") or {}), "State": docker_status(info["state"]),
        "Status": status_text(info, now),
        "HostConfig": {"NetworkMode": _network_mode(info)},
        "NetworkSettings": {"Networks": {}}, "Mounts": [],
    }


def familiar(reference: str) -> str:
    """A reference as Docker shows one its user typed: Docker Hub's host and
    ``library/`` left out, and the default ``:latest`` (berth keeps the full
    reference; ``docker.io/library/alpine:latest`` was given as ``alpine``)."""
    for prefix in ("docker.io/library/", "docker.io/"):
        if reference.startswith(prefix):
            reference = reference[len(prefix):]
            break
    if "@" not in reference and reference.endswith(":latest"):
        reference = reference[:-len(":latest")]
    return reference


def network_settings(spec: dict[str, Any], address: dict[str, Any] | None,
                     ports: dict[str, Any]) -> dict[str, Any]:
    """``NetworkSettings``: the container's network (berth attaches a container to
    one) with the address it holds now (none while it is not running, as in Docker);
    the top-level address fields are the default network's, as Docker's are."""
    # "" is the worker's default network (BERTH_DEFAULT_NETWORK may make it none):
    # named only when the container holds an address on it
    name = spec.get("network") or (address or {}).get("network") or ""
    networks: dict[str, Any] = {}
    if name not in ("", "none", "host"):
        at = address if address and address.get("network") == name else {}
        networks[name] = {
            "IPAMConfig": None, "Links": None, "Aliases": list(at.get("aliases") or []) or None,
            "NetworkID": name, "EndpointID": "", "Gateway": at.get("gateway") or "",
            "IPAddress": at.get("ip") or "", "IPPrefixLen": at.get("prefix") or 0,
            "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
            "MacAddress": "", "DriverOpts": None}
    default = networks.get(DEFAULT_NETWORK) or {}
    return {"Ports": ports, "Networks": networks, "IPAddress": default.get("IPAddress", ""),
            "IPPrefixLen": default.get("IPPrefixLen", 0),
            "Gateway": default.get("Gateway", ""), "MacAddress": ""}


def mounts(spec: dict[str, Any], volume_paths: dict[str, str]) -> list[dict[str, Any]]:
    """The spec's mounts in Docker's ``Mounts`` shape; ``volume_paths`` maps a
    volume's name to its directory on the host (Docker's ``Source``)."""
    out = []
    for m in spec.get("mounts") or []:
        kind, source, rw = m.get("type"), m.get("source") or "", not m.get("readonly")
        entry: dict[str, Any] = {"Type": kind, "Source": source,
                                 "Destination": m.get("target"), "Mode": "" if rw else "ro",
                                 "RW": rw, "Propagation": ""}
        if kind == "bind":
            entry["Propagation"] = "rprivate"
        elif kind == "volume":
            entry.update(Name=source, Source=volume_paths.get(source, ""), Driver="local")
        out.append(entry)
    return out


def container_inspect(info: dict[str, Any],
                      volume_paths: dict[str, str] | None = None) -> dict[str, Any]:
    """berth's ``inspect`` detail -> Docker's ``GET /containers/{id}/json``."""
    spec = info.get("spec") or {}
    argv = list(info.get("command") or [])
    state = info.get("state", "")
    entrypoint = spec.get("entrypoint")
    labels = spec.get("labels") or []
    labels = dict(labels) if isinstance(labels, list) else dict(labels or {})
    ports = _ports(spec)
    exposed: dict[str, dict[str, Any]] = {
        p if "/" in p else f"{p}/tcp": {} for p in spec.get("expose") or []}
    exposed.update({k: {} for k in ports})
    running = state in ("running", "paused")
    return {
        "Id": info["id"],
        "Created": docker_time(info.get("created_at")),
        "Path": argv[0] if argv else "",
        "Args": argv[1:],
        "State": {
            "Status": docker_status(state), "Running": running,
            "Paused": state == "paused", "Restarting": False, "OOMKilled": False,
            "Dead": False, "Pid": (info.get("pid") or 0) if running else 0,
            "ExitCode": info.get("exit_code") or 0, "Error": "",
            "StartedAt": docker_time(info.get("started_at")),
            "FinishedAt": docker_time(info.get("finished_at")),
            **_health_state(info, spec),
        },
        "Image": spec.get("image_id") or "",
        "Name": f"/{info.get('name', '')}",
        "RestartCount": info.get("restart_count") or 0,
        "Driver": "overlay", "Platform": "linux",
        "MountLabel": "", "ProcessLabel": "", "AppArmorProfile": "",
        "HostConfig": {
            "NetworkMode": _network_mode(spec),
            "PortBindings": ports,
            "PublishAllPorts": bool(spec.get("publish_all")),
            "RestartPolicy": _restart(spec.get("restart") or "no"),
            "AutoRemove": bool(spec.get("auto_remove")),
            "Memory": spec.get("memory") or 0,
            "NanoCpus": int(round((spec.get("cpus") or 0) * 1e9)),
            "PidsLimit": spec.get("pids_limit"),
            "CapAdd": list(spec.get("cap_add") or []) or None,
            "CapDrop": list(spec.get("cap_drop") or []) or None,
            "Init": bool(spec.get("init")),
            "ReadonlyRootfs": bool(spec.get("read_only")),
            "LogConfig": {"Type": "json-file", "Config": {}},
        },
        "Config": {
            "Hostname": spec.get("hostname") or info["id"][:12],
            "User": spec.get("user") or "",
            "Env": list(spec.get("env") or []),
            "Cmd": list(spec.get("args") or []),
            "Entrypoint": list(entrypoint) if entrypoint else None,
            "Image": familiar(spec.get("image") or "") or spec.get("rootfs") or "",
            "WorkingDir": spec.get("cwd") or "",
            "Labels": labels,
            "Tty": bool(spec.get("terminal")),
            "OpenStdin": bool(spec.get("stdin")),
            "AttachStdin": False, "AttachStdout": False, "AttachStderr": False,
            "StdinOnce": False,
            "ExposedPorts": exposed or None,
            "StopSignal": _signal_name(spec.get("stop_signal") or 15),
            "Healthcheck": _health_config(spec),
        },
        "NetworkSettings": network_settings(spec, info.get("network_address"), ports),
        "Mounts": mounts(spec, volume_paths or {}),
        # berth's own view, under its own names (history, node, exit reason)
        "Berth": {"node": info.get("node"), "exit_reason": info.get("exit_reason"),
                  "version": info.get("version"), "last_position": info.get("last_position")},
    }


# --------------------------------------------------------------------------- archives


def path_stat(data: bytes, path: str) -> dict[str, Any]:
    """``X-Docker-Container-Path-Stat`` of the copy ``data`` (berth's tar of one file
    or directory) of ``path``: its first entry's name, size, mode (Go's FileMode, as
    Docker's clients decode it: the type in the high bits), time and link."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        first = archive.next()
    if first is None:
        raise HttpError(404, f"Could not find the file {path} in container")
    mode = first.mode & 0o7777
    if first.isdir():
        mode |= 1 << 31
    elif first.issym():
        mode |= 1 << 27
    name = path.rstrip("/").rpartition("/")[2] or "/"
    return {"name": name, "size": first.size, "mode": mode,
            "mtime": datetime.fromtimestamp(first.mtime, UTC).isoformat().replace("+00:00", "Z"),
            "linkTarget": first.linkname if first.issym() else ""}


def split_archive(data: bytes) -> list[bytes]:
    """A tar of several top-level entries (what ``PUT …/archive`` carries: a
    directory's contents) -> one tar per top-level entry, as berth's copy takes them.
    Names are only regrouped here, never written anywhere: the worker checks and
    extracts each inside the container's root. Bounded by the request body's cap."""
    groups: dict[str, list[tuple[tarfile.TarInfo, bytes | None]]] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
            for member in archive:
                parts = [p for p in member.name.split("/") if p not in ("", ".")]
                if not parts:
                    continue  # the archive's "./" itself: the destination exists
                reader = archive.extractfile(member) if member.isfile() else None
                content = reader.read() if reader is not None else None
                groups.setdefault(parts[0], []).append((member, content))
    except (tarfile.TarError, EOFError, OSError) as e:
        raise HttpError(400, f"the request body is not a tar archive: {e}") from None
    out = []
    for entries in groups.values():
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for member, content in entries:
                member.name = "/".join(p for p in member.name.split("/") if p not in ("", "."))
                archive.addfile(member, io.BytesIO(content) if content is not None else None)
        out.append(buf.getvalue())
    return out


# --------------------------------------------------------------------------- stats


def stats(info: dict[str, Any], usage: dict[str, Any] | None, system_ns: int, cpus: int,
          previous: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    """berth's usage counters -> one Docker stats sample; ``previous`` is the sample
    before (``precpu_stats``), ``usage`` None for a container not running (zeros, as
    Docker reports it)."""
    u = usage or {}
    blkio = [{"major": 0, "minor": 0, "op": op, "value": u.get(key) or 0}
             for op, key in (("read", "block_read"), ("write", "block_write"))] \
        if usage else []
    return {
        "id": info["id"], "name": f"/{info.get('name', '')}",
        "read": now.isoformat().replace("+00:00", "Z"),
        "preread": (previous or {}).get("read", "0001-01-01T00:00:00Z"),
        "pids_stats": {"current": u.get("pids") or 0},
        "blkio_stats": {"io_service_bytes_recursive": blkio},
        "num_procs": 0, "storage_stats": {},
        "cpu_stats": {"cpu_usage": {"total_usage": u.get("cpu_ns") or 0,
                                    "usage_in_kernelmode": 0, "usage_in_usermode": 0},
                      "system_cpu_usage": system_ns if usage else 0,
                      "online_cpus": cpus if usage else 0, "throttling_data": {}},
        "precpu_stats": (previous or {}).get("cpu_stats") or {
            "cpu_usage": {"total_usage": 0}, "throttling_data": {}},
        "memory_stats": {"usage": u.get("memory") or 0,
                         "limit": u.get("memory_limit") or 0, "stats": {}} if usage else {},
        "networks": {"eth0": {"rx_bytes": u.get("net_rx") or 0, "tx_bytes": u.get("net_tx") or 0,
                              "rx_packets": 0, "tx_packets": 0, "rx_errors": 0,
                              "tx_errors": 0, "rx_dropped": 0, "tx_dropped": 0}},
    }


UPDATE_FIELDS: Final = frozenset({"Memory", "NanoCpus", "PidsLimit", "RestartPolicy"})


def update_spec(body: object) -> dict[str, Any]:
    """``POST /containers/{id}/update`` -> berth update's changes (memory, cpus,
    pids_limit, restart); another field is accepted only while empty."""
    config = mapping(body if body is not None else {}, "body")
    for key, value in config.items():
        if key not in UPDATE_FIELDS and not empty(value):
            raise HttpError(400, f"{key} cannot be updated by berth: it updates Memory, "
                                 "NanoCpus, PidsLimit and RestartPolicy")
    changes: dict[str, Any] = {}
    if config.get("Memory"):
        changes["memory"] = integer(config["Memory"], "Memory", low=1)
    if config.get("NanoCpus"):
        changes["cpus"] = integer(config["NanoCpus"], "NanoCpus", low=1) / 1e9
    if config.get("PidsLimit"):
        changes["pids_limit"] = integer(config["PidsLimit"], "PidsLimit", low=1)
    if not empty(config.get("RestartPolicy")):
        changes["restart"] = restart_policy(mapping(config["RestartPolicy"], "RestartPolicy"))
    return changes


def object_matches(obj: dict[str, Any], filters: dict[str, list[str]]) -> bool:
    """A network or volume (Docker's shape) against a list's ``filters``: ``name`` a
    substring of the name, ``id`` a prefix of the id, ``label`` KEY or KEY=VALUE,
    ``driver`` and ``type`` (custom, builtin) exact; every key must match one value."""
    labels = obj.get("Labels") or {}
    name, oid = str(obj.get("Name") or ""), str(obj.get("Id") or "")

    def one(key: str, value: str) -> bool:
        if key == "name":
            return value in name
        if key == "id":
            return oid.startswith(value)
        if key == "label":
            k, eq, v = value.partition("=")
            return k in labels and (not eq or labels[k] == v)
        if key == "driver":
            return value == obj.get("Driver")
        if key == "type":
            return value == ("builtin" if obj.get("Builtin") else "custom")
        return False

    return all(any(one(key, v) for v in values) for key, values in filters.items())
