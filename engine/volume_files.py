"""A named volume's directory on disk: made, filled from a root filesystem, taken away.

Kept apart from the decisions (``engine.volumes``) and from the service that records
them: these are the only functions that touch ``$BERTH_ROOT/volumes``. Each step that
a crash could cut short leaves something the next attempt recognises: a fill is
copied into a staging directory and renamed into place whole, a removal first renames
the volume out of its name, so a half-copied or half-deleted volume is never seen
under a volume's name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from typing import Final

from engine.copying import resolve_in_root
from engine.errors import RuntimeFailure
from engine.runtime.mounts import volume_data

FILL_DIR: Final = "_fill"
REMOVED_PREFIX: Final = ".removed-"
"""Volumes on their way out; a volume name cannot start with a dot."""
FILL_TIMEOUT: Final = 600.0


def ensure(volumes: str, name: str) -> str:
    """The volume's data directory, made if missing (mode 0755 inside a 0700 root)."""
    os.makedirs(volumes, mode=0o700, exist_ok=True)
    os.makedirs(os.path.join(volumes, name), mode=0o700, exist_ok=True)
    data = volume_data(volumes, name)
    with contextlib.suppress(FileExistsError):
        os.mkdir(data, 0o755)
    return data


def fill(volumes: str, name: str, rootfs: str, target: str) -> bool:
    """Copy the rootfs's directory at ``target`` into the volume if the volume is empty
    and the directory is not, ownership, modes, links and all (podman's copy-up).
    Returns whether it copied."""
    data = ensure(volumes, name)
    source = resolve_in_root(rootfs, target)
    if not os.path.isdir(source) or os.path.islink(source) or not os.listdir(source):
        return False
    if os.listdir(data):
        return False
    staging = os.path.join(volumes, name, FILL_DIR)
    shutil.rmtree(staging, ignore_errors=True)
    try:
        done = subprocess.run(["cp", "-a", "--", source, staging], capture_output=True,
                              text=True, timeout=FILL_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise RuntimeFailure(f"cannot fill volume {name} from {target}: {exc}") from None
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise RuntimeFailure(f"cannot fill volume {name} from {target}: "
                             f"{done.stderr.strip() or 'cp failed'}")
    try:
        os.rmdir(data)  # still empty: nobody wrote to it meanwhile (the volume is locked)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        return False
    os.rename(staging, data)
    return True


def set_aside(volumes: str, name: str) -> str | None:
    """Rename the volume out of its name (the first step of removing it); the new path,
    or None if it had no directory."""
    aside = os.path.join(volumes, f"{REMOVED_PREFIX}{name}-{uuid.uuid4().hex[:12]}")
    try:
        os.rename(os.path.join(volumes, name), aside)
    except FileNotFoundError:
        return None
    return aside


def put_back(volumes: str, name: str, aside: str | None) -> None:
    """Undo ``set_aside`` (its removal could not be recorded)."""
    if aside is not None:
        os.rename(aside, os.path.join(volumes, name))


def sweep(volumes: str) -> int:
    """Delete volumes set aside by removals (ones a crash cut short too); how many."""
    try:
        names = [n for n in os.listdir(volumes) if n.startswith(REMOVED_PREFIX)]
    except FileNotFoundError:
        return 0
    for n in names:
        shutil.rmtree(os.path.join(volumes, n), ignore_errors=True)
    return len(names)

