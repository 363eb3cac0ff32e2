"""A project's containers' log lines joined whole and prefixed with their names: for
``berth compose logs`` and for the foreground ``up``'s log printer alike."""

from __future__ import annotations

import sys

MAX_PARTIAL = 1024 * 1024
"""Bytes of one container's unfinished line ``logs`` holds before it prints them as
a line of their own (a process writing without newlines cannot grow it for ever)."""


class Lines:
    """Whole lines only: a container's partial pieces (conmon's ``P`` lines) are held
    until the piece that ends the line, then printed with the container's prefix as
    one write, so two containers' output never mixes within a line."""

    def __init__(self) -> None:
        self.held: dict[str, list[str]] = {}
        self.size: dict[str, int] = {}

    def feed(self, cid: str, prefix: str, lines: list[list[str]]) -> list[tuple[str, str]]:
        """(stream, text with its prefix and newline) for each line completed."""
        out = []
        for _time, stream, tag, text in lines:
            pieces = self.held.setdefault(cid, [])
            pieces.append(text)
            self.size[cid] = self.size.get(cid, 0) + len(text)
            if tag == "P" and self.size[cid] < MAX_PARTIAL:
                continue
            out.append((stream, f"{prefix}{''.join(pieces)}\n"))
            self.held[cid], self.size[cid] = [], 0
        return out

    def rest(self, cid: str, prefix: str) -> list[tuple[str, str]]:
        """A container's unfinished line once it has ended: printed as it is."""
        pieces = self.held.pop(cid, [])
        self.size.pop(cid, None)
        return [("stdout", f"{prefix}{''.join(pieces)}\n")] if pieces else []


def write_lines(lines: list[tuple[str, str]]) -> None:
    for stream, text in lines:
        (sys.stderr if stream == "stderr" else sys.stdout).write(text)
    sys.stdout.flush()
    sys.stderr.flush()
