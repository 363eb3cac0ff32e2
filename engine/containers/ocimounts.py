"""A run spec's mounts in the runtime-spec's terms: the entries of config.json's ``mounts``.

Pure, like ``engine.containers.bundle.oci_config``: a named volume becomes a bind mount of its
data directory (``$BERTH_ROOT/volumes/NAME/_data``, as podman keeps them), a tmpfs a
tmpfs with its size and mode. A user's mount replaces a default one at the same
target (``/tmp``, ``/dev/shm``), and mounts are ordered parent before child, so
``/data`` never hides ``/data/logs`` (podman sorts them the same way).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any, Final

from engine.containers.mountspec import BIND, TMPFS, Mount

VOLUMES_DIR: Final = "volumes"
DATA_DIR: Final = "_data"


def volumes_root(state_dir: str) -> str:
    """Where the named volumes of a node live (``$BERTH_ROOT/volumes``)."""
    return os.path.join(state_dir, VOLUMES_DIR)


def volume_data(volumes: str, name: str) -> str:
    """The directory a volume's containers see."""
    return os.path.join(volumes, name, DATA_DIR)


def oci_mount(mount: Mount, volumes: str) -> dict[str, Any]:
    access = ["ro"] if mount.readonly else ["rw"]
    if mount.type == TMPFS:
        options = ["nosuid", "nodev", f"mode={mount.mode if mount.mode is not None else 0o1777:o}"]
        if mount.size is not None:
            options.append(f"size={mount.size}")
        return {"destination": mount.target, "type": "tmpfs", "source": "tmpfs",
                "options": options + access}
    source = mount.source if mount.type == BIND else volume_data(volumes, mount.source)
    extra = [] if mount.type == BIND else ["nosuid", "nodev"]
    return {"destination": mount.target, "type": "bind", "source": source,
            "options": ["rbind", "rprivate", *extra, *access]}


def with_mounts(defaults: Sequence[dict[str, Any]], mounts: Iterable[Mount],
                volumes: str) -> list[dict[str, Any]]:
    """The runtime's default mounts, less those a user's mount replaces, then the user's,
    parents first."""
    users = [oci_mount(m, volumes) for m in mounts]
    taken = {m["destination"] for m in users}
    users.sort(key=lambda m: len([p for p in m["destination"].split("/") if p]))
    return [dict(m) for m in defaults if m["destination"] not in taken] + users
