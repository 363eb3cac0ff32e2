"""``berth up``/``down`` as real processes: private state files, directories of another
user refused, a planted pid-file link never followed, one engine per ``$BERTH_RUN``."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from engine import events as ev
from engine.errors import BerthError
from engine.runtime import OCIRuntime
from engine.store.store import EventStore
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
                         os.path.join(place.root, "berth.stderr"),
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


# --------------------------------------------------------------------------- shutdown


def test_a_blocked_wait_is_answered_retry_when_the_worker_stops(up: Engine) -> None:
    """The wait is in flight at the worker (its link counted it); stopping the engine
    answers it at once with a retryable error and does not wait for the container.
    The broker's intake closes first, as ``berth down`` does: the worker hands the
    cancelled wait back, and a broker that stays up would hold it for the node's
    next worker (a rolling restart, tests/faults/test_rolling_restart.py) instead."""
    c = up.client()
    cid = c.create(rootfs=up.rootfs, args=["sleep", "1000"]).result["id"]
    c.start(cid)
    worker = up.worker
    assert worker is not None and worker.link is not None
    link = worker.link
    before = link.stats["commands"]
    waiting = subprocess.Popen([sys.executable, "-m", "berth", "wait", cid], env=up.env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: link.stats["commands"] > before, 30,
                   what="the wait at the worker")
        started = time.monotonic()
        up.broker.close_intake()  # as berth down's on_stop does
        worker.close()
        up.worker = None
        # An uncancelled wait would hold the close to its 10 s shutdown deadline; the
        # bound sits below that, not at what an idle machine takes (well under 1 s).
        assert time.monotonic() - started < 0.8 * worker.config.shutdown_timeout
        out, err = waiting.communicate(timeout=30)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert waiting.returncode == 125 and out == ""
    _one_line(err)
    assert "stopping" in err and "retry" in err, err
    store = up.store()
    try:
        assert store.get_container(cid).state == "running"  # the engine stop stops no container
    finally:
        store.close()


def _one_line(text: str) -> None:
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in text, text


def _inspect(place: Place, ref: str) -> dict[str, Any]:
    result = place.berth("inspect", ref)
    assert result.returncode == 0, result.stderr
    found: list[dict[str, Any]] = json.loads(result.stdout)
    return found[0]


def test_down_has_a_deadline_and_exits_landing_meanwhile_are_recorded(place: Place) -> None:
    """``down`` while a stop with a long timeout is under way: the worker refuses new
    commands, lets the stop run until its deadline, then leaves (it used to hang on the
    command's thread). An exit that lands while it stops is recorded before it stops;
    one that lands after it stopped is recorded by the next start's reconciliation."""
    assert place.berth("up", "-d").returncode == 0
    stubborn = place.berth("run", "-d", place.rootfs, "sh", "-c",
                           "trap '' TERM; while true; do sleep 0.1; done").stdout.strip()
    during = place.berth("run", "-d", place.rootfs, "sleep", "1000").stdout.strip()
    after = place.berth("run", "-d", place.rootfs, "sleep", "1000").stdout.strip()
    during_pid = _inspect_pid(place, during)
    stop = place.start("stop", "-t", "300", stubborn)
    db = f"sqlite:///{place.root}/berth.db"
    try:
        store = EventStore(db)
        try:
            wait_until(lambda: "container.stop_requested" in
                       [r.type for r in store.read_stream(stubborn)], 30, what="stop under way")
        finally:
            store.close()
        down = place.start("down")
        wait_until(lambda: "stopping" in place.berth("ps").stderr, 30, what="intake closed")
        os.kill(during_pid, signal.SIGKILL)  # lands while the worker drains
        down_out, down_err = down.communicate(timeout=60)
        assert down.returncode == 0 and "berth is down" in down_out, (down_out, down_err)
        _, stop_err = stop.communicate(timeout=60)
        assert stop.returncode == 125 and "stopped before this command finished" in stop_err, \
            stop_err
    finally:
        for proc in (stop,):
            if proc.poll() is None:
                proc.kill()
    store = EventStore(db)
    try:
        exited = [r.event for r in store.read_stream(during) if isinstance(r.event, ev.Exited)]
        assert [e.exit_code for e in exited] == [137]  # recorded before the worker stopped
        assert store.get_container(stubborn).state == "running"
        after_pid = store.get_container(after).pid
    finally:
        store.close()
    assert after_pid is not None
    os.kill(after_pid, signal.SIGKILL)  # no worker runs: its exit file waits
    wait_until(functools.partial(_gone, after_pid), 10, what="process gone")
    assert place.berth("up", "-d").returncode == 0
    waited = place.berth("wait", after)
    assert (waited.returncode, waited.stdout.strip()) == (0, "137"), waited.stderr
    for cid in (stubborn, during, after):
        assert place.berth("rm", "-f", cid).returncode == 0


def _inspect_pid(place: Place, ref: str) -> int:
    pid = _inspect(place, ref)["pid"]
    assert isinstance(pid, int)
    return pid


def test_an_attached_run_rm_cut_off_by_the_shutdown_says_what_it_left(up: Engine) -> None:
    """The engine stopping under an attached ``run --rm`` ends it at once with one
    sentence that names the container it could not remove (it keeps running)."""
    worker = up.worker
    assert worker is not None
    attached = subprocess.Popen(
        [sys.executable, "-m", "berth", "run", "--rm", "--name", "fg", up.rootfs, "sh", "-c",
         "echo started; sleep 1000"], env=up.env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        store = up.store()
        try:
            wait_until(lambda: [s for s in store.list_containers() if s.name == "fg"
                                and s.state == "running"], 30, what="the attached run")
            cid = store.resolve("fg")
        finally:
            store.close()
        worker.close()
        up.worker = None
        out, err = attached.communicate(timeout=30)
    finally:
        if attached.poll() is None:
            attached.kill()
    # Whether the CLI had fetched "started" before the worker went is a race; what
    # is asserted is that nothing else was printed and the sentence below.
    assert attached.returncode == 125 and out in ("", "started\n"), (out, err)
    _one_line(err)
    assert f"container {cid[:12]} may keep running" in err, err
    assert f"berth rm -f {cid[:12]}" in err, err  # what to do about what it left


def test_the_engine_log_shows_identities_in_hex_and_no_library_chatter(place: Place) -> None:
    """Regression: berth.log printed worker identities as Python bytes (b'\\x00...') and
    every Alembic migration step at INFO."""
    assert place.berth("up", "-d").returncode == 0
    assert place.berth("down", timeout=60).returncode == 0
    with open(os.path.join(place.root, "berth.log")) as f:
        text = f.read()
    assert "berth up: node local" in text  # berth's own INFO lines are there
    assert "alembic" not in text
    ready = [line for line in text.splitlines() if "ready for node local" in line]
    assert ready and all("b'" not in line for line in ready), ready
    assert re.search(r"worker [0-9a-f]{10} ready for node local", ready[0]), ready
