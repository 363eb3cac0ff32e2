"""Prometheus metrics and readiness, scraped over HTTP from real engine processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from bus.metrics import listen_address
from engine.errors import InvalidArgument
from tests.e2e.test_daemon import Place
from tests.helpers import wait_until

_SERVING = re.compile(r"metrics on (http://[\d.]+:\d+)/metrics")


def _address_in(log_path: str) -> str | None:
    try:
        with open(log_path) as f:
            found = _SERVING.findall(f.read())
    except FileNotFoundError:
        return None
    return found[-1] if found else None


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, raw = head.partition("{")
        if metric != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', raw))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return 0.0


@pytest.mark.parametrize("text", ["nope", "127.0.0.1", ":9464", "127.0.0.1:99999",
                                  "example.com:80", "127.0.0.1:x", "1.2.3.4:80\0"])
def test_a_bad_metrics_address_is_one_sentence(text: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^invalid metrics (address|port) .*"):
        listen_address(text)


def test_metrics_addresses_accepted() -> None:
    assert listen_address("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert listen_address("[::1]:0") == ("::1", 0)
    assert listen_address("localhost:1") == ("localhost", 1)


def test_the_embedded_engine_reports_commands_containers_and_exits(place: Place) -> None:
    bad = place.berth("up", "-d", "--metrics", "nowhere")
    assert bad.returncode == 125 and bad.stderr.count("\n") == 1, bad.stderr
    assert "invalid metrics address 'nowhere'" in bad.stderr
    assert place.engine_pid() is None, "a refused address started an engine"

    up = place.berth("up", "-d", "--metrics", "127.0.0.1:0")
    assert up.returncode == 0, up.stderr
    base = _address_in(os.path.join(place.root, "berth.log"))
    assert base is not None, "the engine did not say where its metrics are"
    assert _get(f"{base}/ready") == (200, "ready\n")
    for _ in range(2):
        done = place.berth("run", "--rm", place.rootfs, "true")
        assert done.returncode == 0, done.stderr
    running = place.berth("run", "-d", place.rootfs, "sleep", "60")
    assert running.returncode == 0, running.stderr
    refused = place.berth("stop", "no-such-container")
    assert refused.returncode != 0

    status, text = _get(f"{base}/metrics")
    assert status == 200
    # an attached run --rm is one container.run command; run -d a create and a start
    for source in ("berth_broker_commands_total", "berth_worker_commands_total"):
        assert _sample(text, source, type="container.run", outcome="ok") == 2
        assert _sample(text, source, type="container.create", outcome="ok") == 1
    assert _sample(text, "berth_worker_commands_total", type="container.stop",
                   outcome="not_found") == 1
    assert _sample(text, "berth_worker_command_seconds_count", type="container.start") == 1
    assert _sample(text, "berth_broker_workers", node="local") == 1
    assert _sample(text, "berth_worker_containers", state="running") == 1
    assert _sample(text, "berth_worker_exit_recording_seconds_count") >= 2
    assert _sample(text, "berth_log_position") > 0
    assert _sample(text, "berth_worker_events_appended_total") == _sample(
        text, "berth_log_position")  # this engine's worker wrote the whole log
    # at least: two runs, a create, a start and the refused stop
    assert _sample(text, "berth_broker_events_total", event="commands_received") >= 5
    assert _get(f"{base}/nothing")[0] == 404


@pytest.fixture
def lone_worker(place: Place) -> Iterator[tuple[subprocess.Popen[bytes], str, str]]:
    """A worker process with metrics whose broker is not there yet."""
    backend = f"ipc://{place.run}-workers.sock"
    log_path = os.path.join(os.path.dirname(place.root), "worker.log")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "berth", "worker", "--node", "n1", "--connect", backend,
             "--metrics", "127.0.0.1:0"], env=place.env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        yield proc, backend, log_path
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def test_a_worker_is_ready_only_once_its_broker_answers(
        place: Place, lone_worker: tuple[subprocess.Popen[bytes], str, str]) -> None:
    proc, backend, log_path = lone_worker
    wait_until(lambda: _address_in(log_path) is not None, 60, what="worker metrics served")
    base = _address_in(log_path)
    status, why = _get(f"{base}/ready")
    assert (status, why) == (503, "not ready: the worker is not connected to the broker\n")
    assert _get(f"{base}/live") == (200, "alive\n")
    broker = subprocess.Popen(
        [sys.executable, "-m", "berth", "broker", "--bind", f"ipc://{place.run}-front.sock",
         "--workers-bind", backend, "--events-bind", f"ipc://{place.run}-events.sock"],
        env=place.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _get(f"{base}/ready")[0] == 200, 30, what="worker ready")
        assert proc.poll() is None
    finally:
        broker.send_signal(signal.SIGTERM)
        broker.wait(20)


def _threads_and_fds(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/status") as f:
        threads = next(int(line.split()[1]) for line in f if line.startswith("Threads:"))
    return threads, len(os.listdir(f"/proc/{pid}/fd"))


def test_idle_connections_cost_a_bounded_number_of_threads_and_are_closed(
        place: Place, lone_worker: tuple[subprocess.Popen[bytes], str, str]) -> None:
    """300 connections that never send a request (3000 once cost 3020 threads and 3042
    descriptors until the client went): at most MAX_CONNECTIONS are served at once, one
    more is answered 503 at once, and each is closed REQUEST_TIMEOUT after it came; the
    server answers again as soon as they are gone."""
    import socket
    import time

    from bus.metrics import MAX_CONNECTIONS, REQUEST_TIMEOUT

    proc, _backend, log_path = lone_worker
    wait_until(lambda: _address_in(log_path) is not None, 60, what="worker metrics served")
    base = _address_in(log_path)
    assert base is not None
    host, port = base[len("http://"):].rsplit(":", 1)
    assert _get(f"{base}/live") == (200, "alive\n")
    threads_before, fds_before = _threads_and_fds(proc.pid)
    idle: list[socket.socket] = []
    try:
        for _ in range(300):
            conn = socket.create_connection((host, int(port)), timeout=5)
            idle.append(conn)
        time.sleep(1.0)  # the server has accepted what it will
        threads, fds = _threads_and_fds(proc.pid)
        assert threads - threads_before <= MAX_CONNECTIONS + 2, (threads_before, threads)
        assert fds - fds_before <= MAX_CONNECTIONS + 8, (fds_before, fds)
        # Each is answered 503 at once (accepted past the limit) or, served and silent,
        # closed at its deadline: none is left open, and only the served are silent.
        # (A connection the kernel held back while its accept queue was full comes
        # in later and may be served in a later round; never more at once.)
        served = 0
        most = threads
        started = time.monotonic()
        for conn in idle:
            conn.settimeout(2 * REQUEST_TIMEOUT + 5)
            answer = conn.recv(4096)
            most = max(most, _threads_and_fds(proc.pid)[0])
            if answer == b"":
                served += 1
            else:
                assert answer.startswith(b"HTTP/1.0 503 ") and b"busy" in answer, answer
        assert served > 0 and most - threads_before <= MAX_CONNECTIONS + 2
        assert time.monotonic() - started < 4 * REQUEST_TIMEOUT
    finally:
        for conn in idle:
            conn.close()
    assert _get(f"{base}/live") == (200, "alive\n")
    wait_until(lambda: _threads_and_fds(proc.pid)[0] <= threads_before + 1, 10,
               what="the connection threads gone")
