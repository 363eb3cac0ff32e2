"""The CLI's one column-table printer (``berth.cli.table``): the alignment every
listing shares, pinned byte for byte (the listings' own tests run it end to end)."""

from __future__ import annotations

import pytest

from berth.cli.table import print_table, table_lines


def test_columns_are_padded_to_their_widest_cell_and_trailing_blanks_cut() -> None:
    rows = [["NAME", "STATE", "ID"], ["web-1", "running", "abc"], ["db", "", ""]]
    assert table_lines(rows) == [
        "NAME   STATE    ID",
        "web-1  running  abc",
        "db",
    ]


def test_a_short_row_is_padded_only_as_far_as_it_goes() -> None:
    """A ``--format "table ..."`` line with fewer tab-separated cells than the header."""
    assert table_lines([["A", "LONGER", "C"], ["aaa"], ["b", "c"]]) == [
        "A    LONGER  C",
        "aaa",
        "b    c",
    ]


def test_no_rows_print_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert table_lines([]) == []
    print_table([])
    assert capsys.readouterr().out == ""


def test_print_table_prints_one_line_per_row(capsys: pytest.CaptureFixture[str]) -> None:
    print_table([["CONTAINER", "IMAGE"], ["p-web-1", "busybox"]])
    assert capsys.readouterr().out == "CONTAINER  IMAGE\np-web-1    busybox\n"
