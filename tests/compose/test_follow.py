"""The foreground ``berth compose up`` on a real engine (broker, worker, runc, conmon,
SQLite), in its own process: replicas killed from outside are replaced, a changed
service is recreated, the reconciler survives kill -9, SIGTERM stops the stack."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from engine.faults import ARMED_ENV, POINTS_ENV, arming_text
from tests.compose.test_stack import _created, _events, _live, _want
from tests.e2e.conftest import Engine
from tests.helpers import wait_until

STACK = """
services:
  db:
    image: {rootfs}
    command: ["sleep", "300"]
  web:
    image: {rootfs}
    command: {command}
    depends_on: [db]
    deploy: {{replicas: 2}}
"""


def _write(engine: Engine, name: str, command: str = "[sleep, '300']") -> str:
    os.makedirs(engine.root, exist_ok=True)
    path = os.path.join(engine.root, name)
    with open(path, "w") as f:
        f.write(STACK.format(rootfs=engine.rootfs, command=command))
    return path


class Foreground:
    """``berth compose up`` without ``-d`` as a child process, its output in files."""

    def __init__(self, engine: Engine, path: str, project: str,
                 env: dict[str, str] | None = None) -> None:
        self.out = os.path.join(engine.root, f"up-{uuid.uuid4().hex[:6]}")
        with open(self.out + ".out", "w") as out, open(self.out + ".err", "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "berth", "compose", "-f", path, "-p", project, "up",
                 "-t", "1"], env=env or engine.env, stdout=out, stderr=err)

    def stderr(self) -> str:
        with open(self.out + ".err") as f:
            return f.read()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(60)


@pytest.fixture
def foregrounds() -> Iterator[list[Foreground]]:
    """Every foreground ``up`` a test starts is killed at its end, whatever happened."""
    started: list[Foreground] = []
    yield started
    for fg in started:
        if fg.proc.poll() is None:
            fg.proc.kill()
            fg.proc.wait(10)


def _compose(engine: Engine, path: str, project: str, *args: str
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "berth", "compose", "-f", path, "-p", project,
                           *args], env=engine.env, capture_output=True, text=True, timeout=120,
                          check=False)


def _inspect(engine: Engine, name: str) -> dict[str, Any]:
    with engine.client() as c:
        return c.inspect(name)


def _running_again(engine: Engine, name: str, before: dict[str, Any]) -> bool:
    now = _inspect(engine, name)
    return bool(now["state"] == "running" and now["started_at"] != before["started_at"])


def _of(engine: Engine, cid: str) -> list[Any]:
    return [e for e in _events(engine) if e.stream == cid]


def _ids(engine: Engine, project: str) -> dict[str, str]:
    with engine.client() as c:
        return {str(r["name"]): str(r["id"]) for r in c.ps(all=True)
                if str(r["name"]).startswith(project + "-") and r["state"] != "removed"}


def _converged(engine: Engine, project: str) -> bool:
    return _live(engine, project) == _want(project, 2)


def test_killed_conmon_and_process_are_replaced_and_sigterm_stops_the_stack(
        up: Engine, foregrounds: list[Foreground]) -> None:
    project = "f" + uuid.uuid4().hex[:8]
    path = _write(up, "follow.yaml")
    fg = Foreground(up, path, project)
    foregrounds.append(fg)
    wait_until(lambda: _converged(up, project), 60, interval=0.05, what="the stack up")

    # web-1's conmon killed: the engine records the loss, the reconciler starts it again
    victim = f"{project}-web-1"
    before = _inspect(up, victim)
    os.kill(before["conmon_pid"], signal.SIGKILL)
    wait_until(lambda: _running_again(up, victim, before), 30, interval=0.05,
               what="web-1 running again after its conmon was killed")
    kinds = [(e.type, e.data.get("reason")) for e in _of(up, before["id"])
             if e.type in ("container.exited", "container.started")]
    assert kinds == [("container.started", None), ("container.exited", "conmon_lost"),
                     ("container.started", None)]
    wait_until(lambda: f"{victim} exited (code" in fg.stderr(), 10, what="the reason printed")
    assert "reason conmon_lost" in fg.stderr()

    # web-2's main process killed: exit 137 from outside, started again the same way
    victim = f"{project}-web-2"
    before = _inspect(up, victim)
    os.kill(before["pid"], signal.SIGKILL)
    wait_until(lambda: _running_again(up, victim, before), 30, interval=0.05,
               what="web-2 running again after its process was killed")
    exits = [e.data for e in _of(up, before["id"]) if e.type == "container.exited"]
    assert [(d["exit_code"], d["reason"]) for d in exits] == [(137, "crash")]
    assert _converged(up, project)
    assert _created(up, project) == Counter(list(_want(project, 2)))  # started, not remade

    # a replica removed from outside is made again (a new container of the same name)
    gone = _ids(up, project)[f"{project}-db-1"]
    assert up.cli("rm", "-f", f"{project}-db-1").returncode == 0
    wait_until(lambda: _converged(up, project)
               and _ids(up, project)[f"{project}-db-1"] != gone, 30, interval=0.05,
               what="db-1 made again")

    # an explicit stop is never undone: a later death is replaced, the stopped one left
    assert up.cli("stop", "-t", "1", f"{project}-web-2").returncode == 0
    victim = f"{project}-web-1"
    before = _inspect(up, victim)
    os.kill(before["pid"], signal.SIGKILL)
    wait_until(lambda: _running_again(up, victim, before), 30, interval=0.05,
               what="web-1 replaced after web-2 was stopped")
    assert _live(up, project)[f"{project}-web-2"] == "exited"

    assert fg.stop(signal.SIGTERM) == 0, fg.stderr()
    assert set(_live(up, project).values()) == {"exited"}, fg.stderr()
    assert f"stopping stack {project}" in fg.stderr()
    assert _compose(up, path, project, "down").returncode == 0
    assert _live(up, project) == {}


def test_a_changed_command_recreates_exactly_that_service(up: Engine) -> None:
    project = "c" + uuid.uuid4().hex[:8]
    path = _write(up, "change.yaml")
    assert _compose(up, path, project, "up", "-d").returncode == 0
    with up.client() as c:
        ids = {n: c.inspect(n)["id"] for n in _want(project, 2)}
    path = _write(up, "change.yaml", command="[sleep, '301']")
    done = _compose(up, path, project, "up", "-d")
    assert done.returncode == 0, done.stderr
    assert _live(up, project) == _want(project, 2)
    with up.client() as c:
        now = {n: c.inspect(n) for n in _want(project, 2)}
    assert now[f"{project}-db-1"]["id"] == ids[f"{project}-db-1"]  # untouched
    for n in (f"{project}-web-1", f"{project}-web-2"):
        assert now[n]["id"] != ids[n] and now[n]["spec"]["args"] == ["sleep", "301"]
    assert sorted(done.stderr.splitlines()) == sorted(
        [f"removed {project}-web-{n}" for n in (1, 2)]
        + [f"created {project}-web-{n}" for n in (1, 2)]
        + [f"started {project}-web-{n}" for n in (1, 2)])
    again = _compose(up, path, project, "up", "-d")  # unchanged file: nothing sent
    assert again.returncode == 0 and again.stderr == ""
    assert _compose(up, path, project, "down").returncode == 0
    assert _live(up, project) == {}


def test_reconciler_killed_9_while_following_resumes_without_doubling(
        up: Engine, foregrounds: list[Foreground]) -> None:
    project = "r" + uuid.uuid4().hex[:8]
    path = _write(up, "resume.yaml")
    first = Foreground(up, path, project)
    foregrounds.append(first)
    wait_until(lambda: _converged(up, project), 60, interval=0.05, what="the stack up")
    first.stop(signal.SIGKILL)  # while following: the containers keep running

    # web-1 dies while no reconciler runs; the next one is killed -9 right after it
    # sent the start, before it saw any effect
    victim = f"{project}-web-1"
    before = _inspect(up, victim)
    os.kill(before["conmon_pid"], signal.SIGKILL)
    wait_until(lambda: _inspect(up, victim)["state"] == "exited", 30, interval=0.05,
               what="web-1 lost")
    arming = os.path.join(up.root, "armed-follow")
    with open(arming, "w") as f:
        f.write(arming_text("compose.sent.1"))
    os.chmod(arming, 0o600)
    crashed = Foreground(up, path, project,
                         env={**up.env, POINTS_ENV: "compose.sent.1", ARMED_ENV: arming})
    foregrounds.append(crashed)
    assert crashed.proc.wait(60) == -signal.SIGKILL, crashed.stderr()

    second = Foreground(up, path, project)
    foregrounds.append(second)
    wait_until(lambda: _running_again(up, victim, before), 30, interval=0.05,
               what="web-1 running again")
    # and it follows: a death now is replaced too
    other = _inspect(up, f"{project}-web-2")
    os.kill(other["conmon_pid"], signal.SIGKILL)
    wait_until(lambda: _running_again(up, f"{project}-web-2", other), 30, interval=0.05,
               what="web-2 replaced by the resumed reconciler")
    assert _converged(up, project)
    assert _created(up, project) == Counter(list(_want(project, 2)))  # none doubled
    starts = [e for e in _of(up, before["id"]) if e.type == "container.started"]
    assert len(starts) == 2  # the first run's, and one for its one death
    assert len({e.command_id for e in starts}) == 2
    assert second.stop(signal.SIGTERM) == 0, second.stderr()
    assert _compose(up, path, project, "down").returncode == 0
    assert _live(up, project) == {}


def test_foreground_up_adopts_a_stack_another_up_applied(
        up: Engine, foregrounds: list[Foreground]) -> None:
    """``up -d`` with a changed file while a foreground ``up`` of the old one follows:
    the foreground one adopts the recorded stack instead of turning the replicas back."""
    project = "a" + uuid.uuid4().hex[:8]
    path = _write(up, "adopt.yaml")
    fg = Foreground(up, path, project)
    foregrounds.append(fg)
    wait_until(lambda: _converged(up, project), 60, interval=0.05, what="the stack up")
    changed = _write(up, "adopt2.yaml", command="[sleep, '302']")
    done = _compose(up, changed, project, "up", "-d")
    assert done.returncode == 0, done.stderr
    wait_until(lambda: f"stack {project} changed" in fg.stderr(), 20, what="adopted")
    # a death now is replaced under the new stack, and nothing is turned back
    victim = f"{project}-db-1"
    before = _inspect(up, victim)
    os.kill(before["pid"], signal.SIGKILL)
    wait_until(lambda: _running_again(up, victim, before), 30, interval=0.05,
               what="db-1 replaced")
    assert _converged(up, project)
    for n in (1, 2):
        assert _inspect(up, f"{project}-web-{n}")["spec"]["args"] == ["sleep", "302"]
    assert _created(up, project) == Counter({f"{project}-db-1": 1, f"{project}-web-1": 2,
                                             f"{project}-web-2": 2})
    assert fg.stop(signal.SIGTERM) == 0, fg.stderr()
    assert _compose(up, changed, project, "down").returncode == 0
    assert _live(up, project) == {}
