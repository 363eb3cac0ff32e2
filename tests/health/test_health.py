"""Health checks with real containers: probes as exec sessions, only changes recorded."""

from __future__ import annotations

import os
import uuid

from engine import events as ev
from tests.e2e.conftest import Engine
from tests.helpers import wait_until
from tests.restarts.helpers import count, of_type, stream

SERVE = "touch /tmp/ok; exec sleep 600"
CHECK = "test -f /tmp/ok"


def _statuses(engine: Engine, cid: str) -> list[tuple[str, int]]:
    return [(r.event.status, r.event.exit_code) for r in of_type(stream(engine, cid),
                                                                ev.HealthStatus)
            if isinstance(r.event, ev.HealthStatus)]


def test_healthy_then_unhealthy_when_the_file_goes(up: Engine) -> None:
    c = up.client()
    cid = c.create(rootfs=up.rootfs, args=["sh", "-c", SERVE], health_cmd=CHECK,
                   health_interval="100ms", health_timeout="5s", health_retries=2
                   ).result["id"]
    c.start(cid)
    c.wait(cid, condition="healthy", timeout=30)
    assert [r.get("health") for r in c.ps() if r["id"] == cid] == ["healthy"]
    done = c.exec(cid, ["rm", "/tmp/ok"])
    assert done.result["exit_code"] == 0
    wait_until(lambda: ("unhealthy", 1) in _statuses(up, cid), 30, what="unhealthy")
    assert _statuses(up, cid) == [("healthy", 0), ("unhealthy", 1)]
    unhealthy = of_type(stream(up, cid), ev.HealthStatus)[-1].event
    assert isinstance(unhealthy, ev.HealthStatus) and unhealthy.failing_streak == 2
    shown = c.inspect(cid)
    assert shown["health"] == "unhealthy" and shown["state"] == "running"
    probes = shown["health_log"]["log"]
    assert 1 <= len(probes) <= 5 and probes[-1]["exit_code"] == 1
    # probes are exec sessions, yet none is in the log: only the changes are
    assert count(up, cid, ev.ExecStarted) == 1  # the rm above


def test_on_failure_restart_restarts_an_unhealthy_container(up: Engine) -> None:
    c = up.client()
    cid = c.create(rootfs=up.rootfs, args=["sh", "-c", SERVE], health_cmd=CHECK,
                   health_interval="100ms", health_retries=1,
                   health_on_failure="restart").result["id"]
    c.start(cid)
    c.wait(cid, condition="healthy", timeout=30)
    c.exec(cid, ["rm", "/tmp/ok"])
    # the restart runs the command again, which makes the file again: healthy again
    wait_until(lambda: _statuses(up, cid) == [("healthy", 0), ("unhealthy", 1),
                                             ("healthy", 0)], 30, what="healthy again")
    records = stream(up, cid)
    assert len(of_type(records, ev.Started)) == 2
    assert len(of_type(records, ev.StopRequested)) == 1
    state = c.inspect(cid)
    assert (state["state"], state["restart_count"]) == ("running", 1)


def test_a_slow_starter_is_not_restarted_during_its_start_period(up: Engine) -> None:
    """Probes fail for the first two seconds; the start period (20 s) covers them,
    so with ``--health-on-failure=restart`` the container is neither called
    unhealthy nor restarted: its first recorded status is healthy."""
    c = up.client()
    cid = c.create(rootfs=up.rootfs, args=["sh", "-c", "sleep 2; " + SERVE], health_cmd=CHECK,
                   health_interval="100ms", health_retries=1, health_start_period="20s",
                   health_on_failure="restart").result["id"]
    c.start(cid)
    c.wait(cid, condition="healthy", timeout=30)
    assert _statuses(up, cid) == [("healthy", 0)]
    records = stream(up, cid)
    assert len(of_type(records, ev.Started)) == 1
    assert of_type(records, ev.StopRequested) == []
    state = c.inspect(cid)
    assert (state["state"], state["restart_count"]) == ("running", 0)
    failed = [p for p in state["health_log"]["log"] if p["exit_code"] != 0]
    assert failed, "no probe ran before the file was made: the start period was not tested"


