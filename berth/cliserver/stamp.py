"""What a server was started from: the files of the modules it has imported and the
configuration file. A server compares a fresh stamp with the one it took at start
before each command (one ``stat`` a file, ~60 files: tens of microseconds) and
replaces itself when they differ, so a command never runs on code or settings older
than what a fresh ``python -m berth`` would load. Modules it has not imported are
read from disk by the child that needs them, so they are always current.
"""

from __future__ import annotations

import os
import sys

OWN_PACKAGES = ("berth", "bus", "engine", "workers")


def watched_files() -> list[str]:
    """berth's own imported modules, the interpreter, and the configuration file."""
    files = [sys.executable]
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if path and name.partition(".")[0] in OWN_PACKAGES:
            files.append(path)
    files.append(os.environ.get("BERTH_CONFIG") or "/etc/berth/berth.toml")
    return sorted(set(files))


def take(files: list[str]) -> tuple[tuple[int, int, int], ...]:
    """Each file's (inode, size, mtime in ns); a missing one is (0, 0, 0)."""
    stamp = []
    for path in files:
        try:
            st = os.stat(path)
            stamp.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            stamp.append((0, 0, 0))
    return tuple(stamp)
