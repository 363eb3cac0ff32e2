"""Service units: sd_notify readiness from the real processes, and unit files that
systemd accepts. Running them under systemd needs systemd as PID 1."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from berth import sdnotify
from tests.e2e.test_daemon import Place
from tests.helpers import systemd_is_pid1
from workers.worker import Worker, WorkerConfig

REPO = Path(__file__).resolve().parents[2]


class Manager:
    """The service manager's end of NOTIFY_SOCKET: a real datagram socket."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path.replace("@", "\0", 1) if path.startswith("@") else path)
        self.sock.settimeout(60)

    def message(self) -> str:
        return self.sock.recv(4096).decode()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def manager(place: Place) -> Iterator[Manager]:
    m = Manager(os.path.join(os.path.dirname(place.root), "notify.sock"))
    yield m
    m.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_nothing_is_sent_without_a_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "relative/path")
    assert sdnotify.notify("READY=1") is False


def test_the_abstract_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"@berth-test-{os.getpid()}"
    m = Manager(name)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", name)
        assert sdnotify.notify("READY=1") is True
        assert m.message() == "READY=1"
    finally:
        m.close()


def test_broker_and_worker_say_ready_then_stopping(place: Place, manager: Manager) -> None:
    bus = f"ipc://{place.run}-bus.sock"
    env = dict(place.env, NOTIFY_SOCKET=manager.path, BERTH_BUS=bus)
    broker = subprocess.Popen([sys.executable, "-m", "berth", "broker"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert manager.message() == "READY=1\nSTATUS=routing"
        worker = subprocess.Popen([sys.executable, "-m", "berth", "worker", "--node", "h1",
                                   "--connect", f"ipc://{place.run}-worker.sock"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert manager.message() == "READY=1\nSTATUS=serving node h1"
            worker.send_signal(signal.SIGTERM)
            assert manager.message() == "STOPPING=1"
            assert worker.wait(30) == 0
        finally:
            _stop(worker)
        broker.send_signal(signal.SIGTERM)
        assert manager.message() == "STOPPING=1"
        assert broker.wait(30) == 0
    finally:
        _stop(broker)


def test_a_stop_signal_landing_inside_the_stop_events_lock_still_stops(
        place: Place, monkeypatch: pytest.MonkeyPatch) -> None:
    """A regression: the handler used to set a ``threading.Event``; a SIGTERM that
    lands while the main thread holds that event's lock (inside ``wait``, right after
    READY) deadlocked the worker, which then never said STOPPING (seen in CI)."""
    worker = Worker(WorkerConfig(node="h1", root=place.root, run=place.run,
                                 default_network="none"))
    lock = worker._stopped._cond  # type: ignore[attr-defined]  # what Event.wait holds

    def start() -> None:
        with lock:  # the signal's handler runs here, on this thread
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(100):  # bytecodes for the pending handler to run between
                pass

    monkeypatch.setattr(worker, "start", start)
    monkeypatch.setattr(worker, "close", worker.store.close)
    said: list[str] = []
    before = signal.getsignal(signal.SIGTERM)
    previous = signal.getsignal(signal.SIGALRM)
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("deadlock")))
    signal.alarm(20)
    try:
        worker.serve_forever(on_ready=lambda: said.append("ready"),
                             on_stop=lambda: said.append("stopping"))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert said == ["ready", "stopping"]
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back


def test_a_stop_signal_taken_by_another_thread_still_stops_the_worker(
        place: Place, monkeypatch: pytest.MonkeyPatch) -> None:
    """A regression: the kernel hands a SIGTERM sent to the process to any of its
    threads, under load often a command thread. Then only the C-level handler ran
    there, and the main thread slept on in its read of the wake-up pipe: a worker
    stopped during a rolling restart kept serving until a second signal (1 in 5
    runs of tests/faults/test_rolling_restart.py). Here the signal is sent to a
    thread other than the main one, which is never interrupted by it."""
    worker = Worker(WorkerConfig(node="h1", root=place.root, run=place.run,
                                 default_network="none"))

    def signal_from_another_thread() -> None:
        time.sleep(0.5)  # the main thread is asleep in serve_forever by now
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

    monkeypatch.setattr(worker, "start", lambda: None)
    monkeypatch.setattr(worker, "close", worker.store.close)
    said: list[str] = []
    other = threading.Thread(target=signal_from_another_thread)
    previous = signal.getsignal(signal.SIGALRM)
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("not woken")))
    signal.alarm(10)
    try:
        worker.serve_forever(on_ready=other.start, on_stop=lambda: said.append("stopping"))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        other.join()
    assert said == ["stopping"]


