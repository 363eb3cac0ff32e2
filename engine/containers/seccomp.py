"""The default seccomp profile, podman's: containers-common's ``seccomp.json``
(defaultAction ERRNO, an allow list, some syscalls allowed only with a capability or
on an architecture), turned into the OCI form for one container as podman's
``pkg/seccomp`` does: entries whose capability or architecture conditions do not
hold are left out. ``--security-opt seccomp=unconfined`` applies none.
"""

from __future__ import annotations

import functools
import json
import os
import platform
from collections.abc import Iterable
from typing import Any, Final

from engine.errors import RuntimeFailure

PROFILE_PATH: Final = os.environ.get("BERTH_SECCOMP_PROFILE",
                                     "/usr/share/containers/seccomp.json")
UNCONFINED: Final = "unconfined"

_ARCH_NAMES: Final = {"x86_64": "amd64", "aarch64": "arm64", "i686": "x86", "i386": "x86",
                      "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


@functools.lru_cache(maxsize=4)
def load_profile(path: str = PROFILE_PATH) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            profile: dict[str, Any] = json.load(f)
    except OSError as exc:
        raise RuntimeFailure(f"no default seccomp profile at {path} ({exc.strerror}): "
                             "install containers-common, or run with --security-opt "
                             "seccomp=unconfined") from None
    except ValueError as exc:
        raise RuntimeFailure(f"the seccomp profile {path} is not valid JSON: {exc}") from None
    return profile


def oci_seccomp(profile: dict[str, Any], caps: Iterable[str],
                machine: str | None = None) -> dict[str, Any]:
    """The OCI ``linux.seccomp`` of ``profile`` for a process holding ``caps`` (pure)."""
    held = set(caps)
    arch = _ARCH_NAMES.get(machine or platform.machine(), machine or platform.machine())
    architectures: list[str] = []
    native = {"amd64": "SCMP_ARCH_X86_64", "arm64": "SCMP_ARCH_AARCH64", "x86": "SCMP_ARCH_X86",
              "arm": "SCMP_ARCH_ARM", "ppc64le": "SCMP_ARCH_PPC64LE",
              "s390x": "SCMP_ARCH_S390X"}.get(arch)
    for entry in profile.get("archMap") or []:
        if entry.get("architecture") == native:
            architectures = [entry["architecture"], *(entry.get("subArchitectures") or [])]
    syscalls: list[dict[str, Any]] = []
    for rule in profile.get("syscalls") or []:
        if not _applies(rule, held, arch):
            continue
        out: dict[str, Any] = {"names": list(rule["names"]), "action": rule["action"]}
        if rule.get("args"):
            out["args"] = [{k: a[k] for k in ("index", "value", "valueTwo", "op") if k in a}
                           for a in rule["args"]]
        if rule.get("errnoRet") is not None:
            out["errnoRet"] = rule["errnoRet"]
        syscalls.append(out)
    result: dict[str, Any] = {"defaultAction": profile["defaultAction"],
                              "architectures": architectures, "syscalls": syscalls}
    if profile.get("defaultErrnoRet") is not None:
        result["defaultErrnoRet"] = profile["defaultErrnoRet"]
    return result


def _applies(rule: dict[str, Any], caps: set[str], arch: str) -> bool:
    includes, excludes = rule.get("includes") or {}, rule.get("excludes") or {}
    if includes.get("caps") and not set(includes["caps"]) <= caps:
        return False
    if includes.get("arches") and arch not in includes["arches"]:
        return False
    if excludes.get("caps") and set(excludes["caps"]) & caps:
        return False
    return not (excludes.get("arches") and arch in excludes["arches"])