def _processes(cmdline: bytes) -> list[int]:
    """Host pids whose command line is exactly ``cmdline`` (NUL-separated)."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if f.read() == cmdline:
                        found.append(int(pid))
            except OSError:
                pass  # ended meanwhile
    return found


def test_a_probe_past_its_timeout_is_killed_so_probes_do_not_pile_up(up: Engine) -> None:
    """Each probe sleeps far past its 200 ms timeout: each must be killed when it
    times out, so at most the one probe under way is alive, never one per interval."""
    seconds = str(600 + uuid.uuid4().int % 1000)  # a command line no other test runs
    c = up.client()
    cid = c.create(rootfs=up.rootfs, args=["sleep", "600"], health_cmd=f"sleep {seconds}",
                   health_interval="100ms", health_timeout="200ms",
                   health_retries=1000).result["id"]
    c.start(cid)

    def timed_out() -> int:
        probes = c.inspect(cid).get("health_log", {}).get("log", [])
        return sum(1 for p in probes if p["exit_code"] == -1)

    wait_until(lambda: timed_out() >= 4, 30, what="four probes past their timeout")
    alive = _processes(f"sleep\0{seconds}\0".encode())
    assert len(alive) <= 1, f"{len(alive)} probes alive: timed-out probes were not killed"
    assert "exceeded its timeout" in c.inspect(cid)["health_log"]["log"][-1]["output"]


def test_on_failure_stop_stops_an_unhealthy_container_for_good(up: Engine) -> None:
    """podman's ``--health-on-failure=stop``: stopped, not started again."""
    done = up.cli("run", "-d", "--health-cmd", CHECK, "--health-interval", "100ms",
                  "--health-retries", "1", "--health-on-failure=stop", up.rootfs,
                  "sh", "-c", SERVE)
    assert done.returncode == 0, done.stderr
    cid = done.stdout.strip()
    c = up.client()
    c.wait(cid, condition="healthy", timeout=30)
    c.exec(cid, ["rm", "/tmp/ok"])
    wait_until(lambda: c.inspect(cid)["state"] == "exited", 30, what="stopped")
    records = stream(up, cid)
    assert len(of_type(records, ev.StopRequested)) == 1
    assert len(of_type(records, ev.Started)) == 1  # not started again


def test_cli_healthcheck_run_ps_and_wait(up: Engine) -> None:
    done = up.cli("run", "-d", "--health-cmd", CHECK, "--health-interval", "10m",
                  up.rootfs, "sh", "-c", SERVE)
    assert done.returncode == 0, done.stderr
    cid = done.stdout.strip()
    waited = up.cli("wait", "--condition", "running", cid)
    assert (waited.returncode, waited.stdout.strip()) == (0, "running"), waited.stderr
    assert "(starting)" in up.cli("ps").stdout  # the first probe is ten minutes away
    run = up.cli("healthcheck", "run", cid)
    assert (run.returncode, run.stdout.strip()) == (0, "healthy"), run.stderr
    assert "(healthy)" in up.cli("ps").stdout
    up.client().exec(cid, ["rm", "/tmp/ok"])
    run = up.cli("healthcheck", "run", cid)
    assert run.returncode == 1 and run.stdout.strip().endswith("healthy")  # 1 of 3 failed
    bad = up.cli("run", "-d", "--restart", "sometimes", up.rootfs, "true")
    assert bad.returncode != 0 and "invalid restart policy 'sometimes'" in bad.stderr


def test_no_healthcheck_has_no_health(up: Engine) -> None:
    c = up.client()
    cid = c.create(rootfs=up.rootfs, args=["sleep", "600"], no_healthcheck=True).result["id"]
    c.start(cid)
    assert "health" not in c.inspect(cid)
