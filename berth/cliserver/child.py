"""One command in a child forked from the server: it becomes the caller's process in
everything a command can see (fds 0/1/2, argument list, environment, working
directory, umask, fresh signal dispositions), runs ``berth.cli.main`` as
``python -m berth`` would, and tells the front end its exit code itself, so the
code reaches the caller even when the server has died in the meantime.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import sys
import traceback
from collections.abc import Iterable

from berth.cliserver import protocol


def run(conn: socket.socket, fds: list[int], request: protocol.Request,
        inherited: Iterable[int]) -> None:
    """Never returns: the child ends with ``os._exit``."""
    code = 1
    try:
        _fresh_signals()
        for fd in inherited:  # the server's listener, wake pipe, other callers' sockets
            try:
                os.close(fd)
            except OSError:
                pass
        os.setsid()  # off the server's process group: a signal for it is not for us
        _fresh_logging()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        try:
            os.chdir(request.cwd)
        except OSError:
            # The plain CLI would start there; only the caller can: nothing has run.
            conn.sendall(protocol.refusal())
            os._exit(0)
        os.umask(request.umask)
        os.environ.clear()
        os.environ.update(request.env)
        _fresh_stdio()
        sys.argv = ["berth", *request.argv]
        conn.sendall(protocol.answer(protocol.STARTED, os.getpid()))
        code = _main(list(request.argv))
        atexit._run_exitfuncs()
        flush_std()
    except BaseException:  # the caller must hear an exit code whatever happened here
        code = 1
    try:
        conn.sendall(protocol.answer(protocol.EXITED, code & 0xFF))
    finally:
        os._exit(code & 0xFF)


def _main(argv: list[str]) -> int:
    """What ``sys.exit(main())`` makes of a command, as Python's own start-up does."""
    from berth.cli import main

    try:
        return _exit_code(main(argv))
    except SystemExit as exc:
        return _exit_code(exc.code)
    except KeyboardInterrupt:
        flush_std()
        return 130
    except BaseException:
        traceback.print_exc()
        return 1


def _exit_code(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    print(value, file=sys.stderr)
    return 1


def _fresh_signals() -> None:
    """A fresh interpreter's dispositions: the server's own handlers are not ours."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD,
                signal.SIGWINCH, signal.SIGTSTP, signal.SIGCONT, signal.SIGUSR1,
                signal.SIGUSR2, signal.SIGALRM):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as Python starts


def _fresh_logging() -> None:
    """No handlers, as in a fresh interpreter: the server's write to its own log."""
    if "logging" in sys.modules:
        import logging

        logging.root.handlers.clear()
        logging.root.setLevel(logging.WARNING)


def _fresh_stdio() -> None:
    """New stdio objects on the new fds 0/1/2, buffered as Python decides at start-up
    (stdout line-buffered on a terminal only, stderr always line-buffered)."""
    encoding = sys.stdout.encoding if sys.stdout else "utf-8"
    sys.stdin = open(0, encoding=encoding, closefd=False)  # noqa: SIM115
    sys.stdout = open(1, "w", buffering=1 if os.isatty(1) else -1,  # noqa: SIM115
                      encoding=encoding, closefd=False)
    sys.stderr = open(2, "w", buffering=1, encoding=encoding,  # noqa: SIM115
                      errors="backslashreplace", closefd=False)


def flush_std() -> None:
    """Flush stdout and stderr, whatever state a command left them in."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
