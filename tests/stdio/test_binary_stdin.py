"""Binary stdin through ``-i`` without ``-t`` (issue 21, B1): the detach keys are a
terminal's feature, as in podman and Docker, so bytes that happen to spell them
(ctrl-p, ctrl-q = 0x10 0x11) are data and pass byte-exact."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

from tests.e2e.conftest import Engine


def _berth(engine: Engine, *args: str, data: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "berth", *args], env=engine.env,
                          input=data, capture_output=True, check=False, timeout=120)


def test_the_detach_keys_in_piped_stdin_are_data_and_rm_still_removes(up: Engine) -> None:
    data = b"abc\x10\x11def\n"
    result = _berth(up, "run", "--rm", "-i", up.rootfs, "cat", data=data)
    assert (result.returncode, result.stdout, result.stderr) == (0, data, b"")
    listed = up.cli("ps", "-a", "--format", "json")
    assert json.loads(listed.stdout) == []


def test_random_bytes_pass_byte_exact_through_run_and_exec(up: Engine) -> None:
    blob = os.urandom(1536 * 1024)
    blob += b"\x10\x11"  # the default detach keys, surely present once
    digest = hashlib.sha256(blob).hexdigest()
    result = _berth(up, "run", "--rm", "-i", up.rootfs, "sha256sum", data=blob)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0].decode() == digest
    started = up.cli("run", "-d", "--name", "bin", up.rootfs, "sleep", "120")
    assert started.returncode == 0, started.stderr
    result = _berth(up, "exec", "-i", "bin", "dd", "of=/tmp/blob", "bs=64k", data=blob)
    assert result.returncode == 0, result.stderr
    summed = up.cli("exec", "bin", "sha256sum", "/tmp/blob")
    assert summed.returncode == 0, summed.stderr
    assert summed.stdout.split()[0] == digest
