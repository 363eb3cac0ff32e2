"""The CLI through the front end and its server, and through plain Python: the same
output, stderr and exit codes, and the same actor in the audit trail."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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


def test_the_working_directory_and_environment_are_the_callers(
        berth: CLI, served: Served, tmp_path: Path) -> None:
    (tmp_path / "vars").write_text("FROM_FILE=relative\n")
    result = subprocess.run(
        [*_argv(berth, served), "run", "--rm", "--env-file", "vars", served.engine.rootfs,
         "sh", "-c", 'echo "$FROM_FILE"'],
        cwd=tmp_path, env=served.engine.env, capture_output=True, text=True, timeout=60,
        check=False)
    assert (result.returncode, result.stdout) == (0, "relative\n"), result.stderr
    missing = tmp_path / "missing.toml"
    configured = subprocess.run([*_argv(berth, served), "ps"], capture_output=True, text=True,
                                env=dict(served.engine.env, BERTH_CONFIG=str(missing)),
                                timeout=60, check=False)
    assert (configured.returncode, configured.stderr) == (
        125, f"berth: BERTH_CONFIG names {missing}, which does not exist\n")
    cid = _ok(berth("run", "-d", served.engine.rootfs, "sleep", "60")).strip()
    copied = subprocess.run([*_argv(berth, served), "cp", f"{cid}:/etc/passwd", "copied"],
                            cwd=tmp_path, env=served.engine.env, capture_output=True,
                            text=True, timeout=60, check=False)
    assert copied.returncode == 0, copied.stderr
    assert (tmp_path / "copied").read_text().startswith("root:")


def _argv(berth: CLI, served: Served) -> list[str]:
    """The command line the fixture's path runs ``berth`` with."""
    if berth == served.engine.cli:
        return [sys.executable, "-m", "berth"]
    return [served.front.binary]
