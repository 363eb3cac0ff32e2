"""Driver errors never leave engine/store: callers only see engine.errors types."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from engine import events as ev
from engine.errors import InvalidArgument, StoreError
from engine.store import EventStore, open_store


def test_unreachable_sqlite_path(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        open_store(f"sqlite:///{tmp_path}/no/such/dir/store.db")


def test_schema_missing_is_a_store_error(tmp_path: Path) -> None:
    store = EventStore(f"sqlite:///{tmp_path}/empty.db")
    try:
        with pytest.raises(StoreError):
            store.max_position()
        with pytest.raises(StoreError):
            store.append("s", 0, [ev.Started()], command_id="c", command_type="t")
    finally:
        store.close()


def test_unreachable_postgres() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connection refused
        store = EventStore(f"postgresql+psycopg://nobody@127.0.0.1:{port}/x?connect_timeout=2")
        try:
            with pytest.raises(StoreError):
                store.max_position()
        finally:
            store.close()


def test_bad_urls() -> None:
    with pytest.raises(InvalidArgument):
        EventStore("not a url")
    with pytest.raises(InvalidArgument):
        EventStore("mysql://x/y")
    with pytest.raises(InvalidArgument):
        EventStore("sqlite:///x.db", synchronous="SOMETIMES")
