"""Every module of berth imports on its own, whatever was imported before it.

A cycle between modules can pass every other test: the suite imports modules in one
order, and a cycle only breaks when a process starts from the module on the cycle that
the suite never imports first. ``berth worker`` did exactly that after the feature
folders moved the audit modules out of ``engine.store`` (``engine.audit.transparency``
→ ``engine.store.schema`` → ``engine.store``'s re-exports → ``engine.store.recorder`` →
``engine.audit.transparency`` half made), and every worker died at start-up. So each
module is imported in one interpreter with berth's own modules forgotten before each
import: the same entry the process would have, at the cost of one interpreter.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "bus", "workers", "berth", "migrations")

_PROBE = r"""
import importlib, sys, traceback
OURS = tuple(sys.argv[1].split(","))
failed = []
for name in sys.argv[2:]:
    for loaded in [m for m in sys.modules if m.split(".")[0] in OURS]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except BaseException:
        failed.append(name + ": " + traceback.format_exc().strip().splitlines()[-1])
print("\n".join(failed))
"""


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            relative = path.relative_to(REPO)
            if relative.parts[:2] == ("migrations", "versions") or relative.name in {
                    "env.py", "__main__.py"}:
                continue  # Alembic loads these itself; __main__ runs the CLI
            parts = list(relative.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            names.append(".".join(parts))
    return names


def test_every_module_imports_first_in_a_fresh_process() -> None:
    names = _modules()
    assert "engine.audit.transparency" in names and "workers.worker" in names
    done = subprocess.run([sys.executable, "-c", _PROBE, ",".join(PACKAGES), *names],
                          cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", "modules that fail when imported first:\n" + done.stdout
