"""The CLI through the front end and its server, and through plain Python: the same
output, stderr and exit codes, and the same actor in the audit trail."""

from __future__ import annotations

import json
import subprocess

from tests.cliserver.conftest import CLI, Served
from tests.helpers import wait_until

LOOP = "trap 'exit 0' TERM; while true; do echo tick; sleep 0.1; done"


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def test_run_streams_output_and_exits_with_the_code(berth: CLI, served: Served) -> None:
    rootfs = served.engine.rootfs
    result = berth("run", "--rm", rootfs, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert berth("run", "-i", "--rm", rootfs, "cat", input=b"piped\n").stdout == "piped\n"
    assert json.loads(_ok(berth("ps", "-a", "--format", "json"))) == []


def test_a_detached_container_through_its_life(berth: CLI, served: Served) -> None:
    cid = _ok(berth("run", "-d", "--name", "svc", "-e", "A=1", served.engine.rootfs,
                    "sh", "-c", LOOP)).strip()
    assert len(cid) == 64
    assert [p["name"] for p in json.loads(_ok(berth("ps", "--format", "json")))] == ["svc"]
    assert "svc" in _ok(berth("ps"))
    assert _ok(berth("exec", "svc", "sh", "-c", 'echo "$A"')) == "1\n"
    assert berth("exec", cid[:8], "sh", "-c", "exit 9").returncode == 9
    wait_until(lambda: "tick" in _ok(berth("logs", "svc")), 10, what="logs")
    _ok(berth("stop", "-t", "5", "svc"))
    _ok(berth("rm", "svc"))
    assert json.loads(_ok(berth("ps", "-a", "--format", "json"))) == []


def test_errors_are_the_same_both_ways(served: Served) -> None:
    rootfs = served.engine.rootfs
    cases = [
        ("rm", "nosuch"),
        ("exec", "nosuch", "true"),
        ("nosuch-command",),
        ("run", "--bogus-flag", rootfs, "true"),
        ("run", "--rm", rootfs, "/no/such/binary"),
        ("ps", "--format", "{{.Nope}}"),
        ("--help",),
        ("ps", "-a"),
    ]
    for args in cases:
        plain = served.engine.cli(*args)
        fast = served.cli(*args)
        assert served.front.fell_back() == []
        assert (fast.returncode, fast.stdout, fast.stderr) == (
            plain.returncode, plain.stdout, plain.stderr), args
    assert {served.engine.cli(*c).returncode for c in cases[:4]} >= {125}


def test_the_actor_is_recorded_alike(served: Served) -> None:
    rootfs = served.engine.rootfs
    _ok(served.cli("run", "--name", "fast", rootfs, "true"))
    _ok(served.engine.cli("run", "--name", "plain", rootfs, "true"))
    assert served.front.fell_back() == []

    def actors(name: str) -> list[str]:
        out = _ok(served.engine.cli("history", name, "--format", "json"))
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        return sorted({str(r["actor"]) for r in rows if r.get("actor")})

    assert actors("fast") == actors("plain") != []
