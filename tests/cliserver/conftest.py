"""The front end and the command server against a real engine (tests/e2e's broker,
worker and store): the C front end built from frontend/berth.c for this test run,
a real ``berth cli-server`` process, real containers.

The front end built here runs the plain CLI through ``python-fallback``, a script
that notes each fallback in a file before it execs Python, so a test can say
whether a command went through the server or fell back.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO, Engine, engine, up  # noqa: F401
from tests.helpers import wait_until

CLI = Callable[..., "subprocess.CompletedProcess[str]"]


@dataclass
class FrontEnd:
    binary: str
    fallbacks: str
    """One line per command the front end handed to the plain Python CLI."""

    def fell_back(self) -> list[str]:
        try:
            with open(self.fallbacks) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def forget(self) -> None:
        try:
            os.unlink(self.fallbacks)
        except FileNotFoundError:
            pass


@pytest.fixture(scope="session")
def front_end() -> Iterator[FrontEnd]:
    """frontend/berth.c built as scripts/install.sh builds it (-Wall -Wextra -Werror)."""
    # Open to every user: the other-uid test runs it as nobody.
    d = Path(tempfile.mkdtemp(prefix="berth-frontend-", dir="/tmp"))
    d.chmod(0o755)
    fallbacks = str(d / "fallbacks")
    python = d / "python-fallback"
    python.write_text(f'#!/bin/sh\necho "$*" 2>/dev/null >> {fallbacks}\n'
                      f'exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    binary = str(d / "berth")
    subprocess.run(["cc", "-O2", "-Wall", "-Wextra", "-Werror",
                    f'-DBERTH_PYTHON="{python}"', "-o", binary,
                    os.path.join(REPO, "frontend", "berth.c")], check=True)
    try:
        yield FrontEnd(binary, fallbacks)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def default_network() -> str | None:  # noqa: F811
    return "none"


class Served:
    """A ``berth cli-server`` process for an engine, its log in a file."""

    def __init__(self, eng: Engine, front: FrontEnd) -> None:
        self.engine = eng
        self.front = front
        self.path = os.path.join(eng.run, "cli.sock")
        self.log = os.path.join(os.path.dirname(eng.root), "cli-server.log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Served:
        os.makedirs(self.engine.run, mode=0o700, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "berth", "cli-server"],
                                         env=self.engine.env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log)
        wait_until(self.accepts, 30, interval=0.05, what="the command server listening")
        return self

    def accepts(self) -> bool:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(self.path)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def log_text(self) -> str:
        with open(self.log) as f:
            return f.read()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cli(self, *args: str, timeout: float = 60, input: bytes | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """``berth ARGS`` through the front end."""
        return subprocess.run([self.front.binary, *args], env=env or self.engine.env,
                              capture_output=True, text=True, timeout=timeout,
                              input=None if input is None else input.decode(), check=False)


@pytest.fixture
def served(up: Engine, front_end: FrontEnd) -> Iterator[Served]:  # noqa: F811
    """The engine with a command server beside it."""
    front_end.forget()
    server = Served(up, front_end).start()
    try:
        yield server
    finally:
        server.stop()
        front_end.forget()


@pytest.fixture(params=["front end", "python"])
def berth(request: pytest.FixtureRequest, served: Served) -> CLI:
    """``berth ARGS`` through the front end and its server (and never a fallback), or
    through the plain Python CLI: the same test runs both ways."""
    if request.param == "python":
        return served.engine.cli

    def through_server(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        result = served.cli(*args, **kw)  # type: ignore[arg-type]
        assert served.front.fell_back() == [], "the front end ran the plain CLI"
        return result

    return through_server
