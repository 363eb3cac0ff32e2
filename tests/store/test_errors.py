"""Driver errors never leave engine/store: callers only see engine.errors types."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from engine import events as ev
from engine.errors import InvalidArgument, StoreError, StoreUnreachable
from engine.store.retry import NO_RETRY, RetryPolicy
from engine.store.store import EventStore
from migrations.runner import upgrade


def test_unreachable_sqlite_path(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/no/such/dir/store.db"
    with pytest.raises(StoreError, match="unable to open database file") as refused:
        upgrade(url)
    assert refused.type is StoreError  # a missing directory does not come back: no retry
    store = EventStore(url)
    try:
        with pytest.raises(StoreError) as read:
            store.max_position()
        assert read.type is StoreError
        with pytest.raises(StoreError) as write:
            store.append("s", 0, [ev.Started()], command_id="c", command_type="t")
        assert write.type is StoreError
    finally:
        store.close()


def test_schema_missing_is_a_store_error(tmp_path: Path) -> None:
    store = EventStore(f"sqlite:///{tmp_path}/empty.db")
    try:
        with pytest.raises(StoreError, match="no such table: events") as refused:
            store.max_position()
        assert refused.type is StoreError
        with pytest.raises(StoreError, match="no such table") as refused:
            store.append("s", 0, [ev.Started()], command_id="c", command_type="t")
        assert refused.type is StoreError
    finally:
        store.close()


def test_unreachable_postgres() -> None:
    """Refused connections are retried for the policy's deadline, then reported."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connection refused
        url = f"postgresql+psycopg://nobody@127.0.0.1:{port}/x?connect_timeout=2"
        for policy, least, most in ((NO_RETRY, 0.0, 5.0), (RetryPolicy(deadline=1.5), 1.5, 8.0)):
            store = EventStore(url, retry=policy)
            try:
                start = time.monotonic()
                with pytest.raises(StoreUnreachable):
                    store.max_position()
                assert least <= time.monotonic() - start < most
            finally:
                store.close()


def test_bad_urls() -> None:
    with pytest.raises(InvalidArgument):
        EventStore("not a url")
    with pytest.raises(InvalidArgument):
        EventStore("mysql://x/y")
    with pytest.raises(InvalidArgument):
        EventStore("sqlite:///x.db", synchronous="SOMETIMES")
