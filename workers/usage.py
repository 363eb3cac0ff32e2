"""``berth top`` and ``berth stats``: reads of a running container's processes and
counters on its own node (engine/runtime/usage.py reads them). Never recorded."""

from __future__ import annotations

from typing import Any

from engine.containers.projection import PAUSED, RUNNING
from engine.containers.service import ContainerService
from engine.errors import Refused
from engine.runtime import OCIRuntime
from engine.runtime.usage import processes, usage


class UsageReader:
    def __init__(self, service: ContainerService, runtime: OCIRuntime) -> None:
        self.service = service
        self.runtime = runtime

    def _running(self, ref: str) -> str:
        cid = self.service.resolve(ref)  # WrongNode sends the publisher to its node
        state = self.service.latest(cid)
        if state.state not in (RUNNING, PAUSED):
            raise Refused(f"container {ref} is {state.state}, not running")
        return cid

    def top(self, ref: str) -> dict[str, Any]:
        cid = self._running(ref)
        return {"id": cid, "node": self.service.node,
                "processes": processes(self.runtime.pids(cid))}

    def stats(self, ref: str) -> dict[str, Any]:
        cid = self._running(ref)
        state = self.service.latest(cid)
        return {"id": cid, "name": state.name, "node": self.service.node,
                "usage": usage(self.runtime.cgroups_path(cid), state.pid).to_data()}
