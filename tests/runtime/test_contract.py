"""One contract, two runtimes: the real OCIRuntime (conmon + runc) and MemoryRuntime.

The service's unit tests drive MemoryRuntime; this suite is what entitles them to:
every scenario runs against both, so the in-memory runtime cannot drift from what
conmon and runc really do (states, exit codes, typed errors).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from engine.containers.spec import RunSpec
from engine.errors import BerthError, InvalidState, NotFound, RuntimeFailure
from engine.ids import new_container_id, new_uuid
from engine.runtime import OCIRuntime, Runtime, RuntimeConfig, Status
from engine.runtime.exitfile import ExitStatus
from engine.runtime.memory import MemoryRuntime
from tests.helpers import wait_until


class Harness:
    """Creates containers on one runtime and removes them all afterwards."""

    def __init__(self, runtime: Runtime, rootfs: str) -> None:
        self.runtime = runtime
        self.rootfs = rootfs
        self.ids: list[str] = []

    def create(self, *args: str) -> tuple[str, int]:
        cid = new_container_id()
        self.ids.append(cid)
        created = self.runtime.create(cid, RunSpec(rootfs=self.rootfs, args=tuple(args)))
        assert created.pid > 0 and created.conmon_pid > 0
        return cid, created.pid

    def exit_of(self, cid: str) -> ExitStatus:
        return wait_until(lambda: self.runtime.exit_status(cid), 15, what="exit status")

    def cleanup(self) -> None:
        for cid in self.ids:
            try:
                self.runtime.delete(cid, force=True)
            except BerthError:
                pass
            self.runtime.cleanup(cid)


@pytest.fixture(params=["real", "memory"])
def harness(request: pytest.FixtureRequest, short_tmp: str,
            busybox_rootfs: str) -> Iterator[Harness]:
    runtime: Runtime
    if request.param == "real":
        runtime = OCIRuntime(RuntimeConfig(state_dir=os.path.join(short_tmp, "state"),
                                           tmp_dir=os.path.join(short_tmp, "run")))
    else:
        runtime = MemoryRuntime(state_dir=os.path.join(short_tmp, "state"))
    h = Harness(runtime, busybox_rootfs)
    try:
        yield h
    finally:
        h.cleanup()


def test_created_then_running_then_paused_then_running(harness: Harness) -> None:
    rt = harness.runtime
    cid, _pid = harness.create("sleep", "30")
    assert rt.status(cid).status == Status.CREATED
    assert rt.exit_status(cid) is None
    assert cid in rt.container_ids()
    rt.start(cid)
    assert rt.status(cid).status == Status.RUNNING
    rt.pause(cid)
    assert rt.status(cid).status == Status.PAUSED
    rt.unpause(cid)
    assert rt.status(cid).status == Status.RUNNING


def test_misuse_is_refused_with_typed_errors(harness: Harness) -> None:
    rt = harness.runtime
    cid, _pid = harness.create("sleep", "30")
    with pytest.raises(InvalidState):
        rt.unpause(cid)  # created, not paused
    rt.start(cid)
    with pytest.raises(InvalidState):
        rt.start(cid)
    with pytest.raises(NotFound):
        rt.start(new_container_id())
    rt.delete(new_container_id(), force=True)  # runc delete --force: nothing to do is fine


def test_sigkill_ends_pid_one_with_137_and_the_conmon_with_it(harness: Harness) -> None:
    rt = harness.runtime
    cid, _pid = harness.create("sleep", "30")
    rt.start(cid)
    status = rt.status(cid)
    assert status.status == Status.RUNNING
    rt.kill(cid, "KILL")
    assert harness.exit_of(cid).exit_code == 137
    assert rt.status(cid).status in (Status.STOPPED, Status.EXITED)
    rt.delete(cid, force=True)
    rt.cleanup(cid)
    assert rt.exit_status(cid) is None
    assert cid not in rt.container_ids()


@pytest.mark.parametrize(("args", "code"), [(("true",), 0), (("false",), 1),
                                            (("sh", "-c", "exit 3"), 3)])
def test_a_program_that_ends_by_itself_leaves_its_code(harness: Harness, args: tuple[str, ...],
                                                       code: int) -> None:
    cid, _pid = harness.create(*args)
    harness.runtime.start(cid)
    assert harness.exit_of(cid).exit_code == code
    assert harness.runtime.wait_exit(cid) == harness.runtime.exit_status(cid)


def test_stop_of_a_pid_one_that_ignores_term_kills_it(harness: Harness) -> None:
    rt = harness.runtime
    cid, pid = harness.create("sleep", "30")
    rt.start(cid)
    rt.stop(cid, pid, timeout=0.5)
    assert harness.exit_of(cid).exit_code == 137


def test_exec_reports_code_and_output(harness: Harness) -> None:
    rt = harness.runtime
    cid, _pid = harness.create("sleep", "30")
    rt.start(cid)
    started: list[int] = []
    result = rt.exec(cid, ["echo", "hello"], session_id=new_uuid(), on_start=started.append)
    assert (result.exit_code, result.output) == (0, b"hello\n")
    assert started and started[0] > 0
    assert rt.exec(cid, ["sh", "-c", "exit 4"], session_id=new_uuid()).exit_code == 4
    with pytest.raises(RuntimeFailure, match="executable file not found"):
        rt.exec(cid, ["no-such-program"], session_id=new_uuid())


def test_an_exec_session_starts_once_and_keeps_its_exit_code(harness: Harness) -> None:
    rt = harness.runtime
    cid, _pid = harness.create("sleep", "30")
    rt.start(cid)
    session = new_uuid()
    assert not rt.exec_session(cid, session).claimed
    pid = rt.exec_start(cid, ["sh", "-c", "exit 3"], session_id=session)
    assert pid is not None and pid > 0
    # A second attempt of the same session never starts a second process.
    assert rt.exec_start(cid, ["sh", "-c", "exit 3"], session_id=session) is None
    result = rt.exec_wait(cid, session, timeout=20)
    assert (result.exit_code, result.pid) == (3, pid)
    after = rt.exec_session(cid, session)
    assert (after.claimed, after.pid, after.exit_code) == (True, pid, 3)
    assert rt.exec_wait(cid, session).exit_code == 3  # asked again: the same answer
    newer = new_uuid()
    rt.exec(cid, ["true"], session_id=newer)
    rt.exec_prune(cid, 1)  # only the newest ended session keeps its files
    assert not rt.exec_session(cid, session).claimed
    assert rt.exec_session(cid, newer).exit_code == 0


def test_conmon_is_alive_while_the_container_runs(harness: Harness) -> None:
    rt = harness.runtime
    cid = new_container_id()
    harness.ids.append(cid)
    created = rt.create(cid, RunSpec(rootfs=harness.rootfs, args=("sleep", "30")))
    rt.start(cid)
    assert rt.conmon_alive(created.conmon_pid, cid)
    assert not rt.conmon_alive(created.conmon_pid, new_container_id())
    rt.kill(cid, "KILL")
    harness.exit_of(cid)
    wait_until(lambda: not rt.conmon_alive(created.conmon_pid, cid), 10, what="conmon exit")


def test_a_process_root_is_only_ever_the_container_s_own(harness: Harness) -> None:
    """``process_root``: what ``berth cp`` works in while a container runs. Never the
    root of a pid that is not the container's (another container's, this process's,
    a pid gone); the real runtime gives the container's own view, with its mounts."""
    rt = harness.runtime
    cid, pid = harness.create("sleep", "30")
    other, _other_pid = harness.create("sleep", "30")
    rt.start(cid)
    assert rt.process_root(other, pid) is None  # another container's process
    assert rt.process_root(cid, os.getpid()) is None  # not a container's at all
    root = rt.process_root(cid, pid)
    if isinstance(rt, OCIRuntime):
        assert root is not None
        with root:  # its /tmp is the tmpfs mounted in its namespace, not the rootfs's
            seen = root.stat("/tmp")
            assert seen is not None
            assert seen.st_dev != os.stat(os.path.join(harness.rootfs, "tmp")).st_dev
    else:
        assert root is None  # no process: a copy works in the root filesystem
    rt.kill(cid, "KILL")
    harness.exit_of(cid)
    assert rt.process_root(cid, pid) is None  # gone
