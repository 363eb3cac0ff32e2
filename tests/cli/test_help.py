"""Help for every command and flag, ``berth help``, ``--version``, shell completion and
man pages: all generated from the one parser."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from berth import cli

REPO = Path(__file__).resolve().parents[2]


def _berth(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "berth", *args], env=env, text=True,
                          capture_output=True, timeout=60, check=False)


def _parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    found = [("berth", cli.build_parser())]
    pending = list(found)
    while pending:
        name, parser = pending.pop()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, child in action.choices.items():
                    found.append((f"{name} {sub}", child))
                    pending.append((f"{name} {sub}", child))
    return found


def test_every_command_and_flag_has_help() -> None:
    missing = []
    for name, parser in _parsers():
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{name} {a.dest}" for a in action._choices_actions if not a.help]
            elif not action.help:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_help_command_version_and_usage_errors() -> None:
    helped = _berth("help", "rm")
    assert helped.returncode == 0 and "--force" in helped.stdout
    assert "usage: berth rm" in helped.stdout
    assert "COMMAND" in _berth("help").stdout
    unknown = _berth("help", "frobnicate")
    assert unknown.returncode == 125 and "no such command" in unknown.stderr
    version = _berth("--version")
    assert version.returncode == 0 and version.stdout.startswith("berth version ")
    assert _berth("version").stdout.startswith("Version:")


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_is_generated_from_the_parser(shell: str) -> None:
    done = _berth("completion", shell)
    assert done.returncode == 0, done.stderr
    assert "checkpoint" in done.stdout and "--cap-drop" in done.stdout
    if shell == "bash":
        check = subprocess.run(["bash", "-n"], input=done.stdout, text=True,
                               capture_output=True, check=False)
        assert check.returncode == 0, check.stderr


def test_man_pages_are_generated(tmp_path: Path) -> None:
    script = REPO / "scripts" / "man_pages.py"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], env=env, text=True,
                          capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    pages = sorted(p.name for p in tmp_path.iterdir())
    assert "berth.1" in pages and "berth-run.1" in pages and "berth-rm.1" in pages
    assert len(pages) == len(cli.COMMANDS) + 1
    run = (tmp_path / "berth-run.1").read_text()
    assert run.startswith(".TH BERTH-RUN 1") and "\\-\\-cap\\-drop" in run
    man = subprocess.run(["man", "-l", str(tmp_path / "berth-rm.1")], capture_output=True,
                         text=True, check=False, env=dict(os.environ, MANWIDTH="80"))
    if man.returncode == 0:  # man may be absent from a slim machine; groff's check below
        assert "force" in man.stdout
