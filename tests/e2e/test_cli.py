"""The ``berth`` command line, run as a real subprocess against a real engine."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime

from tests.e2e.conftest import Engine
from tests.helpers import wait_until

LOOP = "trap 'exit 0' TERM; while true; do echo tick; sleep 0.1; done"


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def test_run_streams_output_and_exits_with_the_code(up: Engine) -> None:
    result = up.cli("run", "--rm", up.rootfs, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert result.returncode == 3
    assert result.stdout == "out\n" and result.stderr == "err\n"
    assert json.loads(_ok(up.cli("ps", "-a", "--format", "json"))) == []


def test_detached_lifecycle_with_names(up: Engine) -> None:
    cid = _ok(up.cli("run", "-d", "--name", "svc", "-e", "A=1", "-w", "/tmp", "--hostname", "h1",
                     up.rootfs, "sh", "-c", LOOP)).strip()
    assert len(cid) == 64
    ps = json.loads(_ok(up.cli("ps", "--format", "json")))
    assert [(p["name"], p["state"], p["node"]) for p in ps] == [("svc", "running", "local")]
    table = _ok(up.cli("ps"))
    assert "svc" in table and "Up" in table
    exec_out = _ok(up.cli("exec", "-e", "B=2", "svc", "sh", "-c", 'echo "$A$B $(pwd) $(hostname)"'))
    assert exec_out == "12 /tmp h1\n"
    # exec -e overrides a variable the container sets (the process's own, not the run's)
    assert _ok(up.cli("exec", "-e", "A=9", "svc", "sh", "-c", 'echo "$A"')) == "9\n"
    assert _ok(up.cli("exec", "svc", "sh", "-c", 'echo "$A"')) == "1\n"
    assert up.cli("exec", cid[:8], "sh", "-c", "exit 9").returncode == 9
    _ok(up.cli("pause", "svc"))
    assert json.loads(_ok(up.cli("inspect", "svc")))[0]["state"] == "paused"
    _ok(up.cli("unpause", "svc"))
    wait_until(lambda: "tick" in _ok(up.cli("logs", "svc")), 10, what="logs")
    _ok(up.cli("stop", "-t", "5", "svc"))
    assert _ok(up.cli("wait", "svc")).strip() == "0"
    _ok(up.cli("rm", "svc"))
    assert json.loads(_ok(up.cli("ps", "-a", "--format", "json"))) == []


def test_create_start_attach_and_kill(up: Engine) -> None:
    cid = _ok(up.cli("create", up.rootfs, "sh", "-c", "echo attached; exit 4")).strip()
    result = up.cli("start", "-a", cid)
    assert result.returncode == 4 and result.stdout == "attached\n"
    k = _ok(up.cli("run", "-d", up.rootfs, "sleep", "60")).strip()
    _ok(up.cli("kill", "-s", "KILL", k))
    assert _ok(up.cli("wait", k)).strip() == "137"
    bad = up.cli("kill", "-s", "NOPE", k)
    assert bad.returncode != 0 and "invalid signal" in bad.stderr


def test_errors_are_one_clear_sentence(up: Engine) -> None:
    for args, expect in (
        (("start", "no-such-ctr"), "no such container"),
        (("run", "./relative/rootfs", "true"), "not an existing directory"),
        (("run", "--memory", "lots", up.rootfs, "true"), "invalid size"),
        (("events", "--since", "yesterday"), "invalid time"),
    ):
        result = up.cli(*args)
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("berth: ") and expect in lines[0], (
            result.stderr
        )


def test_engine_not_running_is_reported(short_tmp: str) -> None:
    import os

    env = dict(os.environ, BERTH_RUN=short_tmp + "/nothing-here")
    env.pop("BERTH_BUS", None)
    result = subprocess.run([sys.executable, "-m", "berth", "ps"], env=env, capture_output=True,
                            text=True, timeout=30, check=False)
    assert result.returncode != 0
    assert "not running" in result.stderr and "berth up" in result.stderr


def test_events_history_state_and_audit(up: Engine) -> None:
    cid = _ok(up.cli("run", "-d", "--name", "tt", up.rootfs, "sh", "-c", LOOP)).strip()
    time.sleep(0.05)  # a distinct timestamp between start and stop
    running_at = datetime.now(UTC).isoformat()
    time.sleep(0.05)
    _ok(up.cli("stop", "tt"))
    lines = [json.loads(x) for x in _ok(up.cli("events", "--format", "json")).splitlines()]
    assert [e["type"] for e in lines][:4] == [
        "container.created", "container.pid_received", "container.network_attached",
        "container.started"
    ]
    fields = {
        "position", "container", "name", "type", "time", "data", "command_id", "actor", "node"
    }
    assert all(set(e) >= fields for e in lines)
    assert lines[0]["name"] == "tt" and lines[0]["container"] == cid
    only_exits = _ok(
        up.cli("events", "--format", "json", "--filter", "type=container.exited")
    ).splitlines()
    assert [json.loads(x)["type"] for x in only_exits] == ["container.exited"]
    by_ctr = _ok(
        up.cli("events", "--format", "json", "--filter", "container=tt", "--until", running_at)
    )
    assert "container.exited" not in by_ctr and "container.started" in by_ctr
    since = _ok(up.cli("events", "--format", "json", "--since", running_at))
    assert "container.created" not in since and "container.exited" in since
    history = _ok(up.cli("history", "tt"))
    assert "container.stop_requested" in history and "root(uid 0)" in history
    hist_json = [
        json.loads(x) for x in _ok(up.cli("history", "--format", "json", "tt")).splitlines()
    ]
    stop = next(e for e in hist_json if e["type"] == "container.stop_requested")
    assert stop["command_id"] and stop["actor"] == "root(uid 0)"
    past = json.loads(_ok(up.cli("state", "--at", running_at, "tt")))
    assert past["state"] == "running"
    now = json.loads(_ok(up.cli("state", "tt")))
    assert now["state"] == "exited"
    # created, pid_received, network_attached, started: running from position 4
    at_pos = json.loads(_ok(up.cli("state", "--at-position", "4", "tt")))
    assert at_pos["state"] == "running"
    assert "verified" in _ok(up.cli("projection", "rebuild", "--verify"))
    assert "verified" in _ok(up.cli("audit", "verify"))


def test_events_follow_since_is_a_catch_up_subscription(up: Engine) -> None:
    _ok(up.cli("run", "--rm", up.rootfs, "true"))
    proc = subprocess.Popen([sys.executable, "-m", "berth", "events", "--follow", "--since",
                             "1h", "--format", "json"], env=up.env, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["position"] == 1
        _ok(up.cli("run", "--rm", up.rootfs, "true"))
        seen = [first]
        while seen[-1]["type"] != "container.removed" or len(seen) < 10:
            seen.append(json.loads(proc.stdout.readline()))
        assert [e["position"] for e in seen] == list(range(1, len(seen) + 1))
    finally:
        proc.terminate()
        proc.wait(10)


def test_events_follow_without_since_shows_only_new_events(up: Engine) -> None:
    """podman's stream (issue 21): the past is not replayed unless --since asks."""
    _ok(up.cli("create", "--name", "before", up.rootfs, "true"))
    proc = subprocess.Popen([sys.executable, "-m", "berth", "events", "--follow", "--format",
                             "{{.Type}} {{.Status}} {{.Name}}"], env=up.env, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        time.sleep(2)  # the subscription is made (a line printed before would be old)
        _ok(up.cli("create", "--name", "after", up.rootfs, "true"))
        first = proc.stdout.readline().split()
        assert first == ["container", "created", "after"], first
    finally:
        proc.terminate()
        proc.wait(10)


def test_twenty_concurrent_cli_run_rm(up: Engine) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-m", "berth", "run", "--rm", up.rootfs,
                          "sh", "-c", f"echo run-{i}"],
                         env=up.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(20)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 20, [o[1] for o in outputs]
    assert sorted(o[0] for o in outputs) == sorted(f"run-{i}\n" for i in range(20))
    events = [json.loads(x) for x in _ok(up.cli("events", "--format", "json")).splitlines()]
    streams: dict[str, list[str]] = {}
    for e in events:
        streams.setdefault(e["container"], []).append(e["type"])
    assert len(streams) == 20
    for types in streams.values():
        assert types == ["container.created", "container.pid_received",
                         "container.network_attached", "container.started",
                         "container.exited", "container.network_detached",
                         "container.removed"]


