"""``scripts/install.sh`` as the README describes it: a run on a host where everything
is installed changes nothing (no apt, no pip, no download, no file rewritten), and
its closing self-check says clearly which part is missing.

Both run the real script as root against this machine's real install. Nothing is
uninstalled: a missing part is a PATH without it; the apt and pip steps are
watched through commands of the same name that come first on PATH and record
that they were called.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "scripts" / "install.sh"
CRIU_PREFIX = Path(os.environ.get("BERTH_CRIU_PREFIX", "/opt/berth/criu"))
WATCHED = ("apt-get", "apt", "pip", "pip3", "wget", "curl")


@pytest.fixture
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="berth-install-") as d:
        yield Path(d)


def _venv() -> Path:
    """The venv this suite runs in: the one install.sh made."""
    return Path(os.environ.get("BERTH_VENV", sys.prefix))


def _env(path: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BERTH_", "PYTEST_"))}
    env.update(PATH=path, BERTH_VENV=str(_venv()), **extra)
    return env


def _watchers(directory: Path, log: Path) -> None:
    """Commands named like the installers that only record their call and fail."""
    directory.mkdir()
    for name in WATCHED:
        script = directory / name
        script.write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\nexit 1\n')
        script.chmod(0o755)


def _snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """mtime and size of every file under ``roots``: what a rewrite would change."""
    seen: dict[str, tuple[int, int]] = {}
    for root in roots:
        if root.is_file():
            st = root.stat()
            seen[str(root)] = (st.st_mtime_ns, st.st_size)
            continue
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                p = os.path.join(dirpath, name)
                st = os.lstat(p)
                seen[p] = (st.st_mtime_ns, st.st_size)
    return seen


def test_a_repeat_run_changes_nothing(scratch: Path) -> None:
    venv = _venv()
    stamp = venv / ".berth-install-stamp"
    want = (f"{hashlib.sha256((REPO / 'pyproject.toml').read_bytes()).hexdigest()} "
            f"{sys.version.split()[0]}")
    if not stamp.is_file() or stamp.read_text().strip() != want:
        pytest.fail(f"{venv} was not installed by scripts/install.sh from this pyproject.toml "
                    "(its stamp differs): run scripts/install.sh first")
    log = scratch / "calls"
    _watchers(scratch / "bin", log)
    watched = [stamp, CRIU_PREFIX, Path("/etc/berth/criu-path")]
    before = _snapshot(*[p for p in watched if p.exists()])
    began = time.monotonic()
    done = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True, timeout=300,
                          env=_env(f"{scratch / 'bin'}:{os.environ['PATH']}"), check=False)
    took = time.monotonic() - began
    assert done.returncode == 0, done.stderr[-3000:]
    assert not log.exists(), f"a repeat run called an installer: {log.read_text()}"
    assert "already installed:" in done.stderr
    assert "up to date" in done.stderr and "already set up" in done.stderr
    assert _snapshot(*[p for p in watched if p.exists()]) == before
    # The README says under a second; the bound here is what a loaded machine keeps.
    assert took < 60, f"a repeat run took {took:.1f}s"


def _path_without(scratch: Path, missing: str) -> str:
    """A PATH with every command of the real one except ``missing`` (symlinks)."""
    bin_dir = scratch / "path"
    bin_dir.mkdir()
    for directory in os.environ["PATH"].split(":"):
        if not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            target = bin_dir / entry.name
            if entry.name == missing or target.exists():
                continue
            try:
                if stat.S_ISDIR(os.stat(entry.path).st_mode):
                    continue
            except OSError:
                continue
            target.symlink_to(entry.path)
    return str(bin_dir)


@pytest.mark.parametrize("missing", ["runc", "conmon"])
def test_the_self_check_names_the_missing_part(scratch: Path, missing: str) -> None:
    done = subprocess.run(["bash", str(INSTALL), "--no-venv", "--no-criu"], capture_output=True,
                          text=True, timeout=300, env=_env(_path_without(scratch, missing)),
                          check=False)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith(f"ERROR: verification failed: `{missing} --version`")
    assert errors[0] == done.stderr.splitlines()[-1]  # it stops there
