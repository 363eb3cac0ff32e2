"""The plain Python CLI's start-up (issue 24): ``berth ps`` and ``berth --version`` load
the client path only. Every module below costs milliseconds on each command and none
of them is needed to send a command and print its reply; a change that pulls one in
(an import at a module's top instead of inside the function that needs it) fails here
rather than slowing every command unnoticed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.e2e.conftest import REPO, Engine

HEAVY = (
    "sqlalchemy", "alembic", "yaml", "nacl", "cryptography", "prometheus_client",
    "engine.store", "engine.runtime", "engine.parsing", "engine.commands", "engine.events",
    "engine.containers.service", "engine.containers.decide", "engine.containers.projection",
    "engine.images.service", "engine.compose", "engine.audit", "engine.networks.setup",
    "workers", "bus.broker", "berth.daemon", "berth.dockerapi",
)
"""Packages and modules the client path must not load (a name covers its submodules):
the store and its database drivers, the runtime (conmon, runc, CRIU), the typed
commands and events and their rules (the worker's side), YAML (compose files only),
the broker, the daemon and the Docker API server."""

_PROBE = """
import json, sys
sys.argv = ["berth", *sys.argv[1:]]
from berth.cli import main
try:
    code = main()
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def _loaded(env: dict[str, str] | None, *args: str) -> tuple[object, list[str]]:
    out = subprocess.run([sys.executable, "-c", _PROBE, *args], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=60, check=False)
    report = json.loads(out.stderr.strip().splitlines()[-1])
    return report["code"], report["modules"]


def _heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]


def test_version_loads_nothing_heavy() -> None:
    code, modules = _loaded(None, "--version")
    assert code in (0, None)
    assert "berth.cli" in modules  # the probe did run the CLI
    assert _heavy(modules) == []


@pytest.mark.parametrize("args", [("ps",), ("ps", "-a")])
def test_ps_against_an_engine_loads_nothing_heavy(up: Engine, args: tuple[str, ...]) -> None:
    code, modules = _loaded(up.env, *args)
    assert code in (0, None)
    assert "bus.client" in modules  # it did talk to the engine
    assert _heavy(modules) == []


def test_the_guard_sees_a_heavy_import() -> None:
    """The check itself: a module the client path must not load is reported."""
    assert _heavy(["sqlalchemy.orm", "engine.store.recorder", "yaml", "bus.client"]) == [
        "sqlalchemy.orm", "engine.store.recorder", "yaml"]
