"""What the suite needs from the host before it starts: free inotify instances and
descriptors. Each engine a test starts watches its exit files (and attach sockets)
with inotify, and the kernel counts instances per user (``max_user_instances``, 128
by default), whoever holds them: when another program on the machine has taken them,
tests would error one by one at set-up. The check says so once, in one line."""

from __future__ import annotations

import os
import resource

INOTIFY_PER_PROCESS = 8
"""inotify instances one test process may hold at once: its engines' exit and attach
watches, a killed worker's successor starting before the old one is reaped."""
DESCRIPTORS_PER_PROCESS = 4096
"""Open files one test process may need (test_many_descriptors opens over a thousand)."""


def inotify_in_use(uid: int) -> int:
    """inotify instances held by processes of ``uid`` (the kernel's per-user count)."""
    used = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:inotify":
                    used += 1
        except OSError:
            continue  # ended meanwhile, or not ours to read
    return used


def shortage(processes: int) -> str | None:
    """One sentence on what the host lacks for ``processes`` test processes, or None."""
    try:
        with open("/proc/sys/fs/inotify/max_user_instances") as f:
            limit = int(f.read())
    except (OSError, ValueError):
        limit = -1
    if limit >= 0:
        free = limit - inotify_in_use(os.getuid())
        need = INOTIFY_PER_PROCESS * processes
        if free < need:
            return (f"only {free} of {limit} inotify instances are free for uid {os.getuid()} "
                    f"and the tests need {need}: stop what holds them or raise "
                    "fs.inotify.max_user_instances")
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < DESCRIPTORS_PER_PROCESS:
        return (f"the open-files limit is {soft} and the tests need "
                f"{DESCRIPTORS_PER_PROCESS}: raise it (ulimit -n)")
    return None
