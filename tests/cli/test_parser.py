"""The CLI's parser assembly and its import discipline, without an engine."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from berth import cli

REPO = Path(__file__).resolve().parents[2]


def test_cli_command_list_matches_the_parser() -> None:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(cli.COMMANDS)
    # 27 + volume, system, 6 of images, 4 of orchestration, network and port
    assert len(cli.COMMANDS) == len(set(cli.COMMANDS)) == 41
    assert cli._command_word(["--timeout", "3", "ps", "-a"]) == "ps"
    assert cli._command_word(["--key", "ps", "run"]) == "run"
    assert cli._command_word(["--help"]) is None
    assert cli._command_word(["nonsense"]) is None
    only = cli.build_parser("ps")
    assert only.parse_args(["ps", "-a"]).all is True


def test_help_lists_the_commands_noun_by_noun() -> None:
    """``berth --help`` keeps its order: the engine's processes, db, containers, the log,
    the system."""
    text = cli.build_parser().format_help()
    listed = [line.split()[0] for line in text.splitlines()
              if line.startswith("    ") and line.split()[0] in cli.COMMANDS]
    assert listed == list(cli.COMMANDS)
    assert listed[:6] == ["up", "down", "broker", "worker", "keys", "db"]
    assert listed[-6:] == ["events", "history", "state", "projection", "audit", "system"]


def test_the_client_path_imports_nothing_of_the_servers() -> None:
    """What ``berth ps`` loads before it sends its query: no broker, worker, store,
    migrations, SQLAlchemy or Alembic (they cost start-up time on every command)."""
    script = (
        "import sys\n"
        "from berth import cli\n"
        "args = cli.build_parser(cli._command_word(['ps'])).parse_args(['ps'])\n"
        "assert args.fn is not None\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=60, check=True)
    loaded = set(done.stdout.split())
    assert "bus.client" in loaded
    server_side = ("workers", "migrations", "engine.store", "engine.runtime", "bus.broker",
                   "berth.daemon", "sqlalchemy", "alembic", "psycopg")
    wrong = sorted({s for s in server_side for m in loaded if m == s or m.startswith(s + ".")})
    assert wrong == [], f"the client path loads server-side modules: {wrong}"
