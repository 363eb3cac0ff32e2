"""``berth up``/``down`` as real processes: private state files, directories of another
user refused, a planted pid-file link never followed, one engine per ``$BERTH_RUN``."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from engine.errors import BerthError
from engine.runtime import OCIRuntime
from tests.e2e.conftest import REPO, Engine
from tests.helpers import wait_until
from workers.worker import WorkerConfig

NOBODY = 65534


@dataclass
class Place:
    root: str
    run: str
    rootfs: str

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
        env.update(BERTH_ROOT=self.root, BERTH_RUN=self.run, PYTHONPATH=REPO)
        return env

    def berth(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "berth", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "berth", *args], env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def engine_pid(self) -> int | None:
        try:
            with open(os.path.join(self.run, "berth.pid")) as f:
                return int(f.read())
        except (OSError, ValueError):
            return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _gone(pid: int) -> bool:
    return not _alive(pid)


@pytest.fixture
def place(short_tmp: str, busybox_rootfs: str) -> Iterator[Place]:
    p = Place(os.path.join(short_tmp, "root"), os.path.join(short_tmp, "run"), busybox_rootfs)
    try:
        yield p
    finally:
        pid = p.engine_pid()
        p.berth("down", timeout=60)
        if pid is not None and _alive(pid):  # the engine we started, if down failed
            os.kill(pid, signal.SIGKILL)
        containers = os.path.join(p.root, "containers")
        if os.path.isdir(containers):
            runtime = OCIRuntime(WorkerConfig(node="local", root=p.root, run=p.run)
                                 .runtime_config())
            for cid in os.listdir(containers):
                with contextlib.suppress(BerthError):
                    runtime.delete(cid, force=True)
                runtime.cleanup(cid)


def _mode(path: str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_state_is_private_even_in_directories_made_beforehand(place: Place) -> None:
    os.makedirs(place.root, mode=0o755)
    os.makedirs(place.run, mode=0o755)
    os.chmod(place.root, 0o755)
    os.chmod(place.run, 0o755)
    up = place.berth("up", "-d")
    assert up.returncode == 0, up.stderr
    secret = place.berth("run", "-d", "-e", "SECRET=hunter2", place.rootfs, "sleep", "60")
    assert secret.returncode == 0, secret.stderr
    assert _mode(place.root) == 0o700 and _mode(place.run) == 0o700
    files = [os.path.join(place.root, n) for n in os.listdir(place.root)
             if n.startswith("berth.db")]
    assert {os.path.basename(f) for f in files} >= {"berth.db", "berth.db-wal"}
    for path in files + [os.path.join(place.root, "berth.log"),
                         os.path.join(place.run, "berth.pid")]:
        assert _mode(path) & 0o077 == 0, (path, oct(_mode(path)))


def test_a_database_left_readable_is_made_private(place: Place) -> None:
    assert place.berth("up", "-d").returncode == 0
    assert place.berth("down").returncode == 0
    for name in os.listdir(place.root):
        if name.startswith("berth.db"):
            os.chmod(os.path.join(place.root, name), 0o644)
    assert place.berth("up", "-d").returncode == 0
    for name in os.listdir(place.root):
        if name.startswith("berth.db"):
            assert _mode(os.path.join(place.root, name)) == 0o600, name


@pytest.mark.parametrize("which", ["root", "run"])
def test_a_directory_of_another_user_is_refused(place: Place, which: str) -> None:
    path = getattr(place, which)
    os.makedirs(path, mode=0o700)
    os.chown(path, NOBODY, NOBODY)
    for args in (("up",), ("up", "-d")):
        result = place.berth(*args)
        assert result.returncode != 0, (args, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and f"owned by uid {NOBODY}" in lines[0], result.stderr
        assert "Traceback" not in result.stderr
    assert place.engine_pid() is None
    assert os.stat(path).st_uid == NOBODY


def test_a_pid_file_that_is_a_link_is_not_followed(place: Place, short_tmp: str) -> None:
    victim = os.path.join(short_tmp, "victim")
    with open(victim, "w") as f:
        f.write("precious\n")
    os.makedirs(place.run, mode=0o700)
    os.symlink(victim, os.path.join(place.run, "berth.pid"))
    result = place.berth("up")
    assert result.returncode != 0
    assert "symbolic link" in result.stderr and "Traceback" not in result.stderr, result.stderr
    with open(victim) as f:
        assert f.read() == "precious\n"
    assert not os.path.exists(os.path.join(place.run, "bus.sock"))  # nothing started


def test_two_concurrent_up_start_exactly_one_engine(place: Place) -> None:
    for _ in range(3):
        first, second = place.start("up", "-d"), place.start("up", "-d")
        outs = [p.communicate(timeout=90) for p in (first, second)]
        assert [p.returncode for p in (first, second)] == [0, 0], outs
        said = sorted(out.strip() for out, _ in outs)
        pid = place.engine_pid()
        assert pid is not None and _alive(pid)
        assert said[0].startswith("berth is already up (pid ") and said[0].endswith(f"{pid})")
        assert said[1].startswith(f"berth is up (pid {pid},"), said
        down = place.berth("down")
        assert down.returncode == 0 and "berth is down" in down.stdout, down.stderr
        wait_until(functools.partial(_gone, pid), 10, what="engine gone")
        assert place.berth("down").stdout.strip() == "berth is not running"


def test_a_killed_engine_leaves_a_stale_pid_that_is_not_believed(place: Place) -> None:
    assert place.berth("up", "-d").returncode == 0
    pid = place.engine_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not _alive(pid), 10, what="engine killed")
    assert place.berth("down").stdout.strip() == "berth is not running"
    up = place.berth("up", "-d")
    assert up.returncode == 0 and up.stdout.startswith("berth is up (pid "), up.stdout


def test_the_attach_socket_entry_goes_with_the_container(up: Engine) -> None:
    sockets = up.config().runtime_config().sockets_dir
    c = up.client()
    cid = c.create(rootfs=up.rootfs, args=["sleep", "60"]).result["id"]
    c.start(cid)
    entry = os.path.join(sockets, cid)
    assert os.path.lexists(entry)
    c.remove(cid, force=True)
    assert not os.path.lexists(entry)
