"""Graceful ``compose down``/``stop``/``restart`` on real stacks: each service gets its
stop signal and its ``stop_grace_period`` before SIGKILL, dependants first; a service
that exits on the signal is not waited for; ``-t 0`` does not wait; a reconciler
killed -9 in the middle of a graceful ``down`` is finished by the next one with
nothing carried out twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

from tests.e2e.conftest import Engine
from tests.helpers import wait_until

LOOP = "while :; do sleep 0.1; done"
"""The main loop of each service: short sleeps, so sh runs a trap within 0.1 s."""


def _compose(engine: Engine, path: str, project: str, *args: str
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "berth", "compose", "-f", path, "-p", project,
                           *args], env=engine.env, capture_output=True, text=True,
                          timeout=120, check=False)


def _stack(engine: Engine, services: str) -> tuple[str, str, str]:
    """(project, compose file, the host directory every service has at /root: a
    directory the shared rootfs has, so runc makes no mount point in it)."""
    project = "g" + uuid.uuid4().hex[:8]
    base = os.path.join(engine.root, project)
    os.makedirs(os.path.join(base, "data"), exist_ok=True)
    path = os.path.join(base, "compose.yaml")
    with open(path, "w") as f:
        f.write("services:\n" + services.format(rootfs=engine.rootfs))
    return project, path, os.path.join(base, "data")


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def _timed(engine: Engine, path: str, project: str, *args: str) -> float:
    began = time.monotonic()
    done = _compose(engine, path, project, *args)
    assert done.returncode == 0, done.stderr
    return time.monotonic() - began


def _service(name: str, trap: str, extra: str = "") -> str:
    return (f"  {name}:\n    image: {{rootfs}}\n"
            f"    command: [sh, -c, 'trap \"{trap}\" TERM; {LOOP}']\n"
            f"    volumes: ['./data:/root']\n{extra}")


def test_down_runs_the_term_trap_in_dependency_order_without_waiting_for_it(
        up: Engine) -> None:
    """db's trap writes at once, web's after a second: web (which depends on db) must
    still be first in the file, and neither is waited for its 30 s grace period."""
    project, path, data = _stack(up, _service(
        "db", "echo db >> /root/order; exit 0", "    stop_grace_period: 30s\n") + _service(
        "web", "sleep 1; echo web >> /root/order; exit 0",
        "    stop_grace_period: 30s\n    depends_on: [db]\n"))
    _timed(up, path, project, "up", "-d")
    took = _timed(up, path, project, "down")
    assert _read(os.path.join(data, "order")).split() == ["web", "db"]
    assert took < 15, f"down waited {took:.1f} s for services that exit on TERM"
    with up.client() as c:
        assert not [r for r in c.ps(all=True) if str(r["name"]).startswith(project + "-")
                    and r["state"] != "removed"]


def test_grace_period_is_waited_then_killed_and_t0_does_not_wait(up: Engine) -> None:
    project, path, data = _stack(up, _service(
        "stubborn", "echo got-term >> /root/log", "    stop_grace_period: 2s\n"))
    _timed(up, path, project, "up", "-d")
    took = _timed(up, path, project, "stop")
    assert 2 <= took < 10, f"stop took {took:.1f} s for a 2 s grace period"
    assert _read(os.path.join(data, "log")).split() == ["got-term"]  # TERM first
    with up.client() as c:
        state = c.inspect(f"{project}-stubborn-1")
        assert state["state"] == "exited" and state["exit_code"] == 137  # then KILL
    with open(path) as f:  # a grace period no test waits out (it recreates nothing)
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace("stop_grace_period: 2s", "stop_grace_period: 60s"))
    _timed(up, path, project, "up", "-d")
    took = _timed(up, path, project, "down", "-t", "0")
    assert took < 20, f"down -t 0 waited {took:.1f} s"
    bad = _compose(up, path, project, "down", "-t", "nan")
    assert bad.returncode == 125 and "invalid timeout" in bad.stderr


def test_restart_stops_gracefully_and_starts_again(up: Engine) -> None:
    project, path, data = _stack(up, _service("a", "echo a >> /root/log; exit 0"))
    _timed(up, path, project, "up", "-d")
    took = _timed(up, path, project, "restart")
    assert took < 8
    assert _read(os.path.join(data, "log")).split() == ["a"]
    with up.client() as c:
        assert c.inspect(f"{project}-a-1")["state"] == "running"
    _timed(up, path, project, "down", "-t", "0")


def test_reconciler_killed_during_a_graceful_down_is_finished_by_the_next(
        up: Engine) -> None:
    """The trap takes 3 s: the first ``down`` is killed -9 while the worker waits for
    it, the second sends the same stop (its id derives from the incarnation), so the
    container gets one TERM, and removes what is left."""
    project, path, data = _stack(up, _service(
        "slow", "echo term >> /root/log; sleep 3; echo done >> /root/log; exit 0",
        "    stop_grace_period: 20s\n"))
    _timed(up, path, project, "up", "-d")
    first = subprocess.Popen([sys.executable, "-m", "berth", "compose", "-f", path, "-p",
                              project, "down"], env=up.env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: "term" in _read(os.path.join(data, "log")), 20, interval=0.05,
                   what="the TERM trap begun")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    took = _timed(up, path, project, "down")
    assert took < 15
    assert _read(os.path.join(data, "log")).split() == ["term", "done"]  # one TERM
    with up.client() as c:
        assert not [r for r in c.ps(all=True) if str(r["name"]).startswith(project + "-")
                    and r["state"] != "removed"]
