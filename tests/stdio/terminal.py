"""A ``berth`` process on a pseudo-terminal of a given size, read with deadlines."""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import struct
import subprocess
import sys
import termios
import time

from tests.e2e.conftest import Engine


class OnTerminal:
    """``berth ARGS`` with a pty as its stdin, stdout and stderr."""

    def __init__(self, engine: Engine, *args: str, rows: int = 37, cols: int = 101) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.proc = subprocess.Popen([sys.executable, "-m", "berth", *args], env=engine.env,
                                     stdin=slave, stdout=slave, stderr=slave,
                                     start_new_session=True)
        os.close(slave)
        self.output = b""

    def read_until(self, wanted: bytes, timeout: float = 15.0) -> bytes:
        """Read the terminal until ``wanted`` has appeared (AssertionError at the deadline)."""
        deadline = time.monotonic() + timeout
        while wanted not in self.output:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{wanted!r} not seen on the terminal: {self.output!r}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    data = os.read(self.master, 4096)
                except OSError:  # EIO: the process closed its end
                    data = b""
                if not data:
                    raise AssertionError(f"terminal closed before {wanted!r}: {self.output!r}")
                self.output += data
        return self.output

    def resize(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def wait(self, timeout: float = 15.0) -> int:
        """The process's exit status, reading (and keeping) its output meanwhile."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if ready:
                with contextlib.suppress(OSError):
                    self.output += os.read(self.master, 4096)
        return self.proc.wait(max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
