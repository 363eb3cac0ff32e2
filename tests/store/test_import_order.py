"""The engine's modules import in any order: ``berth up`` imports the worker first,
which reaches engine.audit.transparency before engine.store (a cycle through
engine.audit.chain once made ``python -m berth up`` fail at start)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["berth.daemon", "workers.worker",
                                    "engine.containers.queries", "engine.audit.transparency",
                                    "engine.store.recorder", "engine.store"])
def test_each_module_imports_first_in_a_fresh_interpreter(module: str) -> None:
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True,
                          text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert done.returncode == 0, done.stderr[-2000:]
