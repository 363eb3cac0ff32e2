"""podman's global options, taken off the command line before the sub-command.

``--root DIR`` and ``--runroot DIR`` are podman's names for where the engine keeps its
state and its sockets: berth's ``BERTH_ROOT`` and ``BERTH_RUN``, set here so that the
client talks to that engine and ``up`` starts it there. ``--log-level`` turns on the
CLI's own log on stderr in podman's (logrus) line form. ``--noout`` and ``--out FILE``
send the command's standard output to /dev/null or a file, as podman's do.
``--storage-driver overlay`` names what berth does anyway and is accepted; every other
storage option and ``--events-backend`` is refused in one sentence: berth's event log
is its store, not a choice of backend (docs/differences-from-podman.md).

Pure apart from ``apply``: ``split`` only reads the words.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field

from engine.errors import InvalidArgument

LEVELS = {"trace": 5, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "warning": logging.WARNING, "error": logging.ERROR, "fatal": logging.CRITICAL,
          "panic": logging.CRITICAL}
"""podman's (logrus') level names and the Python levels they map to (trace: below debug)."""
VALUED = ("--root", "--runroot", "--log-level", "--out", "--events-backend",
          "--storage-driver", "--storage-opt")
"""The global options that take a value (``--opt VALUE`` or ``--opt=VALUE``)."""
FLAGS = ("--noout",)


class LogLevelError(InvalidArgument):
    """An unknown ``--log-level``: podman exits 1 for it, not 125."""

    exit_code = 1


@dataclass
class Globals:
    root: str | None = None
    runroot: str | None = None
    log_level: str | None = None
    out: str | None = None
    noout: bool = False
    seen: list[str] = field(default_factory=list)


def split(argv: list[str]) -> tuple[Globals, list[str]]:
    """The podman global options found before the sub-command, and the rest of
    ``argv`` without them (berth's own global options stay where they are)."""
    g = Globals()
    rest: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        if not word.startswith("-"):
            rest += argv[i:]
            break
        name, eq, value = word.partition("=")
        if name in VALUED:
            if not eq:
                if i + 1 >= len(argv):
                    raise InvalidArgument(f"option {name} needs a value")
                value = argv[i + 1]
                i += 1
            _take(g, name, value)
        elif word in FLAGS:
            g.noout = True
            g.seen.append(word)
        else:
            rest.append(word)
            if word in ("--timeout", "--key", "--server-key") and i + 1 < len(argv):
                rest.append(argv[i + 1])
                i += 1
        i += 1
    return g, rest


def _take(g: Globals, name: str, value: str) -> None:
    if "\0" in value:
        raise InvalidArgument(f"invalid {name}: the value holds a NUL byte")
    g.seen.append(name)
    if name in ("--root", "--runroot", "--out"):
        if not value:
            raise InvalidArgument(f"invalid {name}: give a path")
        if name == "--root":
            g.root = os.path.abspath(value)
        elif name == "--runroot":
            g.runroot = os.path.abspath(value)
        else:
            g.out = value
    elif name == "--log-level":
        if value.lower() not in LEVELS:
            raise LogLevelError(f'invalid log level "{value}": use one of '
                                + ", ".join(LEVELS))
        g.log_level = value.lower()
    elif name == "--storage-driver":
        if value != "overlay":
            raise InvalidArgument(f"unsupported --storage-driver {value!r}: berth keeps "
                                  "container root filesystems on overlayfs only")
    elif name == "--storage-opt":
        raise InvalidArgument("--storage-opt is not supported: berth's image store is an "
                              "OCI layout with overlayfs mounts and has no storage options")
    else:  # --events-backend
        raise InvalidArgument("--events-backend is not supported: berth's events are its "
                              "event log, which is the engine's store, not a backend to "
                              "choose")


class _Logrus(logging.Formatter):
    """podman's log line: ``time="..." level=debug msg="..."``."""

    def format(self, record: logging.LogRecord) -> str:
        level = "trace" if record.levelno <= 5 else record.levelname.lower()
        level = {"warning": "warn", "critical": "fatal"}.get(level, level)
        stamp = self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z")
        msg = record.getMessage().replace('"', '\\"')
        return f'time="{stamp}" level={level} msg="{msg}"'


def apply(g: Globals, argv: list[str]) -> None:
    """Put the options into effect for this process: the environment the client and
    the servers read, the log handler, and standard output."""
    if g.root is not None:
        os.environ["BERTH_ROOT"] = g.root
    if g.runroot is not None:
        os.environ["BERTH_RUN"] = g.runroot
    if g.log_level is not None:
        level = LEVELS[g.log_level]
        os.environ["BERTH_LOG_LEVEL"] = logging.getLevelName(min(max(level, logging.DEBUG),
                                                                  logging.ERROR))
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_Logrus())
        log = logging.getLogger("berth.cli")
        log.addHandler(handler)
        log.setLevel(level)
        log.propagate = False
        log.info("berth filtering at log level %s", g.log_level)
        log.debug("engine root %s, run directory %s", os.environ.get("BERTH_ROOT", "(default)"),
                  os.environ.get("BERTH_RUN", "(default)"))
        log.log(5, "command line: %s", " ".join(argv))
    if g.noout or g.out is not None:
        target = os.devnull if g.noout else g.out
        assert target is not None
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as exc:
            raise InvalidArgument(f"cannot write --out file {target}: {exc.strerror}") from None
        sys.stdout.flush()
        os.dup2(fd, 1)
        os.close(fd)
