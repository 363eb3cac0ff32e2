"""Every command works without the server: none there, turned off, or a command that
runs a server itself; ``berth up`` brings its own command server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.cliserver.conftest import FrontEnd, Served
from tests.e2e.conftest import Engine
from tests.helpers import wait_until


def test_without_a_server_the_plain_cli_runs_it(up: Engine, front_end: FrontEnd) -> None:
    front_end.forget()
    result = subprocess.run([front_end.binary, "run", "--rm", up.rootfs, "sh", "-c", "exit 4"],
                            env=up.env, capture_output=True, text=True, timeout=60, check=False)
    assert (result.returncode, result.stderr) == (4, "")
    assert front_end.fell_back() == [f"-P -m berth run --rm {up.rootfs} sh -c exit 4"]
    front_end.forget()


def test_turned_off_and_server_commands_go_to_python(served: Served) -> None:
    off = served.cli("ps", env=dict(served.engine.env, BERTH_CLI_SERVER="0"))
    assert off.returncode == 0
    db = served.cli("--timeout", "3", "db", "--help")
    assert db.returncode == 0 and "usage: berth db" in db.stdout
    again = served.cli("cli-server")  # the server's socket is taken: one sentence
    assert again.returncode == 1
    assert again.stderr.strip() == f"berth: a berth command server already serves {served.path}"
    assert served.front.fell_back() == ["-P -m berth ps", "-P -m berth --timeout 3 db --help",
                                        "-P -m berth cli-server"]


def _cli_servers(parent: int) -> list[int]:
    pids = []
    for task in os.listdir(f"/proc/{parent}/task"):  # a thread's children are its own
        try:
            with open(f"/proc/{parent}/task/{task}/children") as f:
                pids += [int(p) for p in f.read().split()]
        except FileNotFoundError:
            pass
    found = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"cli-server" in f.read():
                    found.append(pid)
        except FileNotFoundError:
            pass
    return found


def test_berth_up_serves_commands_and_takes_its_server_down(
        short_tmp: str, front_end: FrontEnd) -> None:
    env = dict(os.environ, BERTH_ROOT=f"{short_tmp}/root", BERTH_RUN=f"{short_tmp}/run",
               BERTH_DEFAULT_NETWORK="none")
    for key in ("BERTH_BUS", "BERTH_BUS_WORKERS", "BERTH_BUS_EVENTS", "BERTH_DB"):
        env.pop(key, None)
    front_end.forget()
    with open(f"{short_tmp}/up.log", "wb") as log:
        engine = subprocess.Popen([sys.executable, "-m", "berth", "up"], env=env,
                                  stdout=log, stderr=log)
    sock = f"{short_tmp}/run/cli.sock"
    try:
        wait_until(lambda: os.path.exists(sock), 60, interval=0.05, what="cli.sock")

        def served_ps() -> bool:
            front_end.forget()
            r = subprocess.run([front_end.binary, "ps", "--format", "json"], env=env,
                               capture_output=True, text=True, timeout=60, check=False)
            return r.returncode == 0 and json.loads(r.stdout) == [] and not front_end.fell_back()

        wait_until(served_ps, 60, interval=0.2, what="a command through berth up's server")
        assert os.stat(sock).st_mode & 0o777 == 0o600
        # killed, it is replaced: commands go through a new server again
        (first,) = _cli_servers(engine.pid)
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: _cli_servers(engine.pid) not in ([], [first]), 30, interval=0.05,
                   what="a new command server")
        wait_until(served_ps, 60, interval=0.2, what="a command through the new server")
    finally:
        engine.terminate()
        engine.wait(60)
    deadline = time.monotonic() + 10
    while os.path.exists(sock) and time.monotonic() < deadline:
        time.sleep(0.05)
    with open(f"{short_tmp}/up.log") as f:
        assert not os.path.exists(sock), f.read()
    front_end.forget()


def test_another_interpreter_setting_runs_the_plain_cli(served: Served) -> None:
    # PYTHON* variables shape the interpreter the plain CLI would start (its module
    # path, its warnings); the server's was started with its own.
    env = dict(served.engine.env, PYTHONWARNINGS="error::DeprecationWarning")
    result = served.cli("ps", "--format", "json", env=env)
    assert result.returncode == 0 and json.loads(result.stdout) == []
    assert served.front.fell_back() == ["-P -m berth ps --format json"]


_SUPERVISE = """
import sys, time
from berth.cliserver import supervisor
supervised = supervisor.spawn()
print(supervised.proc.pid, flush=True)
time.sleep(120)
"""


def test_a_server_whose_berth_up_was_killed_9_ends_instead_of_living_on(tmp_path: Path) -> None:
    """``berth up`` killed -9 cannot stop its command server: the server notices its
    parent is gone and ends (before, it lived on as an orphan for good, one more per
    engine killed)."""
    run = tmp_path / "run"
    env = {**os.environ, "BERTH_RUN": str(run), "BERTH_CLI_SERVER": "1"}
    up = subprocess.Popen([sys.executable, "-c", _SUPERVISE], env=env, stdout=subprocess.PIPE,
                          text=True)
    assert up.stdout is not None
    server = int(up.stdout.readline())
    try:
        wait_until(lambda: (run / "cli.sock").exists(), 30, what="the server listening")
        up.kill()
        up.wait()
        wait_until(lambda: not _alive(server), 10, what="the orphaned server ending")
        assert not (run / "cli.sock").exists()
    finally:
        if _alive(server):
            os.kill(server, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
