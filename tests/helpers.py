"""Small waiting helpers shared by the test folders: conditions with deadlines, never sleeps."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.01,
    what: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns something truthy or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def rss_kib(pid: int) -> int:
    """A process's resident memory (VmRSS), in KiB: what a flood must not grow."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


def systemd_is_pid1() -> bool:
    """Whether this machine runs systemd as PID 1, asked of PID 1 itself: the
    ``/run/systemd/system`` directory alone exists wherever systemd's packages were
    installed, also in a container whose PID 1 is something else."""
    try:
        with open("/proc/1/comm") as f:
            return f.read().strip() == "systemd"
    except OSError:
        return False
