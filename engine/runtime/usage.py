"""What a container uses right now: its cgroup's counters and its processes.

Reads, never events (``berth stats``, ``berth top``): counters come from the cgroup
files the kernel keeps for the container (cgroup v2's unified files, or v1's per
controller where the host still mounts v1, as this machine kind may), network bytes
from ``/proc/PID/net/dev`` inside the container's network namespace, processes from
``/proc``. Counters are cumulative; a CPU percentage needs two samples, which the
caller takes (``cpu_percent``).
"""

from __future__ import annotations

import os
import pwd
import time
from dataclasses import asdict, dataclass
from typing import Any

CGROUP_ROOT = "/sys/fs/cgroup"
UNLIMITED = 2**62
"""Memory limits at or above this mean "no limit" (v1 reports about 2**63)."""


@dataclass(frozen=True, slots=True)
class Usage:
    cpu_ns: int
    memory: int
    memory_limit: int | None
    pids: int
    block_read: int
    block_write: int
    net_rx: int
    net_tx: int
    sampled_ns: int

    def to_data(self) -> dict[str, Any]:
        return asdict(self)


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _int(text: str | None) -> int:
    try:
        return int(text) if text is not None else 0
    except ValueError:
        return 0


def _limit(text: str | None) -> int | None:
    if text is None or text == "max":
        return None
    value = _int(text)
    return None if value >= UNLIMITED else value


def _v2(path: str) -> tuple[int, int, int | None, int, int, int]:
    stat = dict(line.split(" ", 1) for line in (_read(os.path.join(path, "cpu.stat")) or
                                                "").splitlines() if " " in line)
    read = write = 0
    for line in (_read(os.path.join(path, "io.stat")) or "").splitlines():
        for item in line.split()[1:]:
            key, _, value = item.partition("=")
            read += _int(value) if key == "rbytes" else 0
            write += _int(value) if key == "wbytes" else 0
    return (_int(stat.get("usage_usec")) * 1000, _int(_read(os.path.join(path, "memory.current"))),
            _limit(_read(os.path.join(path, "memory.max"))),
            _int(_read(os.path.join(path, "pids.current"))), read, write)


def _v1(rel: str) -> tuple[int, int, int | None, int, int, int]:
    def file(controller: str, name: str) -> str | None:
        return _read(os.path.join(CGROUP_ROOT, controller, rel, name))

    read = write = 0
    for line in (file("blkio", "blkio.throttle.io_service_bytes") or "").splitlines():
        parts = line.split()
        if len(parts) == 3:
            read += _int(parts[2]) if parts[1] == "Read" else 0
            write += _int(parts[2]) if parts[1] == "Write" else 0
    return (_int(file("cpuacct", "cpuacct.usage")), _int(file("memory", "memory.usage_in_bytes")),
            _limit(file("memory", "memory.limit_in_bytes")), _int(file("pids", "pids.current")),
            read, write)


def _net(pid: int | None) -> tuple[int, int]:
    rx = tx = 0
    if not pid:
        return rx, tx
    for line in (_read(f"/proc/{pid}/net/dev") or "").splitlines()[2:]:
        name, _, rest = line.partition(":")
        fields = rest.split()
        if name.strip() != "lo" and len(fields) >= 9:
            rx, tx = rx + _int(fields[0]), tx + _int(fields[8])
    return rx, tx


def usage(cgroups_path: str, pid: int | None) -> Usage:
    """The container's counters now (``cgroups_path``: its cgroupfs path, ``/berth/ID``)."""
    rel = cgroups_path.lstrip("/")
    unified = os.path.join(CGROUP_ROOT, rel)
    if os.path.exists(os.path.join(CGROUP_ROOT, "cgroup.controllers")):
        counters = _v2(unified)
    else:
        counters = _v1(rel)
    rx, tx = _net(pid)
    return Usage(*counters, net_rx=rx, net_tx=tx, sampled_ns=time.monotonic_ns())


def cpu_percent(before: dict[str, Any], after: dict[str, Any]) -> float:
    """CPU use between two samples, as Docker shows it (100% is one CPU busy)."""
    elapsed = float(after["sampled_ns"] - before["sampled_ns"])
    used = float(after["cpu_ns"] - before["cpu_ns"])
    return max(0.0, used / elapsed * 100) if elapsed > 0 else 0.0


def _user(pid: int) -> str:
    """The process's owner by name, else by uid (a container's users are often unnamed
    on the host)."""
    try:
        uid = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return "?"
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def processes(pids: list[int]) -> list[dict[str, Any]]:
    """``top``'s rows for these host pids: pid, user, CPU time, command line."""
    ticks = os.sysconf("SC_CLK_TCK")
    rows = []
    for pid in sorted(pids):
        stat = _read(f"/proc/{pid}/stat")
        if stat is None:
            continue  # ended meanwhile
        fields = stat.rsplit(")", 1)[1].split()
        seconds = (_int(fields[11]) + _int(fields[12])) // ticks
        cmdline = (_read(f"/proc/{pid}/cmdline") or "").replace("\0", " ").strip()
        user = _user(pid)
        rows.append({"pid": pid, "user": user,
                     "time": f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}",
                     "command": cmdline or stat.split("(", 1)[1].rsplit(")", 1)[0]})
    return rows
