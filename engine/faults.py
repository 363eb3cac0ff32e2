"""Named crash points for fault tests: ``crash_point("checkpoint.dumped")`` kills the
process with SIGKILL right there, so a test can put a worker's death inside one exact
window (after an intent is recorded, after CRIU wrote an image, after an exec started)
instead of hoping a timed ``kill -9`` lands in it.

It cannot be switched on in production by accident: two things must agree.
``BERTH_FAULT_POINTS`` names the points (comma-separated), and ``BERTH_FAULT_ARMED``
names a file that the same user owns, that nobody else can write, and whose content is
exactly ``ARMING_LINE`` followed by the same point list. A stray environment variable
alone (copied from a test shell, set in a unit file) does nothing; the test harness
writes the file into its own temporary directory. A process that is armed says so
loudly in its log at the first point it passes.
"""

from __future__ import annotations

import logging
import os
import signal
import stat

log = logging.getLogger("berth.faults")

ARMING_LINE = "berth fault injection for tests: this process may kill itself"
POINTS_ENV = "BERTH_FAULT_POINTS"
ARMED_ENV = "BERTH_FAULT_ARMED"

_armed: frozenset[str] | None = None


def arming_text(points: str) -> str:
    """What the arming file must hold for ``points`` (used by the test harness)."""
    return f"{ARMING_LINE}\n{points}\n"


def _load() -> frozenset[str]:
    points = os.environ.get(POINTS_ENV, "")
    path = os.environ.get(ARMED_ENV, "")
    if not points or not path:
        return frozenset()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            st = os.fstat(fd)
            text = os.read(fd, 4096).decode(errors="replace")
        finally:
            os.close(fd)
    except OSError:
        return frozenset()
    if (not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid()
            or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or text != arming_text(points)):
        return frozenset()
    names = frozenset(p.strip() for p in points.split(",") if p.strip())
    log.warning("FAULT INJECTION ARMED in pid %d: %s", os.getpid(), ", ".join(sorted(names)))
    return names


def crash_point(name: str) -> None:
    """Die here with SIGKILL if a test armed this point; otherwise do nothing."""
    global _armed
    if _armed is None:
        _armed = _load()
    if name in _armed:
        log.warning("fault point %s reached: killing pid %d", name, os.getpid())
        os.kill(os.getpid(), signal.SIGKILL)