def test_a_signal_other_than_a_stop_signal_does_not_stop_the_worker(
        place: Place, monkeypatch: pytest.MonkeyPatch) -> None:
    """The wake-up pipe also receives the number of any other signal that has a
    Python handler in the process; only SIGTERM and SIGINT (or ``stop()``) end
    ``serve_forever``."""
    worker = Worker(WorkerConfig(node="h1", root=place.root, run=place.run,
                                 default_network="none"))
    seen: list[int] = []

    def signals() -> None:
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGUSR2)
        time.sleep(0.3)
        seen.append(len(said))  # still serving after SIGUSR2
        worker.stop()

    monkeypatch.setattr(worker, "start", lambda: None)
    monkeypatch.setattr(worker, "close", worker.store.close)
    said: list[str] = []
    other = threading.Thread(target=signals)
    previous = signal.signal(signal.SIGUSR2, lambda *_: None)
    try:
        worker.serve_forever(on_ready=other.start, on_stop=lambda: said.append("stopping"))
    finally:
        signal.signal(signal.SIGUSR2, previous)
        other.join()
    assert seen == [0] and said == ["stopping"]


def test_a_second_stop_signal_while_the_worker_closes_is_absorbed(
        place: Place, monkeypatch: pytest.MonkeyPatch) -> None:
    """A service manager may repeat SIGTERM while the worker closes; the worker's own
    handler stays in place until it has closed (before, the default action killed it
    half-way; here it would kill the test's process)."""
    worker = Worker(WorkerConfig(node="h1", root=place.root, run=place.run,
                                 default_network="none"))
    closed: list[bool] = []

    def close() -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # the repeat, during the close
        for _ in range(1000):  # bytecodes for the pending handler to run between
            pass
        worker.store.close()
        closed.append(True)

    monkeypatch.setattr(worker, "start", lambda: None)
    monkeypatch.setattr(worker, "close", close)
    worker.stop()  # before serve_forever: not lost
    worker.serve_forever()
    assert closed == [True]


def test_the_embedded_engine_says_ready_once_it_serves(place: Place, manager: Manager) -> None:
    env = dict(place.env, NOTIFY_SOCKET=manager.path)
    up = subprocess.Popen([sys.executable, "-m", "berth", "up"], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert manager.message() == "READY=1\nSTATUS=serving node local"
        ps = place.berth("ps")
        assert ps.returncode == 0, ps.stderr  # ready meant serving
        up.send_signal(signal.SIGTERM)
        assert manager.message() == "STOPPING=1"
        assert up.wait(30) == 0
    finally:
        _stop(up)


def test_the_installed_units_are_accepted_by_systemd(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze (package systemd) is missing"
    berth = os.path.join(sys.prefix, "bin", "berth")
    done = subprocess.run([str(REPO / "scripts" / "install-units.sh"), "--dest", str(tmp_path),
                           "--berth", berth], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    units = sorted(p.name for p in tmp_path.iterdir())
    assert units == ["berth-broker.service", "berth-worker@.service", "berth.service"]
    worker = (tmp_path / "berth-worker@.service").read_text()
    assert f"ExecStart={berth} worker --node %i" in worker and "KillMode=process" in worker
    shutil.copy(tmp_path / "berth-worker@.service", tmp_path / "berth-worker@h1.service")
    checked = subprocess.run(
        [analyze, "verify", "--man=no", str(tmp_path / "berth.service"),
         str(tmp_path / "berth-broker.service"), str(tmp_path / "berth-worker@h1.service")],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path)
    assert checked.returncode == 0 and checked.stderr == "", checked.stderr
    refused = subprocess.run([str(REPO / "scripts" / "install-units.sh"), "--dest",
                              str(tmp_path / "x"), "--berth", "relative/berth"],
                             capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2 and "must be an absolute path" in refused.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(not systemd_is_pid1(),
                    reason="starting the units needs systemd as PID 1, which this machine "
                           "(a container) does not run")
def test_the_units_start_under_systemd() -> None:
    installed = subprocess.run([str(REPO / "scripts" / "install-units.sh"), "--berth",
                                os.path.join(sys.prefix, "bin", "berth")], timeout=120,
                               check=False)
    assert installed.returncode == 0
    done = subprocess.run(["systemctl", "start", "berth.service"], capture_output=True,
                          text=True, timeout=120, check=False)
    try:
        assert done.returncode == 0, done.stderr
        active = subprocess.run(["systemctl", "is-active", "berth.service"],
                                capture_output=True, text=True, timeout=60, check=False)
        assert active.stdout.strip() == "active"
    finally:
        subprocess.run(["systemctl", "stop", "berth.service"], timeout=120, check=False)
