"""A container as podman's ``inspect`` shows it, next to berth's own keys.

podman's scripts read ``{{.State.Status}}``, ``{{.State.ExitCode}}``, ``{{.State.Pid}}``,
``{{.Config.Image}}``, ``{{.HostConfig.Memory}}``, ``{{.NetworkSettings.Ports}}`` and
``jq '.[0].State.Running'``; berth's log has every one of these facts under its own
names (``state``, ``exit_code``, ``spec``...). This module only renames and
reshapes them (pure: a dict in, a dict out), so that one inspect serves both: berth's
lower-case keys stay as they were, podman's capitalised ones are added.
"""

from __future__ import annotations

import os
import signal
from typing import Any

PERIOD_US = 100_000
"""The CFS period berth sets with ``--cpus`` (engine.containers.bundle)."""


def _signal_name(number: Any) -> str:
    try:
        return signal.Signals(int(number)).name
    except (TypeError, ValueError):
        return str(number)


def _ports(ports: Any) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for item in ports or ():
        if isinstance(item, (list, tuple)) and len(item) == 4:
            host_ip, host_port, ctr_port, proto = item
            out.setdefault(f"{ctr_port}/{proto}", []).append(
                {"HostIp": str(host_ip or ""), "HostPort": str(host_port)})
    return out


def _health(item: dict[str, Any]) -> dict[str, Any]:
    log = item.get("health_log") or {}
    return {
        "Status": item.get("health") or "",
        "FailingStreak": int(log.get("failing_streak") or 0),
        "Log": [{"ExitCode": p.get("exit_code"), "Output": p.get("output", ""),
                 "Start": p.get("start", ""), "End": p.get("end", "")}
                for p in log.get("log") or () if isinstance(p, dict)],
    }


def _restart(policy: str) -> dict[str, Any]:
    name, _, count = (policy or "no").partition(":")
    return {"Name": "" if name == "no" else name,
            "MaximumRetryCount": int(count) if count.isdigit() else 0}


def _mounts(mounts: Any) -> list[dict[str, Any]]:
    out = []
    for m in mounts or ():
        if not isinstance(m, dict):
            continue
        kind = str(m.get("type") or m.get("kind") or "bind")
        options = list(m.get("options") or ())
        out.append({"Type": kind, "Name": m.get("name") or m.get("volume") or "",
                    "Source": m.get("source") or "", "Destination": m.get("target")
                    or m.get("destination") or "", "Options": options,
                    "RW": not bool(m.get("read_only") or "ro" in options)})
    return out


