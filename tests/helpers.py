"""Small waiting helpers shared by the test folders: conditions with deadlines, never sleeps."""

from __future__ import annotations

import os
import re
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


def mounts_under(*roots: str) -> list[str]:
    """The mount points at or below any of ``roots`` (this mount namespace's
    /proc/self/mountinfo, octal escapes decoded): what an engine must have unmounted
    once its containers are removed."""
    prefixes = [os.path.realpath(r).rstrip("/") for r in roots]
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4]
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), point)
            if any(point == p or point.startswith(p + "/") for p in prefixes):
                found.append(point)
    return found
