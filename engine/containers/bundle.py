"""OCI bundle generation: a RunSpec becomes a runtime-spec ``config.json``.

``oci_config`` is pure so it can be tested without processes; ``write_bundle``
is the one place that puts it on disk.
"""

from __future__ import annotations

import json
import os
from typing import Any

from engine.containers.process import (
    INIT_IN_CONTAINER,
    INIT_PATH,
    capabilities,
    default_ulimits,
    resolve_user,
    rlimits,
)
from engine.containers.seccomp import UNCONFINED, load_profile, oci_seccomp
from engine.containers.spec import RunSpec, parse_sysctl

STOP_SIGNAL_ANNOTATION = "org.opencontainers.image.stopSignal"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# podman's default capability set for root containers.
DEFAULT_CAPS = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
)

_MOUNTS: list[dict[str, Any]] = [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {
        "destination": "/dev",
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
    },
    {
        "destination": "/dev/pts",
        "type": "devpts",
        "source": "devpts",
        "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
    },
    {
        "destination": "/dev/shm",
        "type": "tmpfs",
        "source": "shm",
        "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
    },
    {
        "destination": "/dev/mqueue",
        "type": "mqueue",
        "source": "mqueue",
        "options": ["nosuid", "noexec", "nodev"],
    },
    {
        "destination": "/sys",
        "type": "sysfs",
        "source": "sysfs",
        "options": ["nosuid", "noexec", "nodev", "ro"],
    },
    {
        "destination": "/tmp",
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["nosuid", "nodev", "mode=1777"],
    },
]


def oci_config(spec: RunSpec, container_id: str, *, cgroups_path: str) -> dict[str, Any]:
    """Return the runtime-spec document for ``spec``.

    Pure but for two reads: a user given by name is looked up in the root
    filesystem's /etc/passwd, and the default seccomp profile is loaded (once).

    Every container gets fresh pid, ipc, uts, mount and network namespaces (the
    equivalent of ``podman run --network none``), but those ``--pid``, ``--ipc`` or
    ``--uts host`` share with the host.
    """
    user = resolve_user(spec.rootfs, spec.user)  # a name: from the container's own files
    caps = capabilities(DEFAULT_CAPS, spec.cap_add, spec.cap_drop)
    argv = list(spec.argv)
    mounts = [dict(m) for m in _MOUNTS]
    if spec.init:  # podman's --init: catatonit as PID 1, the command under it
        argv = [INIT_IN_CONTAINER, "--", *argv]
        mounts.append({"destination": INIT_IN_CONTAINER, "type": "bind", "source": INIT_PATH,
                       "options": ["bind", "ro", "nosuid", "nodev"]})
    env = list(spec.env)
    if not any(e.startswith("PATH=") for e in env):
        env.insert(0, DEFAULT_PATH)
    if spec.terminal and not any(e.startswith("TERM=") for e in env):
        env.append("TERM=xterm")
    resources: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    if spec.memory is not None:
        resources["memory"] = {"limit": spec.memory}
    if spec.pids_limit is not None:
        resources["pids"] = {"limit": spec.pids_limit}
    if spec.cpus is not None:  # --cpus, as runc update sets it (oci.CPU_PERIOD_US)
        resources["cpu"] = {"quota": round(spec.cpus * 100_000), "period": 100_000}
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": spec.terminal,
            "user": {"uid": user.uid, "gid": user.gid,
                     **({"additionalGids": list(user.additional_gids)}
                        if user.additional_gids else {})},
            "args": argv,
            "env": env,
            "cwd": spec.cwd,
            "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
            "noNewPrivileges": spec.no_new_privileges,
            "rlimits": rlimits(spec.ulimits, default_ulimits()),
        },
        "root": {"path": spec.rootfs, "readonly": spec.read_only},
        # the host's UTS namespace keeps the host's name (runc refuses to set one there)
        **({} if spec.uts_ns == "host" else {"hostname": spec.hostname or container_id[:12]}),
        "mounts": mounts,
        "annotations": {STOP_SIGNAL_ANNOTATION: str(spec.stop_signal)},
        "linux": {
            **({"sysctl": _sysctls(spec)} if spec.sysctls or spec.domainname else {}),
            "cgroupsPath": cgroups_path,
            "resources": resources,
            "namespaces": [
                {"type": t} for t in ("pid", "network", "ipc", "uts", "mount")
                if getattr(spec, f"{t}_ns", "") != "host"  # --pid/--ipc/--uts host
            ],
            "maskedPaths": [
                "/proc/acpi",
                "/proc/kcore",
                "/proc/keys",
                "/proc/latency_stats",
                "/proc/timer_list",
                "/proc/timer_stats",
                "/proc/sched_debug",
                "/sys/firmware",
                "/proc/scsi",
            ],
            "readonlyPaths": [
                "/proc/asound",
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger",
            ],
            **({} if spec.seccomp == UNCONFINED
               else {"seccomp": oci_seccomp(load_profile(), caps)}),
        },
    }


def _sysctls(spec: RunSpec) -> dict[str, str]:
    """``--sysctl``, and ``--domainname`` as ``kernel.domainname`` of its own UTS
    namespace (the runc here ignores the runtime spec's ``domainname`` field, which
    came later; the sysctl has the same effect)."""
    out = dict(parse_sysctl(x) for x in spec.sysctls)
    if spec.domainname:
        out["kernel.domainname"] = spec.domainname
    return out


def write_bundle(bundle_dir: str, config: dict[str, Any]) -> str:
    """Write ``config.json`` atomically and return the bundle directory."""
    os.makedirs(bundle_dir, mode=0o700, exist_ok=True)
    path = os.path.join(bundle_dir, "config.json")
    tmp = path + ".tmp"
    # No fsync: the bundle is derived data (the created event holds the spec) and
    # runc reads it at once; a sync per container cost more than the rest of it.
    with open(tmp, "w") as f:
        json.dump(config, f)
    os.replace(tmp, path)
    return bundle_dir
