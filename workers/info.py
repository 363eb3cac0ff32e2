"""What ``query.info`` answers for a node: berth's version, the runtime binaries'
versions, the store (its URL without a password) and its position."""

from __future__ import annotations

import platform
from typing import Any

from engine.containers.service import ContainerService
from engine.runtime.oci import OCIRuntime
from engine.runtime.versions import versions


def berth_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("berth")
    except PackageNotFoundError:
        return "unknown"


def store_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL the store opened; never fail info over it
        return "(unparsable)"


def node_info(service: ContainerService) -> dict[str, Any]:
    runtime = service.runtime
    return {
        "node": service.node,
        "berth": berth_version(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "binaries": versions(runtime.config) if isinstance(runtime, OCIRuntime) else {},
        # where this worker keeps containers and how it makes their cgroups: podman's
        # info reports the same as Store.GraphRoot/RunRoot and Host.CgroupManager
        "runtime": ({"state_dir": runtime.config.state_dir, "tmp_dir": runtime.config.tmp_dir,
                     "cgroup_manager": runtime.config.cgroup_manager}
                    if isinstance(runtime, OCIRuntime) else {}),
        "arch": platform.machine(),
        "store": {"url": store_url(service.store.url),
                  "position": service.store.max_position()},
    }