def test_logs_follow_streams_until_exit(up: Engine) -> None:
    cid = _ok(up.cli("run", "-d", up.rootfs, "sh", "-c",
                     "for i in 1 2 3; do echo line-$i; sleep 0.3; done; echo done >&2")).strip()
    result = up.cli("logs", "-f", cid, timeout=30)
    assert result.returncode == 0
    assert result.stdout == "line-1\nline-2\nline-3\n"
    assert result.stderr == "done\n"
    assert json.loads(_ok(up.cli("inspect", cid)))[0]["state"] == "exited"


def test_events_filter_by_container_lists_only_that_container(up: Engine) -> None:
    """Regression: the container filter was passed as the command's target instead of
    its arguments, so every container's events were listed."""
    a = _ok(up.cli("run", "-d", "--name", "fa", up.rootfs, "sleep", "30")).strip()
    b = _ok(up.cli("run", "-d", "--name", "fb", up.rootfs, "sleep", "30")).strip()
    lines = _ok(up.cli("events", "--filter", "container=fa", "--format", "json")).splitlines()
    streams = {json.loads(line)["container"] for line in lines}
    assert streams == {a}, (streams, b)
    typed = _ok(up.cli("events", "--filter", "container=fb", "--filter",
                       "type=container.started", "--format", "json")).splitlines()
    assert [(json.loads(x)["container"], json.loads(x)["type"]) for x in typed] == [
        (b, "container.started")]