def container_view(item: dict[str, Any]) -> dict[str, Any]:
    """``item`` (berth's inspect) with podman's fields added."""
    spec: dict[str, Any] = dict(item.get("spec") or {})
    state = str(item.get("state") or "")
    argv = list(item.get("command") or [])
    image_id = str(spec.get("image_id") or "").removeprefix("sha256:")
    running = state == "running"
    health = _health(item)
    cpus = spec.get("cpus")
    view = dict(item)
    view.update({
        "Id": item.get("id"), "ID": item.get("id"), "Name": item.get("name"),
        "Names": item.get("name"), "Created": item.get("created_at"),
        "Path": argv[0] if argv else "", "Args": argv[1:],
        "Image": image_id or spec.get("rootfs") or item.get("rootfs"),
        "ImageName": spec.get("image") or "", "Rootfs": "" if spec.get("image")
        else spec.get("rootfs") or item.get("rootfs") or "",
        "RestartCount": item.get("restart_count") or 0,
        "ExecIDs": [s.get("id") if isinstance(s, dict) else s
                    for s in item.get("exec_sessions") or ()],
        "Node": item.get("node"), "Pid": item.get("pid"), "ExitCode": item.get("exit_code"),
        "State": {
            "Status": state, "Running": running, "Paused": state == "paused",
            "Restarting": False, "OOMKilled": item.get("exit_reason") == "oom",
            "Dead": False, "Pid": int(item.get("pid") or 0) if running or state == "paused"
            else 0,
            "ConmonPid": int(item.get("conmon_pid") or 0) if running or state == "paused"
            else 0,
            "ExitCode": int(item.get("exit_code") or 0), "Error": "",
            "StartedAt": item.get("started_at") or "", "FinishedAt": item.get("finished_at")
            or "", "Health": health, "Healthcheck": health,
        },
        "Config": {
            "Hostname": spec.get("hostname") or str(item.get("id") or "")[:12],
            "User": spec.get("user") or "", "Env": list(spec.get("env") or ()),
            "Cmd": list(spec.get("args") or ()),
            "Image": spec.get("image") or spec.get("rootfs") or item.get("rootfs") or "",
            "WorkingDir": spec.get("cwd") or "/",
            "Entrypoint": list(spec.get("entrypoint") or ()),
            "Labels": dict(spec.get("labels") or {}),
            "StopSignal": _signal_name(spec.get("stop_signal", 15)),
            "Tty": bool(spec.get("terminal")), "OpenStdin": bool(spec.get("stdin")),
            "Healthcheck": {"Test": list(spec.get("health_cmd") or ()),
                            "Interval": int(float(spec.get("health_interval") or 0) * 1e9),
                            "Timeout": int(float(spec.get("health_timeout") or 0) * 1e9),
                            "Retries": spec.get("health_retries") or 0},
        },
        "HostConfig": {
            "Memory": int(spec.get("memory") or 0),
            "NanoCpus": round(float(cpus) * 1e9) if cpus else 0,
            "CpuQuota": round(float(cpus) * PERIOD_US) if cpus else 0,
            "CpuPeriod": PERIOD_US if cpus else 0,
            "PidsLimit": int(spec.get("pids_limit") or 0),
            "AutoRemove": bool(spec.get("auto_remove")),
            "ReadonlyRootfs": bool(spec.get("read_only")),
            "RestartPolicy": _restart(str(spec.get("restart") or "no")),
            "PortBindings": _ports(spec.get("ports")),
            "CapAdd": list(spec.get("cap_add") or ()), "CapDrop": list(spec.get("cap_drop")
                                                                     or ()),
            "Init": bool(spec.get("init")), "Privileged": False,
            "NetworkMode": spec.get("network") or "bridge",
            "LogConfig": {"Type": "k8s-file"},
        },
        "NetworkSettings": {"Ports": _ports(item.get("ports") or spec.get("ports"))},
        "Mounts": _mounts(spec.get("mounts")),
    })
    return view


_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
         "s390x": "s390x"}
"""``uname -m`` -> the GOARCH names podman reports."""


def _binary(entry: Any) -> dict[str, str]:
    entry = entry if isinstance(entry, dict) else {}
    path = str(entry.get("path") or "")
    return {"Name": os.path.basename(path), "Path": path,
            "Version": str(entry.get("version") or "")}


def _cgroups_version() -> str:
    try:
        return "v2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "v1"
    except OSError:
        return "v1"


def _distribution() -> dict[str, str]:
    fields: dict[str, str] = {}
    try:
        with open("/etc/os-release") as f:
            for line in f:
                key, _, value = line.strip().partition("=")
                fields[key] = value.strip('"')
    except OSError:
        pass
    return {"Distribution": fields.get("ID", ""), "Version": fields.get("VERSION_ID", ""),
            "Codename": fields.get("VERSION_CODENAME", "")}


def info_view(info: dict[str, Any]) -> dict[str, Any]:
    """``berth info`` (client, broker, nodes) as podman's ``info`` shape for templates:
    the first node's facts (the one ``berth up`` runs when there is one)."""
    nodes = info.get("nodes") or {}
    node: dict[str, Any] = next(iter(nodes.values()), {}) if nodes else {}
    binaries = node.get("binaries") or {}
    runtime = node.get("runtime") or {}
    url = str((node.get("store") or {}).get("url") or "")
    view = dict(info)
    view.update({
        "Host": {
            "Arch": _ARCH.get(str(node.get("arch") or ""), str(node.get("arch") or "")),
            "Os": "linux", "Kernel": node.get("kernel", ""),
            "Distribution": _distribution(),
            "OCIRuntime": _binary(binaries.get("runtime")),
            "Conmon": _binary(binaries.get("conmon")),
            "Security": {"Rootless": False},  # the worker runs as root
            "EventLogger": "berth",  # the event log is berth's store
            "LogDriver": "k8s-file",
            "CgroupsVersion": _cgroups_version(),
            "CgroupManager": runtime.get("cgroup_manager", ""),
            "NetworkBackend": "cni",
            "DatabaseBackend": "postgresql" if url.startswith("postgresql") else "sqlite",
        },
        "Store": {"GraphDriverName": "overlay", "GraphRoot": runtime.get("state_dir", ""),
                  "RunRoot": runtime.get("tmp_dir", "")},
        "Version": {"Version": node.get("berth", "")},
    })
    return view
