"""Crash points are armed only by the environment and a matching file together, so a
stray variable in production cannot make a worker kill itself."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from engine.faults import ARMED_ENV, POINTS_ENV, arming_text

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _reach(point: str, env: dict[str, str]) -> int:
    code = f"from engine.faults import crash_point; crash_point({point!r})"
    full = {k: v for k, v in os.environ.items() if k not in (POINTS_ENV, ARMED_ENV)}
    full.update(PYTHONPATH=REPO, **env)
    return subprocess.run([sys.executable, "-c", code], env=full, timeout=60,
                          check=False).returncode


def _file(tmp_path: object, text: str, mode: int = 0o600) -> str:
    path = os.path.join(str(tmp_path), "armed")
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def test_an_armed_point_kills_the_process(tmp_path: object) -> None:
    path = _file(tmp_path, arming_text("a.b,c.d"))
    assert _reach("c.d", {POINTS_ENV: "a.b,c.d", ARMED_ENV: path}) == -9
    assert _reach("x.y", {POINTS_ENV: "a.b,c.d", ARMED_ENV: path}) == 0


@pytest.mark.parametrize("case", ["no-file-env", "missing", "other-points", "plain-text",
                                  "group-writable"])
def test_the_environment_alone_arms_nothing(tmp_path: object, case: str) -> None:
    env = {POINTS_ENV: "a.b"}
    if case == "missing":
        env[ARMED_ENV] = os.path.join(str(tmp_path), "nothing-here")
    elif case == "other-points":
        env[ARMED_ENV] = _file(tmp_path, arming_text("z.z"))
    elif case == "plain-text":
        env[ARMED_ENV] = _file(tmp_path, "a.b\n")
    elif case == "group-writable":
        env[ARMED_ENV] = _file(tmp_path, arming_text("a.b"), 0o620)
    assert _reach("a.b", env) == 0
