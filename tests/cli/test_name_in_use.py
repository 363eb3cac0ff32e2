"""A name in use is refused naming the container that holds it, as podman says it
(issue 21): ``the container name "web" is already in use by <id>``; nothing is made."""

from __future__ import annotations

import json
import subprocess

from tests.e2e.conftest import Engine


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def test_a_name_in_use_names_its_holder(up: Engine) -> None:
    holder = _ok(up.cli("create", "--name", "web", up.rootfs, "true")).strip()
    for verb in ("create", "run"):
        refused = up.cli(verb, "--name", "web", up.rootfs, "true")
        assert refused.returncode == 125, (refused.returncode, refused.stderr)
        assert refused.stderr == (f'berth: the container name "web" is already in use by '
                                  f"{holder}: remove it or choose another name\n")
    rows = json.loads(_ok(up.cli("ps", "-a", "--format", "json")))
    assert [r["id"] for r in rows] == [holder]
