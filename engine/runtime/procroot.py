"""A running container's own root directory, as its process sees it.

``/proc/PID/root`` is the root of the process's mount namespace: a container's
volumes, tmpfs and bind mounts are all there, as its processes see them (podman's
cp works in that namespace too). The pid comes from the log and may be stale: the
container's process can have ended and its number gone to another process, whose
root may be the host's ``/``. So ``/proc/PID`` is opened first, the process is
checked through that directory (it must be in the container's cgroup), and its root
is opened from the same directory: a process that ended after the check leaves the
directory pointing at nothing (the open fails), never at the new owner of the pid.
"""

from __future__ import annotations

import os

from engine.inroot import Root

_MAX_CGROUP_FILE = 64 * 1024


def container_root(pid: int, container_id: str) -> Root | None:
    """The root ``pid`` sees if it is a process of ``container_id`` (a full id, part
    of the container's cgroup path under either cgroup manager); None if it is gone
    or belongs to something else."""
    if pid <= 0 or len(container_id) != 64:
        return None
    try:
        proc = os.open(f"/proc/{pid}", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError):
        return None
    try:
        if not _in_cgroup_of(proc, container_id):
            return None
        root = os.open("root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=proc)
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError, PermissionError):
        return None  # it ended (or is a zombie, whose root is gone)
    finally:
        os.close(proc)
    return Root(root, f"/proc/{pid}/root")


def _in_cgroup_of(proc: int, container_id: str) -> bool:
    """Is the process of ``/proc/PID`` (``proc``) in a cgroup of ``container_id``?
    Lines of ``cgroup`` are ``ID:CONTROLLERS:PATH``; runc puts a container in
    ``PARENT/ID`` (cgroupfs) or ``machine.slice/berth-ID.scope`` (systemd)."""
    fd = os.open("cgroup", os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc)
    try:
        text = os.read(fd, _MAX_CGROUP_FILE).decode("utf-8", "replace")
    finally:
        os.close(fd)
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        if any(part == container_id or part == f"berth-{container_id}.scope"
               for part in path.split("/")):
            return True
    return False
