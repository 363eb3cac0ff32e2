"""The facts a runtime reports: plain values shared by every runtime implementation."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.networks.rules import Attachment

MAX_EXEC_OUTPUT = 512 * 1024
"""The tail of an exec session's output that is kept and replied (one limit, here)."""


class Status(enum.StrEnum):
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    EXITED = "exited"


@dataclass(frozen=True)
class ExitStatus:
    exit_code: int
    finished_at: datetime


@dataclass(frozen=True)
class StatusReport:
    status: Status
    pid: int = 0
    exit_code: int | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class Created:
    pid: int
    conmon_pid: int
    network: Attachment | None = None
    """networks: the address CNI gave it, when it joined a network now."""


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    output: bytes
    pid: int


@dataclass(frozen=True)
class DumpReport:
    """What a checkpoint directory says about its dump, read after it ended.

    ``finished``: no process of the dump holds the directory any more; ``exit_code``:
    the runtime's exit status (None if nobody lived to write it); ``complete``: CRIU
    wrote the image's inventory."""

    finished: bool
    exit_code: int | None
    complete: bool


@dataclass(frozen=True)
class ExecSession:
    """What is known of an exec session outside any worker (facts for
    ``decide.settle_exec``)."""

    claimed: bool          # an attempt took the session: a process may have been started
    pid: int               # 0 until the runtime reported it
    exit_code: int | None  # the recorded exit code, once the session ended
    conmon_alive: bool     # its monitor still runs (so the exit code will come)
