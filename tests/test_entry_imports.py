"""The modules a process starts with import on their own, in a fresh interpreter:
an import cycle that only bites in one order (engine.audit.transparency and the store
package) made ``berth worker`` fail at its first line, while tests that had imported
the store first passed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("module", ["workers.worker", "berth.daemon", "workers.dispatch",
                                    "engine.containers.queries", "engine.audit.transparency",
                                    "engine.store", "berth.cli"])
def test_an_entry_module_imports_first(module: str) -> None:
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True,
                          text=True, check=False, timeout=60,
                          env=dict(os.environ, PYTHONPATH=REPO))
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1:]
