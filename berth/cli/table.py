"""The CLI's one column-table printer: every listing (``ps``, ``images``, ``volume
ls``, ``compose ps``, a ``--format "table ..."`` template, ...) aligns its columns by
this rule, so they all look alike and a change to the rule is made once. It imports
nothing, so any command module can use it without loading more at start."""

from __future__ import annotations

from collections.abc import Sequence


def table_lines(rows: Sequence[Sequence[str]]) -> list[str]:
    """Each row as one line: each column padded to its widest cell, two spaces between
    columns, trailing blanks cut. A row shorter than others (a template's line with
    fewer tab-separated cells) is padded only as far as it goes."""
    count = max((len(r) for r in rows), default=0)
    widths = [max((len(r[i]) for r in rows if i < len(r)), default=0) for i in range(count)]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip()
            for r in rows]


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """``table_lines`` printed, one line each; nothing for no rows."""
    for line in table_lines(rows):
        print(line)
