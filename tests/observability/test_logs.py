"""The engine's own log: levels, JSON lines, rotation, and no library noise."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from berth import logs
from engine.errors import InvalidArgument
from tests.e2e.test_daemon import Place

LOG_VARS = ("BERTH_LOG_LEVEL", "BERTH_LOG_FORMAT", "BERTH_LOG_FILE", "BERTH_LOG_MAX_BYTES",
            "BERTH_LOG_BACKUPS")


def _entries(path: str) -> list[dict[str, str]]:
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.fixture
def clean_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in LOG_VARS:
        monkeypatch.delenv(name, raising=False)
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in saved:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.mark.parametrize("name, value, sentence", [
    ("BERTH_LOG_LEVEL", "LOUD", "BERTH_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, "
                                "got 'LOUD'"),
    ("BERTH_LOG_FORMAT", "xml", "BERTH_LOG_FORMAT must be text or json, got 'xml'"),
    ("BERTH_LOG_FILE", "relative.log", "BERTH_LOG_FILE must be an absolute path, "
                                       "got 'relative.log'"),
    ("BERTH_LOG_MAX_BYTES", "12", "BERTH_LOG_MAX_BYTES must be a whole number of at least "
                                  "4096, got '12'"),
    ("BERTH_LOG_BACKUPS", "-1", "BERTH_LOG_BACKUPS must be a whole number of at least 1, "
                                "got '-1'"),
])
def test_a_bad_log_setting_is_one_sentence(clean_logging: None, monkeypatch: pytest.MonkeyPatch,
                                           name: str, value: str, sentence: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(InvalidArgument) as err:
        logs.configure()
    assert str(err.value) == sentence


def test_json_lines_at_the_level_asked_rotated(clean_logging: None, tmp_path: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    path = os.path.join(tmp_path, "engine.log")
    monkeypatch.setenv("BERTH_LOG_FILE", path)
    monkeypatch.setenv("BERTH_LOG_FORMAT", "json")
    monkeypatch.setenv("BERTH_LOG_LEVEL", "warning")
    monkeypatch.setenv("BERTH_LOG_MAX_BYTES", "4096")
    monkeypatch.setenv("BERTH_LOG_BACKUPS", "2")
    logs.configure()
    log = logging.getLogger("berth.test")
    log.info("not at this level")
    logging.getLogger("alembic.runtime").warning("a library's warning still shows")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed: %s", "ünïcode")
    first = _entries(path)
    assert [e["message"] for e in first] == ["a library's warning still shows", "failed: ünïcode"]
    assert first[1]["level"] == "ERROR" and first[1]["logger"] == "berth.test"
    assert "ValueError: boom" in first[1]["exc"] and first[1]["time"].endswith("+00:00")
    for i in range(200):
        log.warning("line %03d %s", i, "x" * 80)
    names = sorted(n for n in os.listdir(tmp_path) if n.startswith("engine.log"))
    assert names == ["engine.log", "engine.log.1", "engine.log.2"]
    assert all(os.path.getsize(os.path.join(tmp_path, n)) <= 4096 for n in names)
    newest = [e["message"] for e in _entries(path)]
    assert newest[-1].startswith("line 199 ")


def test_the_detached_engine_logs_json_without_alembic_info(place: Place) -> None:
    env = dict(place.env, BERTH_LOG_FORMAT="json")
    bad = subprocess.run([sys.executable, "-m", "berth", "up", "-d"],
                         env=dict(env, BERTH_LOG_LEVEL="chatty"), capture_output=True,
                         text=True, timeout=90, check=False)
    assert bad.returncode == 125 and bad.stderr.strip().startswith(
        "berth: BERTH_LOG_LEVEL must be one of"), bad.stderr
    assert not os.path.exists(place.root), "a refused setting created the engine's files"
    up = subprocess.run([sys.executable, "-m", "berth", "up", "-d"], env=env,
                        capture_output=True, text=True, timeout=90, check=False)
    assert up.returncode == 0, up.stderr
    with open(os.path.join(place.root, "berth.log")) as f:
        entries = [json.loads(line) for line in f]
    assert any(e["message"].startswith("berth up: node local") for e in entries)
    assert not [e for e in entries if e["logger"].startswith("alembic")
                and e["level"] == "INFO"]