def test_a_refused_create_leaves_a_failure_record_and_no_files(up: Engine) -> None:
    """Regression: `run --rm ROOTFS /nonexistent` left its bundle directory and nothing
    in the log (a later start then called it an orphan of a dead worker)."""
    containers = os.path.join(up.config().root, "containers")
    before = set(os.listdir(containers)) if os.path.isdir(containers) else set()
    result = up.cli("run", "--rm", up.rootfs, "/nonexistent")
    assert result.returncode != 0 and result.stderr.count("\n") == 1, result
    after = set(os.listdir(containers)) if os.path.isdir(containers) else set()
    assert after == before
    failed = [json.loads(line) for line in _ok(up.cli(
        "events", "--filter", "type=command.failed", "--format", "json")).splitlines()]
    assert [(e["data"]["command_type"], e["actor"] != "") for e in failed] == [
        ("container.create", True)]


def test_history_finds_removed_containers_by_name_and_all_that_had_it(up: Engine) -> None:
    """Regression: `berth history NAME` after `rm` said "no such container"."""
    first = _ok(up.cli("run", "-d", "--name", "gone", up.rootfs, "sleep", "30")).strip()
    _ok(up.cli("rm", "-f", "gone"))
    lines = _ok(up.cli("history", "--format", "json", "gone")).splitlines()
    assert {json.loads(x)["container"] for x in lines} == {first}
    assert json.loads(lines[-1])["type"] == "container.removed"
    second = _ok(up.cli("run", "-d", "--name", "gone", up.rootfs, "sleep", "30")).strip()
    _ok(up.cli("rm", "-f", "gone"))
    newest = _ok(up.cli("history", "--format", "json", "gone")).splitlines()
    assert {json.loads(x)["container"] for x in newest} == {second}
    both = [json.loads(x) for x in _ok(up.cli("history", "--all", "--format", "json",
                                               "gone")).splitlines()]
    assert {e["container"] for e in both} == {first, second}
    assert [e["position"] for e in both] == sorted(e["position"] for e in both)
    assert _ok(up.cli("history", "--format", "json", first[:10])).count("\n") == len(lines)


def test_state_at_a_past_moment_shows_what_ps_a_showed_then(up: Engine) -> None:
    """Regression: `state --at T` counted ages from now and listed containers that had
    been removed before T."""
    _ok(up.cli("run", "-d", "--name", "then", up.rootfs, "sleep", "30"))
    wait_until(lambda: "Up" in _ok(up.cli("ps")), 10, what="then running")
    at = datetime.now(UTC).isoformat()
    _ok(up.cli("rm", "-f", "then"))
    after = datetime.now(UTC).isoformat()
    time.sleep(2.5)  # time must pass for an age counted from now to show it
    row = [line for line in _ok(up.cli("state", "--at", at)).splitlines() if " then " in line]
    assert len(row) == 1 and re.search(r"\bUp [01]s\b", row[0]), row
    listed = _ok(up.cli("state", "--at", after))
    assert " then " not in listed  # removed by then: ps -a would not list it
    asked = json.loads(_ok(up.cli("state", "--at", after, "then")).splitlines()[0])
    assert asked["state"] == "removed"  # asked for by name, it is shown as it was
