"""The worker's own directories and database file: private to the user that runs it.

``$BERTH_ROOT`` holds the event log (secrets passed with ``-e`` are in it, and in
SQLite's WAL) and ``$BERTH_RUN`` the bus sockets and the runtime's state. Like sshd's
StrictModes, a directory that another user owns is refused with one sentence: its
owner could swap what berth reads and writes there. A directory of ours that others
may read is tightened to 0700, as it would have been had berth created it.
"""

from __future__ import annotations

import logging
import os
import stat

from engine.errors import PermissionDenied

log = logging.getLogger("berth.statedirs")

PRIVATE_UMASK = 0o077
"""The worker's and daemon's umask: whatever they create is theirs alone."""


def private_directory(path: str, what: str) -> str:
    """Create ``path`` (0700) or check an existing one: owned by this user, not open
    to others (tightened if it is ours). Raises PermissionDenied otherwise."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise PermissionDenied(f"{what} {path} cannot be checked: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise PermissionDenied(f"{what} {path} is not a directory")
    uid = os.geteuid()
    if st.st_uid != uid:
        raise PermissionDenied(f"{what} {path} is owned by uid {st.st_uid}, not by this user "
                               f"(uid {uid}): refusing to keep berth's state there")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        try:
            os.chmod(path, mode & ~0o077)
        except OSError as exc:
            raise PermissionDenied(f"{what} {path} has mode {mode:04o} and cannot be made "
                                   f"private: {exc.strerror}") from None
        log.warning("%s %s had mode %04o: tightened to %04o", what, path, mode, mode & ~0o077)
    return path
