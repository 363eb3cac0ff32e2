"""The suite refuses to start, in one line, on a host that lacks what it needs."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

from tests.resources import DESCRIPTORS_PER_PROCESS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _low_open_files() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (DESCRIPTORS_PER_PROCESS // 4, hard))


def test_too_few_descriptors_stop_the_suite_at_start_in_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/test_readme.py"],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True,
        timeout=120, check=False, preexec_fn=_low_open_files)
    assert done.returncode == 4, (done.stdout, done.stderr)
    sentence = (f"berth tests cannot run here: the open-files limit is "
                f"{DESCRIPTORS_PER_PROCESS // 4} and the tests need {DESCRIPTORS_PER_PROCESS}: "
                "raise it (ulimit -n)")
    assert sentence in done.stdout + done.stderr, (done.stdout, done.stderr)
    assert "passed" not in done.stdout
