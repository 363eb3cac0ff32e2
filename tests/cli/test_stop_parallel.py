"""``stop`` of several containers stops them at once, as podman does (issue 21): three
containers that ignore SIGTERM take one stop timeout together, not three in a row;
the names are printed in the order given, a wrong one is reported and the rest stop."""

from __future__ import annotations

import subprocess
import time

from tests.e2e.conftest import Engine

DEAF = "trap '' TERM; while true; do sleep 0.1; done"
TIMEOUT = 3


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def test_stop_of_several_runs_in_parallel(up: Engine) -> None:
    names = ["deaf1", "deaf2", "deaf3"]
    for name in names:
        _ok(up.cli("run", "-d", "--name", name, up.rootfs, "sh", "-c", DEAF))
    began = time.monotonic()
    done = up.cli("stop", "-t", str(TIMEOUT), *names, "nosuch")
    took = time.monotonic() - began
    assert done.returncode == 125, done.stderr
    assert done.stdout.split() == names
    assert "nosuch" in done.stderr and done.stderr.count("\n") == 1
    assert TIMEOUT <= took < 2 * TIMEOUT, took  # one timeout, not three
    states = _ok(up.cli("ps", "-a", "--format", "{{.Names}} {{.State}}")).splitlines()
    assert sorted(states) == [f"{n} exited" for n in names]
