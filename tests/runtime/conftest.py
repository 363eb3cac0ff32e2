"""Real runc/conmon fixtures: each test gets its own runtime directories and every
container it creates is force-deleted afterwards, also when the test fails."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from engine.containers.spec import RunSpec
from engine.errors import BerthError
from engine.ids import new_container_id
from engine.runtime import Created, OCIRuntime, RuntimeConfig
from engine.runtime.exitfile import ExitStatus
from engine.runtime.waits import wait_pids_exit
from tests.helpers import wait_until


@dataclass
class Containers:
    runtime: OCIRuntime
    rootfs: str
    created: list[str] = field(default_factory=list)

    def spec(self, *args: str, **kw: object) -> RunSpec:
        return RunSpec(rootfs=self.rootfs, args=tuple(args), **kw)  # type: ignore[arg-type]

    def create(self, *args: str, **kw: object) -> tuple[str, Created]:
        cid = new_container_id()
        self.created.append(cid)
        return cid, self.runtime.create(cid, self.spec(*args, **kw))

    def run(self, *args: str, **kw: object) -> tuple[str, Created]:
        cid, created = self.create(*args, **kw)
        self.runtime.start(cid)
        return cid, created

    def wait_exit(self, cid: str, pid: int, timeout: float = 15) -> ExitStatus:
        assert wait_pids_exit([pid], timeout), f"container {cid} still running after {timeout}s"
        return wait_until(lambda: self.runtime.exit_status(cid), 5, what="exit file")

    def log_lines(self, cid: str) -> list[str]:
        try:
            with open(self.runtime.paths(cid).log) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def cleanup(self) -> None:
        for cid in self.created:
            try:
                self.runtime.delete(cid, force=True)
            except BerthError:
                pass
            self.runtime.cleanup(cid)


@pytest.fixture
def runtime(short_tmp: str) -> OCIRuntime:
    return OCIRuntime(
        RuntimeConfig(
            state_dir=os.path.join(short_tmp, "state"), tmp_dir=os.path.join(short_tmp, "run")
        )
    )


@pytest.fixture
def containers(runtime: OCIRuntime, busybox_rootfs: str) -> Iterator[Containers]:
    c = Containers(runtime, busybox_rootfs)
    try:
        yield c
    finally:
        c.cleanup()
