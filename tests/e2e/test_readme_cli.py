"""The README's "Using berth" claims, each through the real ``berth`` command line:
``up -d``/``down`` with containers that outlive the engine, ``-p`` through the whole
engine, ``checkpoint``/``restore`` continuing a process, and every ``ps`` column."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from bus.client import DEFAULT_RETRIES, DEFAULT_TIMEOUT
from engine.errors import BerthError
from engine.runtime import OCIRuntime, RuntimeConfig
from engine.runtime.waits import pid_alive, wait_pids_exit
from tests.e2e.conftest import REPO, Engine
from tests.helpers import wait_until

COUNTER = "i=0; while true; do i=$((i+1)); echo $i; sleep 0.1; done"


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


# -- berth up -d / berth down -----------------------------------------------------------


class Embedded:
    """``berth up`` under a private BERTH_ROOT/BERTH_RUN, driven only by the CLI."""

    def __init__(self, base: str) -> None:
        self.root, self.run = os.path.join(base, "root"), os.path.join(base, "run")
        env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
        env.update(BERTH_ROOT=self.root, BERTH_RUN=self.run, PYTHONPATH=REPO)
        if "BERTH_CRIU" in os.environ:
            env["BERTH_CRIU"] = os.environ["BERTH_CRIU"]
        self.env = env

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "berth", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def pid(self) -> int | None:
        try:
            with open(os.path.join(self.run, "berth.pid")) as f:
                return int(f.read())
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        """Stop the engine (SIGKILL if ``down`` did not) and every container it made."""
        self.cli("down")
        pid = self.pid()
        if pid is not None and pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        runtime = OCIRuntime(RuntimeConfig(state_dir=self.root,
                                           tmp_dir=os.path.join(self.run, "runtime")))
        containers = os.path.join(self.root, "containers")
        for cid in os.listdir(containers) if os.path.isdir(containers) else []:
            with contextlib.suppress(BerthError):
                runtime.delete(cid, force=True)
            runtime.cleanup(cid)


@pytest.fixture
def embedded(short_tmp: str) -> Iterator[Embedded]:
    e = Embedded(short_tmp)
    try:
        yield e
    finally:
        e.close()


def test_up_down_and_the_next_up_records_what_happened_meanwhile(
        embedded: Embedded, busybox_rootfs: str) -> None:
    out = _ok(embedded.cli("up", "-d"))
    assert "berth is up" in out
    engine_pid = embedded.pid()
    assert engine_pid is not None and pid_alive(engine_pid)
    assert "already up" in _ok(embedded.cli("up", "-d"))
    cid = _ok(embedded.cli("run", "-d", "--name", "web", busybox_rootfs,
                           "sleep", "600")).strip()
    pid = json.loads(_ok(embedded.cli("inspect", "web")))[0]["pid"]
    assert pid_alive(pid)

    assert "containers keep running" in _ok(embedded.cli("down"))
    assert not pid_alive(engine_pid) and embedded.pid() is None
    assert pid_alive(pid), "the container stopped with the engine"
    # The socket files outlive the engine; a command says at once that nothing
    # listens, instead of waiting out the client's whole retry budget.
    asked = time.monotonic()
    refused = embedded.cli("ps")
    assert time.monotonic() - asked < DEFAULT_TIMEOUT * (DEFAULT_RETRIES + 1)
    assert refused.returncode != 0 and "not running" in refused.stderr
    os.kill(pid, signal.SIGKILL)  # it exits while no engine watches
    assert wait_pids_exit([pid], 30)

    _ok(embedded.cli("up", "-d"))
    state = json.loads(_ok(embedded.cli("inspect", "web")))[0]
    assert (state["id"], state["state"], state["exit_code"]) == (cid, "exited", 137)
    table = _ok(embedded.cli("ps", "-a")).splitlines()
    assert len(table) == 2 and re.search(r"\bExited \(137\).*\bweb\b", table[1]), table
    assert _ok(embedded.cli("ps")).splitlines()[1:] == []
    assert "down" in _ok(embedded.cli("down"))


# -- -p HOST:CTR ----------------------------------------------------------------------------


def _can_bind(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _unused_port() -> int:
    # The CLI must be told a host port: the engine cannot bind port 0 for it. Another
    # process may take it meanwhile; the assertions below then fail loudly, not silently.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_publish_reserves_the_host_port_until_rm(up: Engine) -> None:
    port = _unused_port()
    _ok(up.cli("run", "-d", "--name", "pub", "-p", f"127.0.0.1:{port}:80", up.rootfs,
               "sleep", "600"))
    detail = json.loads(_ok(up.cli("inspect", "pub")))[0]
    assert [port, 80] == [detail["spec"]["ports"][0][1], detail["spec"]["ports"][0][2]]
    assert not _can_bind(port), "the published port is free while the container lives"
    _ok(up.cli("rm", "-f", "pub"))
    wait_until(lambda: _can_bind(port), 30, what="the port freed after rm")
    # A port someone else holds fails the create with one clear sentence, nothing made.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        bad = up.cli("run", "-d", "--name", "clash", "-p", f"127.0.0.1:{taken}:80", up.rootfs,
                     "sleep", "600")
    assert bad.returncode != 0 and f"port 127.0.0.1:{taken}" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    assert json.loads(_ok(up.cli("ps", "-a", "--format", "json"))) == []


# -- checkpoint / restore ------------------------------------------------------------------


def _numbers(up: Engine, ref: str) -> list[int]:
    return [int(x) for x in _ok(up.cli("logs", ref)).split() if x.isdigit()]


def test_checkpoint_and_restore_from_the_cli_continue_the_process(up: Engine) -> None:
    if not os.path.exists(os.environ.get("BERTH_CRIU", "/opt/berth/criu/bin/criu")):
        pytest.skip("CRIU is not installed (scripts/install.sh installs it)")
    _ok(up.cli("run", "-d", "--name", "count", up.rootfs, "sh", "-c", COUNTER))
    wait_until(lambda: len(_numbers(up, "count")) >= 3, 30, what="the counter counting")
    _ok(up.cli("checkpoint", "count"))
    assert json.loads(_ok(up.cli("inspect", "count")))[0]["state"] == "exited"
    at_checkpoint = max(_numbers(up, "count"))
    _ok(up.cli("restore", "count"))
    assert json.loads(_ok(up.cli("inspect", "count")))[0]["state"] == "running"
    wait_until(lambda: max(_numbers(up, "count")) >= at_checkpoint + 3, 30,
               what="the counter going on after restore")
    after = _numbers(up, "count")
    # It went on from where it was: no second "1", every number once, in order.
    assert after.count(1) == 1
    assert after == list(range(1, len(after) + 1))
    _ok(up.cli("rm", "-f", "count"))


# -- ps columns ------------------------------------------------------------------------------


def test_every_ps_column_shows_the_right_value(up: Engine) -> None:
    before = datetime.now(UTC)
    running = _ok(up.cli("run", "-d", "--name", "col-run", up.rootfs, "sleep", "600")).strip()
    exited = _ok(up.cli("run", "-d", "--name", "col-exit", up.rootfs,
                        "sh", "-c", "exit 7")).strip()
    assert _ok(up.cli("wait", "col-exit")).strip() == "7"
    created = _ok(up.cli("create", "--name", "col-new", up.rootfs, "echo", "a b")).strip()
    lines = _ok(up.cli("ps", "-a")).splitlines()
    header = lines[0]
    names = ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES", "NODE"]
    assert re.split(r"\s{2,}", header) == names
    starts = [header.index(n) for n in names]
    rows = {}
    for line in lines[1:]:
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        rows[cells[6]] = cells
    assert set(rows) == {"col-run", "col-exit", "col-new"}
    elapsed = int((datetime.now(UTC) - before).total_seconds()) + 1
    for name, cid, status, command in (
            ("col-run", running, r"Up \d+s", "sleep 600"),
            ("col-exit", exited, r"Exited \(7\) \d+s ago", "sh -c exit 7"),
            ("col-new", created, r"Created", "echo a b")):
        row = rows[name]
        assert row[0] == cid[:12]
        assert row[1] == up.rootfs  # IMAGE: the root filesystem of a rootfs container
        assert row[7] == "local"
        assert re.fullmatch(status, row[4]), row
        m = re.fullmatch(r"(\d+)s ago", row[3])
        assert m is not None and int(m.group(1)) <= elapsed, row
        assert row[2] == command
        assert row[5] == ""  # PORTS: none published
    assert "col-new" not in _ok(up.cli("ps"))
