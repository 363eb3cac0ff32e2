"""Endpoint defaults and the permissions of ipc sockets."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from bus.broker import Broker
from bus.endpoints import Endpoints, default_endpoints, derive
from engine.errors import AlreadyExists, InvalidArgument


def test_defaults_come_from_the_run_dir() -> None:
    assert default_endpoints({}) == Endpoints("ipc:///run/berth/bus.sock",
                                              "ipc:///run/berth/worker.sock",
                                              "ipc:///run/berth/events.sock")
    assert default_endpoints({"BERTH_RUN": "/tmp/x"}).events == "ipc:///tmp/x/events.sock"


def test_berth_bus_overrides_and_derives() -> None:
    assert default_endpoints({"BERTH_BUS": "tcp://127.0.0.1:7000"}) == Endpoints(
        "tcp://127.0.0.1:7000", "tcp://127.0.0.1:7001", "tcp://127.0.0.1:7002")
    env = {"BERTH_BUS": "ipc:///srv/b/bus.sock", "BERTH_BUS_EVENTS": "tcp://10.0.0.1:9"}
    assert default_endpoints(env) == Endpoints("ipc:///srv/b/bus.sock", "ipc:///srv/b/worker.sock",
                                               "tcp://10.0.0.1:9")
    with pytest.raises(InvalidArgument, match="BERTH_BUS_WORKERS"):
        derive("tcp://127.0.0.1:*")


def test_run_dir_is_0700_and_sockets_are_0600(run_dir: Path) -> None:
    run = run_dir / "deep" / "run"
    broker = Broker(f"ipc://{run}/bus.sock", f"ipc://{run}/worker.sock", f"ipc://{run}/events.sock")
    try:
        assert stat.S_IMODE(run.stat().st_mode) == 0o700
        for name in ("bus.sock", "worker.sock", "events.sock"):
            assert stat.S_IMODE((run / name).stat().st_mode) == 0o600
    finally:
        broker.close()


def test_tcp_without_keys_is_refused_not_run_in_the_clear(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # (With keys, wildcard ports and CURVE: tests/security/test_curve.py.)
    monkeypatch.setenv("BERTH_ROOT", str(tmp_path))
    monkeypatch.delenv("BERTH_BROKER_KEY", raising=False)
    with pytest.raises(InvalidArgument, match="needs CURVE keys"):
        Broker("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", "tcp://127.0.0.1:*")


def test_a_second_broker_does_not_steal_a_live_socket(run_dir: Path) -> None:
    run = run_dir / "run"
    eps = [f"ipc://{run}/{name}" for name in ("bus.sock", "worker.sock", "events.sock")]
    first = Broker(*eps)
    try:
        with pytest.raises(AlreadyExists, match="already listens"):
            Broker(*eps)
    finally:
        first.close()
    (run / "bus.sock").touch()  # a stale file, as a killed broker leaves it
    Broker(*eps).close()
