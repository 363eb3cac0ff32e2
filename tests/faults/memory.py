"""Memory (and CPU time) of a running process, read from ``/proc/PID`` (Linux).

``VmRSS`` is what the process holds now, ``VmHWM`` the most it ever held; a
:class:`RssSampler` records the largest ``VmRSS`` of some processes while a test
runs its load, for figures taken under the load rather than after it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from types import TracebackType

MIB = 1024 * 1024


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name == field:
                return int(value.split()[0])
    raise AssertionError(f"/proc/{pid}/status has no {field}")


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` now, in MiB."""
    return _status_kib(pid, "VmRSS") / 1024


def peak_mib(pid: int) -> float:
    """The largest resident memory ``pid`` has had, in MiB (VmHWM)."""
    return _status_kib(pid, "VmHWM") / 1024


def cpu_seconds(pid: int) -> float:
    """CPU time ``pid`` has used so far (user + system), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RssSampler:
    """Samples the VmRSS of ``pids`` every ``interval`` seconds inside a ``with``;
    ``peak[pid]`` is the largest seen (MiB), ``first[pid]`` the one at entry."""

    def __init__(self, pids: dict[str, int], interval: float = 0.05) -> None:
        self.pids = pids
        self.interval = interval
        self.first = {name: rss_mib(pid) for name, pid in pids.items()}
        self.peak = dict(self.first)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for name, pid in self.pids.items():
                # (a process that ended is the test's to notice, not the sampler's)
                with contextlib.suppress(OSError, AssertionError):
                    self.peak[name] = max(self.peak[name], rss_mib(pid))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(5)

    def report(self) -> str:
        return ", ".join(f"{name} {self.first[name]:.0f} -> {self.peak[name]:.0f} MiB"
                         for name in self.pids)
