"""``berth run -it`` through the front end on a real terminal (tmux): typing, a
resize, ctrl-c inside the container, the detach keys, and the exit code."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from tests.cliserver.conftest import Served
from tests.helpers import wait_until


class Tmux:
    """A private tmux server (its own socket) with one window running a command."""

    def __init__(self, env: dict[str, str]) -> None:
        self.name = f"berth-{uuid.uuid4().hex[:8]}"
        self.env = env

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.name, "-f", "/dev/null", *args],
                              env=self.env, capture_output=True, text=True, check=True,
                              timeout=30).stdout

    def start(self, command: str, cols: int = 80, rows: int = 24) -> None:
        self.tmux("new-session", "-d", "-x", str(cols), "-y", str(rows), "-s", "t", command)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "t")

    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen().splitlines()]

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "t", *keys)

    def see(self, line: str, timeout: float = 20) -> None:
        try:
            wait_until(lambda: line in self.lines(), timeout, interval=0.05,
                       what=f"{line!r} on the terminal")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the terminal shows:\n{self.screen()}") from None

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.name, "kill-server"], env=self.env,
                       capture_output=True, check=False, timeout=30)


@pytest.fixture
def tmux(served: Served) -> Iterator[Tmux]:
    t = Tmux(dict(served.engine.env, TERM="xterm", PS1="$ "))
    try:
        yield t
    finally:
        t.close()


def _command(served: Served, *args: str) -> str:
    berth = " ".join(shlex.quote(a) for a in (served.front.binary, *args))
    return f"{berth}; echo EXIT=$?; sleep 600"


def test_typing_resize_ctrl_c_and_the_exit_code(served: Served, tmux: Tmux) -> None:
    tmux.start(_command(served, "run", "-it", "--rm", "--name", "tty", "-e", "PS1=# ",
                        served.engine.rootfs, "sh"))
    wait_until(lambda: "#" in tmux.screen(), 30, what="the prompt")
    tmux.keys("echo hel''lo", "Enter")
    tmux.see("hello")
    tmux.keys("stty size", "Enter")
    tmux.see("24 80")
    tmux.tmux("resize-window", "-t", "t", "-x", "120", "-y", "40")
    tmux.keys("stty size", "Enter")
    tmux.see("40 120")
    tmux.keys("sleep 300; echo not-interrupted", "Enter")
    # ctrl-c once the sleep runs (sooner, it would only cut the line being read)
    wait_until(lambda: served.engine.cli("exec", "tty", "pidof", "sleep").returncode == 0, 20,
               interval=0.1, what="the sleep running")
    tmux.keys("C-c")
    tmux.keys("echo after-ctrl-c", "Enter")
    tmux.see("after-ctrl-c", 10)
    assert "not-interrupted" not in tmux.lines()
    tmux.keys("exit 3", "Enter")
    tmux.see("EXIT=3")
    assert served.front.fell_back() == []


def test_the_detach_keys_leave_the_container_running(served: Served, tmux: Tmux) -> None:
    tmux.start(_command(served, "run", "-it", "--name", "det", "-e", "PS1=# ",
                        served.engine.rootfs, "sh"))
    wait_until(lambda: "#" in tmux.screen(), 30, what="the prompt")
    tmux.keys("C-p", "C-q")
    tmux.see("EXIT=0")
    ps = json.loads(served.engine.cli("ps", "--format", "json").stdout)
    assert [(c["name"], c["state"]) for c in ps] == [("det", "running")]
    assert served.front.fell_back() == []
    assert os.path.exists(served.path)


def test_ctrl_z_stops_the_command_and_fg_continues_it(served: Served, tmux: Tmux) -> None:
    tmux.start("bash --norc --noprofile -i")
    wait_until(lambda: "bash" in tmux.screen(), 30, what="bash's prompt")
    berth = shlex.quote(served.front.binary)
    tmux.keys(f"{berth} run --rm {shlex.quote(served.engine.rootfs)} sh -c "
              "'echo started; sleep 3; echo woke'; echo EXIT=$?", "Enter")
    tmux.see("started")
    tmux.keys("C-z")
    wait_until(lambda: any("Stopped" in line for line in tmux.lines()), 20, interval=0.05,
               what="the job stopped")
    assert served.proc is not None
    with open(f"/proc/{served.proc.pid}/task/{served.proc.pid}/children") as f:
        (child,) = f.read().split()
    with open(f"/proc/{child}/stat") as f:
        assert f.read().rsplit(")", 1)[1].split()[0] == "T"  # the command stopped too
    tmux.see("EXIT=148")  # bash saw a SIGTSTP stop, as with the plain CLI
    tmux.keys("fg", "Enter")
    tmux.see("woke")
    tmux.keys("echo FG=$?", "Enter")
    tmux.see("FG=0")
    assert served.front.fell_back() == []
