"""The README's promise: a publisher that imports ``bus.client`` pulls in neither
SQLAlchemy nor the store nor the runtime (nor the workers), so it stays small and
works on a host without them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("sqlalchemy", "alembic", "psycopg", "engine.store", "engine.runtime", "workers",
         "migrations", "nacl", "cryptography", "engine.audit.treehead",
         # the typed commands, events and run spec cost ~25 ms to build; the client
         # needs only the command names (engine.command_types)
         "engine.commands", "engine.events", "engine.containers.spec")
PROBE = """
import json, sys
import bus.client
loaded = sorted(sys.modules)
bus.client.Client  # the public class, as the README uses it
import bus.subscription  # what Client.subscribe imports when first called
print(json.dumps({"client": loaded, "subscribe": sorted(sys.modules)}))
"""


def _heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]


def test_bus_client_imports_neither_sqlalchemy_nor_the_store_nor_the_runtime() -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd="/", capture_output=True,
                          text=True, timeout=60, check=True)
    loaded = json.loads(done.stdout)
    assert "bus.client" in loaded["client"] and "bus.subscription" in loaded["subscribe"]
    assert _heavy(loaded["client"]) == []
    assert _heavy(loaded["subscribe"]) == []


def test_the_probe_would_see_a_heavy_import() -> None:
    """The check itself works: importing the store is noticed."""
    assert _heavy(["bus.client", "sqlalchemy.orm", "engine.store.db", "engine.errors"]) == [
        "sqlalchemy.orm", "engine.store.db"]
