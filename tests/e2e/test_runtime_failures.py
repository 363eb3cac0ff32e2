"""A runtime that fails after a good create: the log says what runc did, never more.

The worker drives a wrapper of the real runc (first on its PATH, so the runtime
configuration picks it): it passes every call through except the sub-commands named
by marker files beside it, which it fails the way runc does (a message, exit 1).
The container is real; only the one runc call is refused."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from engine import events as ev
from tests.e2e.conftest import Engine

WRAPPER = """#!/bin/sh
# Fail the sub-commands that have a marker file beside this script; run the rest.
here=$(dirname "$0")
for arg in "$@"; do
    case "$arg" in
        start|pause)
            if [ -e "$here/fail-$arg" ]; then
                echo "level=error msg=\\"injected $arg failure\\"" >&2
                exit 1
            fi
            break ;;
        create|delete|kill|state|resume|exec|ps|update|checkpoint|restore|events) break ;;
    esac
done
exec {runc} "$@"
"""


@pytest.fixture
def default_network() -> str:
    return "none"  # the runtime is under test, not the network


@pytest.fixture
def failing_runc(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The directory of the wrapper; the in-process worker started after this uses it."""
    runc = shutil.which("runc")
    assert runc is not None
    bin_dir = Path(engine.root).parent / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "runc"
    wrapper.write_text(WRAPPER.format(runc=runc))
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    engine.start_worker()
    assert engine.worker is not None
    assert engine.worker.runtime.config.runtime_path == str(wrapper)
    return bin_dir


def _types(engine: Engine, cid: str) -> list[str]:
    store = engine.store()
    try:
        return [r.type for r in store.read_stream(cid)]
    finally:
        store.close()


def test_a_failed_runc_start_is_recorded_as_a_failure_not_started(
        engine: Engine, failing_runc: Path) -> None:
    cid = engine.cli("create", engine.rootfs, "sleep", "60").stdout.strip()
    assert len(cid) == 64
    (failing_runc / "fail-start").touch()
    result = engine.cli("start", cid)
    assert result.returncode != 0
    assert "injected start failure" in result.stderr
    kinds = _types(engine, cid)
    assert ev.CONTAINER_STARTED not in kinds
    assert kinds[-1] == ev.COMMAND_FAILED
    state = json.loads(engine.cli("inspect", cid).stdout)[0]["state"]
    assert state == "created"


def test_a_failed_runc_pause_is_recorded_as_a_failure_not_paused(
        engine: Engine, failing_runc: Path) -> None:
    cid = engine.cli("run", "-d", engine.rootfs, "sleep", "60").stdout.strip()
    assert len(cid) == 64
    (failing_runc / "fail-pause").touch()
    result = engine.cli("pause", cid)
    assert result.returncode != 0
    assert "injected pause failure" in result.stderr
    kinds = _types(engine, cid)
    assert ev.CONTAINER_STARTED in kinds and ev.CONTAINER_PAUSED not in kinds
    assert kinds[-1] == ev.COMMAND_FAILED
    state = json.loads(engine.cli("inspect", cid).stdout)[0]["state"]
    assert state == "running"
