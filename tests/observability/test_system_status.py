"""``berth system status``: exit 0 only when the broker, the workers and the store answer."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

from tests.e2e.test_daemon import Place
from tests.helpers import wait_until


def test_status_of_a_running_engine_then_of_a_stopped_one(place: Place) -> None:
    down = place.berth("system", "status")
    assert down.returncode == 125 and "is not running" in down.stderr, down.stderr
    assert place.berth("up", "-d").returncode == 0
    up = place.berth("system", "status")
    assert up.returncode == 0, up.stderr
    assert up.stdout.splitlines() == ["broker: ok", "worker local: ok (store answers)"]
    as_json = json.loads(place.berth("system", "status", "--format", "json").stdout)
    assert as_json == {"broker": "ok", "ok": True, "workers": {"local": "ok"}}


def test_a_broker_without_workers_is_not_healthy(place: Place) -> None:
    env = dict(place.env, BERTH_BUS=f"ipc://{place.run}-bus.sock")
    broker = subprocess.Popen([sys.executable, "-m", "berth", "broker"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def status() -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "berth", "system", "status"], env=env,
                                  capture_output=True, text=True, timeout=60, check=False)

        wait_until(lambda: status().returncode != 125, 30, what="the broker answering")
        result = status()
        assert result.returncode == 1
        assert result.stdout.splitlines() == ["broker: ok", "workers: none connected"]
    finally:
        broker.send_signal(signal.SIGTERM)
        broker.wait(20)
