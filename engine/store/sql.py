"""Plain SQL for the hot paths that bypass SQLAlchemy Core and go to the driver.

Every append runs a few lookups and inserts; building and cache-keying a Core statement
for each was the largest share of a one-event append's CPU time, so those statements are
written out as text here, with the driver's own placeholder (``?`` for sqlite3, ``%s``
for psycopg). Lists are sent in chunks so no statement exceeds a driver's limit on
bound parameters (SQLite's is 999 in older builds).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

CHUNK = 500


def chunked(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def marks(mark: str, count: int) -> str:
    """``count`` placeholders separated by commas: ``?, ?, ?``."""
    return ", ".join([mark] * count)


def select_in(columns: str, table: str, key: str, mark: str, count: int) -> str:
    """``SELECT columns FROM table WHERE key IN (...)`` for ``count`` keys."""
    if count == 1:
        return f"SELECT {columns} FROM {table} WHERE {key} = {mark}"
    return f"SELECT {columns} FROM {table} WHERE {key} IN ({marks(mark, count)})"


def insert(table: str, columns: Sequence[str], mark: str) -> str:
    """``INSERT INTO table (columns) VALUES (...)``, one placeholder per column."""
    return (f"INSERT INTO {table} ({', '.join(columns)}) "
            f"VALUES ({marks(mark, len(columns))})")
