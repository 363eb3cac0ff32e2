"""The README's "Two commands", parsed from the README and run exactly as printed, so
the README and the scripts cannot drift apart.

As root both must work. As a user who is not root, with no sudo to turn to, each must
say in one sentence what to do and change nothing; with sudo, each hands itself to
sudo with its arguments and the caller's BERTH_* variables.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.errors import BerthError
from engine.runtime import OCIRuntime
from workers.worker import WorkerConfig

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Two commands"
# The README names each command in the comment above it.
KINDS = {"main": "main job", "test": "test suite"}
# What the nested test command runs instead of the whole suite (which holds this file).
SMALL_TEST_FILE = "tests/projection/test_events.py"
NOBODY = 65534
# Set in the environment of the nested test command: if it ever ran this file again,
# the file fails at once instead of recursing.
NESTED = "BERTH_README_NESTED"


def readme_commands() -> dict[str, str]:
    """The commands of the section's sh block, keyed "main" and "test"."""
    text = (REPO / "README.md").read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start:end if end != -1 else len(text)]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    commands: dict[str, str] = {}
    comment = ""
    for line in (raw.strip() for raw in block.splitlines()):
        if line.startswith("#"):
            comment = line
        elif line:
            kinds = [k for k, words in KINDS.items() if words in comment]
            assert len(kinds) == 1, f"README: no main job/test suite comment above {line!r}"
            commands[kinds[0]] = line
            comment = ""
    assert sorted(commands) == sorted(KINDS), f"README's {SECTION!r} block: {commands}"
    return commands


@pytest.fixture(autouse=True)
def _not_nested() -> None:
    if os.environ.get(NESTED):
        pytest.fail("the README's test command ran the whole suite instead of one file")


