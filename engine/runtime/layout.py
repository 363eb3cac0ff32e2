"""Where each container's files live; every path is confined to its directory."""

from __future__ import annotations

import os
from dataclasses import dataclass

from engine.ids import validate_container_id, validate_session_id
from engine.runtime.config import RuntimeConfig


@dataclass(frozen=True)
class ContainerPaths:
    """Paths of one container, derived only from a validated id."""

    container_id: str
    container_dir: str
    exits_dir: str

    @classmethod
    def of(cls, config: RuntimeConfig, container_id: str) -> ContainerPaths:
        cid = validate_container_id(container_id)
        return cls(cid, os.path.join(config.state_dir, "containers", cid), config.exits_dir)

    @property
    def bundle(self) -> str:
        return self.container_dir

    @property
    def config_json(self) -> str:
        return os.path.join(self.container_dir, "config.json")

    @property
    def log(self) -> str:
        return os.path.join(self.container_dir, "ctr.log")

    @property
    def runtime_log(self) -> str:
        return os.path.join(self.container_dir, "runtime.log")

    @property
    def pidfile(self) -> str:
        return os.path.join(self.container_dir, "pidfile")

    @property
    def conmon_pidfile(self) -> str:
        return os.path.join(self.container_dir, "conmon.pid")

    @property
    def conmon_stderr(self) -> str:
        return os.path.join(self.container_dir, "conmon.stderr")

    @property
    def checkpoint(self) -> str:
        return os.path.join(self.container_dir, "checkpoint")

    def checkpoint_dir(self, name: str) -> str:
        """One checkpoint's own image directory (``name``: an id, e.g. its command's)."""
        return os.path.join(self.container_dir, "checkpoints", validate_session_id(name))

    @property
    def exit_file(self) -> str:
        return os.path.join(self.exits_dir, self.container_id)

    def exec_dir(self, session_id: str) -> str:
        """An exec session's own directory (claimed before its process may exist)."""
        return os.path.join(self.container_dir, "exec", validate_session_id(session_id))

    def exec_pidfile(self, session_id: str) -> str:
        return os.path.join(self.exec_dir(session_id), "pid")
