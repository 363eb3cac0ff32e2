"""podman's global options and noun-verb spellings: the pure parts (words in, words
out) and the CLI process itself (no engine needed for ``version``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from berth.cli import forms, globalopts
from engine.errors import InvalidArgument

REPO = str(Path(__file__).resolve().parents[2])


def _berth(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "berth", *args], capture_output=True,
                          text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": REPO, **(env or {})})


def test_split_takes_podman_options_before_the_verb_only() -> None:
    given, rest = globalopts.split(["--root", "/r", "--runroot=/x", "--timeout", "3",
                                    "--log-level", "debug", "run", "--root", "img"])
    assert (given.root, given.runroot, given.log_level) == ("/r", "/x", "debug")
    assert rest == ["--timeout", "3", "run", "--root", "img"]  # after the verb: untouched


@pytest.mark.parametrize("argv, sentence", [
    (["--log-level", "telepathic", "ps"], "invalid log level"),
    (["--events-backend=file", "ps"], "event log"),
    (["--storage-driver", "vfs", "ps"], "overlayfs"),
    (["--storage-opt", "x=y", "ps"], "no storage options"),
    (["--root"], "needs a value"),
    (["--root", "", "ps"], "give a path"),
    (["--root", "/a\0b", "ps"], "NUL"),
])
def test_split_refuses_in_one_sentence(argv: list[str], sentence: str) -> None:
    with pytest.raises(InvalidArgument, match=sentence):
        globalopts.split(argv)


def test_overlay_is_the_storage_driver_berth_has() -> None:
    given, rest = globalopts.split(["--storage-driver=overlay", "ps"])
    assert rest == ["ps"]


@pytest.mark.parametrize("argv, want", [
    (["container", "inspect", "web"], ["inspect", "web"]),
    (["container", "ls", "-a"], ["ps", "-a"]),
    (["container", "list"], ["ps"]),
    (["--timeout", "5", "container", "rm", "-f", "x"], ["--timeout", "5", "rm", "-f", "x"]),
    (["container", "exists", "x"], ["container", "exists", "x"]),  # the noun's own verb
    (["container", "prune", "-f"], ["container", "prune", "-f"]),
    (["image", "list"], ["image", "ls"]),
    (["run", "container", "ls"], ["run", "container", "ls"]),  # an image named container
])
def test_podman_forms(argv: list[str], want: list[str]) -> None:
    assert forms.podman_forms(argv) == want


def test_log_level_prints_podman_log_lines_at_and_above_the_level() -> None:
    debug = _berth("--log-level=debug", "version")
    assert debug.returncode == 0, debug.stderr
    assert " level=debug " in debug.stderr and " level=info " in debug.stderr
    assert " level=trace " not in debug.stderr
    trace = _berth("--log-level=trace", "version")
    assert " level=trace " in trace.stderr
    quiet = _berth("--log-level=warn", "version")
    assert "level=" not in quiet.stderr
    bad = _berth("--log-level=telepathic", "version")
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.strip().endswith("fatal, panic")


def test_out_and_noout_redirect_standard_output(tmp_path: Path) -> None:
    out = tmp_path / "version.txt"
    done = _berth("--out", str(out), "version")
    assert done.returncode == 0 and done.stdout == ""
    assert out.read_text().startswith("Version:")
    silent = _berth("--noout", "version")
    assert silent.returncode == 0 and silent.stdout == ""
    nowhere = _berth("--out", str(tmp_path / "no" / "such" / "file"), "version")
    assert nowhere.returncode == 125 and "cannot write --out file" in nowhere.stderr


def test_root_and_runroot_name_the_engine(tmp_path: Path) -> None:
    """``--runroot`` is where the client looks for the engine's sockets: a run
    directory with no engine in it is reported as such (not the default one's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
    done = subprocess.run([sys.executable, "-m", "berth", "--timeout", "1", "--root",
                           str(tmp_path / "r"), "--runroot", str(tmp_path / "run"), "ps"],
                          capture_output=True, text=True, timeout=60,
                          env={**env, "PYTHONPATH": REPO})
    assert done.returncode == 125
    assert str(tmp_path / "run") in done.stderr, done.stderr
