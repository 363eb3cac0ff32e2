"""Configuration of the OCI runtime layer (the fields of libpod's OCIRuntime)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field

from engine.errors import InvalidArgument

CGROUPFS = "cgroupfs"
SYSTEMD = "systemd"
CGROUP_MANAGERS = (CGROUPFS, SYSTEMD)

CONTAINER_CREATE_TIMEOUT = 240.0
KILL_CONTAINER_TIMEOUT = 5.0
DEFAULT_CRIU = "/opt/berth/criu/bin/criu"


def _which(name: str, fallback: str) -> str:
    return shutil.which(name) or fallback


@dataclass(frozen=True)
class RuntimeConfig:
    """Where berth keeps runtime state and which binaries it drives.

    ``state_dir`` holds per-container bundles and logs (persistent);
    ``tmp_dir`` holds exit files, attach sockets and runc's private root, which
    must live as long as the containers do but not across reboots.
    """

    state_dir: str
    tmp_dir: str
    runtime_path: str = field(default_factory=lambda: _which("runc", "/usr/bin/runc"))
    conmon_path: str = field(default_factory=lambda: _which("conmon", "/usr/bin/conmon"))
    criu_path: str = field(default_factory=lambda: os.environ.get("BERTH_CRIU", DEFAULT_CRIU))
    cgroup_manager: str = CGROUPFS
    cgroup_parent: str = "/berth"
    log_size_max: int = -1
    no_pivot: bool = False
    reserve_ports: bool = True
    create_timeout: float = CONTAINER_CREATE_TIMEOUT
    runc_timeout: float = 60.0
    conmon_env: tuple[str, ...] = ()
    exit_command: tuple[str, ...] = ()
    debug: bool = False

    def __post_init__(self) -> None:
        if self.cgroup_manager not in CGROUP_MANAGERS:
            raise InvalidArgument(
                f"invalid cgroup manager specified: {self.cgroup_manager!r} "
                f"(use {' or '.join(CGROUP_MANAGERS)})"
            )
        for label, path in (("state directory", self.state_dir), ("tmp directory", self.tmp_dir)):
            if not os.path.isabs(path):
                raise InvalidArgument(f"the {label} {path!r} must be an absolute path")
        if self.create_timeout <= 0:
            raise InvalidArgument("the container create timeout must be positive")

    @property
    def exits_dir(self) -> str:
        return os.path.join(self.tmp_dir, "exits")

    @property
    def sockets_dir(self) -> str:
        return os.path.join(self.tmp_dir, "socket")

    @property
    def runc_root(self) -> str:
        """A private ``runc --root`` so berth never sees or touches other runc users."""
        return os.path.join(self.tmp_dir, "runc")