@dataclass(frozen=True)
class Place:
    """A private directory: state and run directories no other test uses."""

    base: Path

    @property
    def root(self) -> Path:
        return self.base / "root"

    @property
    def run(self) -> Path:
        return self.base / "run"

    def env(self, **extra: str) -> dict[str, str]:
        """The caller's environment without pytest's own variables or berth settings
        that would point the scripts elsewhere (BERTH_VENV, where the venv lives, stays)."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PYTEST_") and (not k.startswith("BERTH_") or k == "BERTH_VENV")}
        env.update(BERTH_ROOT=str(self.root), BERTH_RUN=str(self.run), **extra)
        return env


@pytest.fixture
def place() -> Iterator[Place]:
    base = Path(tempfile.mkdtemp(prefix="berth-readme-", dir="/tmp"))  # short: socket paths
    base.chmod(0o755)
    yield Place(base)
    shutil.rmtree(base, ignore_errors=True)


def run_printed(command: str, cwd: Path, env: dict[str, str], timeout: float,
                prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """``command`` through bash as a user types it. On a timeout the script gets SIGTERM
    first, so that its own clean-up (berth down) runs, and SIGKILL after a grace period."""
    proc = subprocess.Popen([*prefix, "bash", "-c", command], cwd=cwd, env=env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        pytest.fail(f"{command!r} did not finish within {timeout:g}s:\n"
                    f"{out[-3000:]}\n{err[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def remove_leftovers(place: Place) -> None:
    """Stop an engine and containers that a failed main job left behind."""
    venv = Path(os.environ.get("BERTH_VENV", REPO / ".venv"))
    if (venv / "bin" / "berth").exists():
        subprocess.run([str(venv / "bin" / "berth"), "down"], env=place.env(), check=False,
                       capture_output=True, timeout=60)
    containers = place.root / "containers"
    if not containers.is_dir():
        return
    runtime = OCIRuntime(WorkerConfig(node="local", root=str(place.root), run=str(place.run))
                         .runtime_config())
    for cid in os.listdir(containers):
        with contextlib.suppress(BerthError):
            runtime.delete(cid, force=True)
        runtime.cleanup(cid)


@pytest.mark.timeout(1200)
def test_the_main_job_command_runs_as_printed(place: Place) -> None:
    if os.getuid() != 0:
        pytest.fail("the README's commands are run as root; run the suite as root")
    try:
        done = run_printed(readme_commands()["main"], REPO, place.env(), timeout=1000)
        output = done.stdout + done.stderr
        assert done.returncode == 0, output[-5000:]
        assert "hello from a container" in done.stdout
        assert "verified: rebuild equals the incremental read model" in done.stdout
        assert "audit chain verified" in done.stdout
        assert "berth is down" in done.stdout
        # It cleaned up after itself: no engine, no container left.
        assert not (place.run / "berth.pid").exists()
        assert os.listdir(place.root / "containers") == []
    finally:
        remove_leftovers(place)


@pytest.mark.timeout(900)
def test_the_test_command_runs_as_printed(place: Place) -> None:
    if os.getuid() != 0:
        pytest.fail("the README's commands are run as root; run the suite as root")
    report = place.base / "junit.xml"
    env = place.env(PYTEST_ADDOPTS=f"{SMALL_TEST_FILE} --junitxml={report}", **{NESTED: "1"})
    done = run_printed(readme_commands()["test"], REPO, env, timeout=800)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    suite = ET.parse(report).getroot().find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert len(cases) > 0
    assert {c.get("classname") for c in cases} == {"tests.projection.test_events"}
    assert (suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("0", "0", "0")


def copy_of_scripts(place: Place) -> Path:
    """The scripts in a directory an unprivileged user can read (the checkout may not be)."""
    clone = place.base / "clone"
    shutil.copytree(REPO / "scripts", clone / "scripts")
    clone.chmod(0o755)
    return clone


def path_without_sudo(place: Place) -> str:
    """PATH as it is, or, where sudo is installed, a copy of it (symlinks) without sudo."""
    path = os.environ.get("PATH", os.defpath)
    if shutil.which("sudo", path=path) is None:
        return path
    shadow = place.base / "bin"
    shadow.mkdir()
    for entry in path.split(os.pathsep):
        if not os.path.isdir(entry):
            continue
        for name in os.listdir(entry):
            if name != "sudo" and not (shadow / name).exists():
                (shadow / name).symlink_to(os.path.join(entry, name))
    shadow.chmod(0o755)
    return str(shadow)


def as_nobody() -> tuple[str, ...]:
    return ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_without_root_or_sudo_it_says_what_to_do(place: Place, kind: str) -> None:
    command = readme_commands()[kind]
    clone = copy_of_scripts(place)
    venv = place.base / "venv"
    env = place.env(PATH=path_without_sudo(place), HOME=str(place.base), BERTH_VENV=str(venv))
    done = run_printed(command, clone, env, timeout=60, prefix=as_nobody())
    assert done.returncode != 0
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    script = command.rsplit("/", 1)[-1]
    assert lines[0] == (f"ERROR: {script} must run as root and sudo is not installed: "
                        f"run it again as root, for example with: su -c '{command}'")
    # Nothing was installed or started.
    assert sorted(os.listdir(clone)) == ["scripts"]
    assert not venv.exists() and not place.root.exists() and not place.run.exists()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_without_root_it_hands_itself_to_sudo(place: Place, kind: str) -> None:
    """A recording stand-in for sudo (the real one needs a sudoers rule for the user):
    what matters here is what the script asks sudo to run, and with which variables."""
    command = readme_commands()[kind]
    clone = copy_of_scripts(place)
    stand_in = place.base / "sudo-bin"
    stand_in.mkdir(mode=0o755)
    (stand_in / "sudo").write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    (stand_in / "sudo").chmod(0o755)
    env = place.env(PATH=f"{stand_in}:{path_without_sudo(place)}", HOME=str(place.base),
                    BERTH_VENV=str(place.base / "venv"), BERTH_DB="sqlite:////nonexistent/x.db")
    done = run_printed(command, clone, env, timeout=60, prefix=as_nobody())
    assert done.returncode == 0, done.stderr
    argv = done.stdout.splitlines()
    assert len(argv) == 4, argv
    keep, separator, shell, script = argv
    assert keep.startswith("--preserve-env=")
    assert set(keep.removeprefix("--preserve-env=").split(",")) == {
        k for k in env if k.startswith("BERTH_")}
    assert (separator, shell) == ("--", "bash")
    assert script == str(clone / command.removeprefix("./"))
    assert "again through sudo" in done.stderr
    assert sorted(os.listdir(clone)) == ["scripts"]
