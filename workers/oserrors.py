"""File-system errors a handler meets while writing the state directory.

Bundles, logs and exec pid files are written under ``BERTH_ROOT``/``BERTH_RUN``
outside the runtime's typed errors; when that directory is full or read-only the
publisher should read one clear sentence (and a stable code), not a traceback's
last line.
"""

from __future__ import annotations

import errno

from engine.errors import BerthError, PermissionDenied, StateUnwritable

_FULL = {errno.ENOSPC, errno.EDQUOT}


def from_os_error(exc: OSError) -> BerthError:
    """A typed error for an OSError raised while handling a command."""
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno in _FULL:
        return StateUnwritable(f"the state directory is full: no space left on device{where}")
    if exc.errno == errno.EROFS:
        return StateUnwritable(f"the state directory is on a read-only file system{where}")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return PermissionDenied(f"permission denied writing{where}")
    return BerthError(f"internal error: {exc.strerror or exc}{where}")
