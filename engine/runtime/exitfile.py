"""conmon's exit files: the fast, runc-free way to learn that a container exited."""

from __future__ import annotations

import os
from datetime import UTC, datetime

from tenacity import RetryError, Retrying, retry_if_result, stop_after_attempt, wait_exponential

from engine.runtime.types import ExitStatus as ExitStatus  # noqa: PLC0414 (re-export)


def read_exit_file(path: str) -> ExitStatus | None:
    """Exit code and time from conmon's exit file, or None while it is absent.

    The finish time is the file's mtime, as libpod's handleExitFile takes it.
    An empty file is treated as absent: conmon may not have written it yet.
    """
    try:
        with open(path) as f:
            text = f.read().strip()
            st = os.fstat(f.fileno())
    except FileNotFoundError:
        return None
    if not text:
        return None
    try:
        code = int(text)
    except ValueError:
        code = -1
    return ExitStatus(code, datetime.fromtimestamp(st.st_mtime, tz=UTC))


def wait_exit_file(
    path: str, *, first_wait: float = 0.5, factor: float = 1.2, steps: int = 6
) -> ExitStatus | None:
    """Wait with exponential backoff for conmon to write the exit file.

    Mirrors the seed's kwait.ExponentialBackoff{500ms, 1.2, 6 steps}: runc may
    report "stopped" a moment before conmon has reaped the process.
    """
    retrying = Retrying(
        stop=stop_after_attempt(steps),
        wait=wait_exponential(multiplier=first_wait, exp_base=factor, min=first_wait),
        retry=retry_if_result(lambda r: r is None),
    )
    try:
        result: ExitStatus | None = retrying(read_exit_file, path)
        return result
    except RetryError:
        return None
