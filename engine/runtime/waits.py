"""Bounded waits for processes to go away (libpod's waitContainerStop/waitPidsStop).

A pidfd becomes readable the moment its process exits, so the wait is
event-driven instead of the seed's 100 ms kill(pid, 0) polling.
"""

from __future__ import annotations

import errno
import os
import select
import time
from collections.abc import Iterable


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_pids_exit(pids: Iterable[int], timeout: float) -> bool:
    """Wait until every pid has exited; return False if the timeout ran out first."""
    deadline = time.monotonic() + max(timeout, 0.0)
    fds: list[int] = []
    try:
        for pid in pids:
            if pid <= 0:
                continue
            try:
                fds.append(os.pidfd_open(pid))
            except OSError as exc:
                if exc.errno != errno.ESRCH:
                    raise
        pending = list(fds)
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            # poll, not select: a busy worker's descriptor numbers pass 1024
            poller = select.poll()
            for fd in pending:
                poller.register(fd, select.POLLIN)
            ready = {fd for fd, _mask in poller.poll(max(1, int(left * 1000)))}
            pending = [fd for fd in pending if fd not in ready]
        return True
    finally:
        for fd in fds:
            os.close(fd)


def readable(fd: int, timeout: float | None) -> bool:
    """Whether ``fd`` becomes readable within ``timeout`` seconds (None: no limit).
    poll, not select: a busy worker's descriptor numbers pass 1024, where select()
    refuses them."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    wait_ms = None if timeout is None else max(0, int(timeout * 1000))
    return bool(poller.poll(wait_ms))
