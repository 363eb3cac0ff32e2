"""Registry credentials never reach skopeo's command line.

A process's arguments are readable by every user (``/proc/PID/cmdline``), so
credentials given to berth go to skopeo in a private (0600) auth file. A skopeo shim,
first on PATH, records the arguments it was given, its own ``/proc/self/cmdline`` and
the mode and content of the auth file it was pointed at, then waits until the test
has looked through every process's command line."""

from __future__ import annotations

import base64
import json
import os
import threading
import uuid
from pathlib import Path

import pytest

from engine.images import skopeo
from tests.helpers import wait_until

SHIM = """#!/bin/sh
# Record what a copy would expose, then wait for the test's look at /proc.
out="{out}"
for arg in "$@"; do printf '%s\\n' "$arg"; done > "$out/argv"
tr '\\0' '\\n' < /proc/self/cmdline > "$out/cmdline"
for arg in "$@"; do
    case "$arg" in
        --src-authfile=*|--dest-authfile=*)
            file="${{arg#*=}}"
            stat -c %a "$file" > "$out/authfile.mode"
            cat "$file" > "$out/authfile.json"
            printf '%s\\n' "$file" > "$out/authfile.path" ;;
    esac
done
touch "$out/running"
i=0
while [ ! -e "$out/go" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
"""


def _cmdlines() -> list[bytes]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    found.append(f.read())
            except OSError:
                pass  # ended meanwhile
    return found


@pytest.mark.parametrize("side", ["src", "dest"])
def test_credentials_go_in_a_private_file_never_on_a_command_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, side: str) -> None:
    bin_dir, out = tmp_path / "bin", tmp_path / "out"
    bin_dir.mkdir()
    out.mkdir()
    shim = bin_dir / "skopeo"
    shim.write_text(SHIM.format(out=out))
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert skopeo.skopeo_path() == str(shim)
    password = f"pw-{uuid.uuid4().hex}"
    auth = skopeo.Auth(creds=f"someone:{password}", tls_verify=False)
    sides = {"src": auth} if side == "src" else {"dst": auth}
    errors: list[BaseException] = []

    def run() -> None:
        try:
            skopeo.copy("docker://registry.test/x:1", f"oci:{tmp_path}/layout:x",
                        registry="registry.test", timeout=60, **sides)  # type: ignore[arg-type]
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    copier = threading.Thread(target=run)
    copier.start()
    try:
        wait_until(lambda: (out / "running").exists(), 30, what="the skopeo shim running")
        exposed = [line for line in _cmdlines() if password.encode() in line]
        assert exposed == [], "the password is on a process's command line"
    finally:
        (out / "go").touch()
        copier.join(60)
    assert not copier.is_alive() and errors == []
    argv = (out / "argv").read_text()
    assert password not in argv and password not in (out / "cmdline").read_text()
    assert "creds" not in argv
    assert f"--{side}-tls-verify=false" in argv.splitlines()
    assert (out / "authfile.mode").read_text().strip() == "600"
    token = base64.b64encode(f"someone:{password}".encode()).decode()
    auths = json.loads((out / "authfile.json").read_text())["auths"]
    assert auths == {"registry.test": {"auth": token}}
    assert not Path((out / "authfile.path").read_text().strip()).exists(), \
        "the auth file outlived the copy"
