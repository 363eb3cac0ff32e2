"""podman's exit codes, from the real CLI against a real engine: 125 for the engine's
or the user's error, 126 for a command that cannot be invoked, 127 for one that is
not there, the container's own code otherwise."""

from __future__ import annotations

import json

from tests.e2e.conftest import Engine


def test_usage_and_engine_errors_exit_125(up: Engine) -> None:
    bad_flag = up.cli("run", "--no-such-flag", up.rootfs, "true")
    assert bad_flag.returncode == 125 and "unrecognized arguments" in bad_flag.stderr
    missing = up.cli("wait")
    assert missing.returncode == 125 and "required" in missing.stderr
    assert up.cli("rm").returncode == 125
    assert up.cli("start", "no-such-ctr").returncode == 125
    assert up.cli("events", "--format", "csv").returncode == 125


def test_command_not_found_is_127_and_leaves_nothing(up: Engine) -> None:
    result = up.cli("run", "--rm", up.rootfs, "/nonexistent")
    assert result.returncode == 127, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "/nonexistent" in lines[0] and "not found" in lines[0]
    assert up.cli("run", "--rm", up.rootfs, "no-such-command").returncode == 127
    assert json.loads(up.cli("ps", "-a", "--format", "json").stdout) == []


def test_command_not_invokable_is_126(up: Engine) -> None:
    not_executable = up.cli("run", "--rm", up.rootfs, "/etc/passwd")
    assert not_executable.returncode == 126, not_executable.stderr
    assert "cannot be invoked" in not_executable.stderr
    assert up.cli("run", "--rm", up.rootfs, "/etc").returncode == 126


def test_the_containers_own_code_and_exec(up: Engine) -> None:
    for code in (0, 1, 2, 125, 126, 127, 200):
        assert up.cli("run", "--rm", up.rootfs, "sh", "-c", f"exit {code}").returncode == code
    cid = up.cli("run", "-d", up.rootfs, "sleep", "60").stdout.strip()
    assert up.cli("exec", cid, "/nonexistent").returncode == 127
    assert up.cli("exec", cid, "/etc/passwd").returncode == 126
    assert up.cli("exec", cid, "sh", "-c", "exit 5").returncode == 5
    assert json.loads(up.cli("inspect", cid).stdout)[0]["state"] == "running"
