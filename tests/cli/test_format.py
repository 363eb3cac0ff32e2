"""The CLI's value parsing and terminal progress, without an engine."""

from __future__ import annotations

import io
import os
from datetime import UTC, datetime

import pytest

from berth.cli import format as fmt
from engine.errors import InvalidArgument


def test_parse_time_accepts_rfc3339_and_durations() -> None:
    now = datetime(2026, 11, 28, 10, 13, tzinfo=UTC)
    assert fmt.parse_time("10m", now) == "2026-11-28T10:03:00+00:00"
    assert fmt.parse_time("2026-11-28T10:03:00Z") == "2026-11-28T10:03:00+00:00"
    assert fmt.parse_time("2026-11-28T11:03:00+01:00") == "2026-11-28T10:03:00+00:00"
    for bad in ("yesterday", "10x", "", "1h30", "2026-13-01", "-5", "1e9"):
        with pytest.raises(InvalidArgument, match="invalid time"):
            fmt.parse_time(bad)


def test_parse_time_takes_what_podman_takes(monkeypatch: pytest.MonkeyPatch) -> None:
    now = datetime(2026, 11, 28, 10, 13, tzinfo=UTC)
    # Go durations, compound and fractional
    assert fmt.parse_time("1h30m", now) == "2026-11-28T08:43:00+00:00"
    assert fmt.parse_time("1.5h", now) == "2026-11-28T08:43:00+00:00"
    assert fmt.parse_time("2h45m10s", now) == "2026-11-28T07:27:50+00:00"
    assert fmt.parse_time("500ms", now) == "2026-11-28T10:12:59.500000+00:00"
    # unix timestamps, with up to nine decimals
    assert fmt.parse_time("1764324780") == "2025-11-28T10:13:00+00:00"
    assert fmt.parse_time("1764324780.25") == "2025-11-28T10:13:00.250000+00:00"
    # RFC 3339 without an offset, or without a time: local time, as podman's
    monkeypatch.setenv("TZ", "Europe/Berlin")
    __import__("time").tzset()
    try:
        assert fmt.parse_time("2026-11-28T11:03:00") == "2026-11-28T10:03:00+00:00"
        assert fmt.parse_time("2026-11-28 11:03:00") == "2026-11-28T10:03:00+00:00"
        assert fmt.parse_time("2026-11-28") == "2026-11-27T23:00:00+00:00"
    finally:
        monkeypatch.delenv("TZ")
        __import__("time").tzset()
    assert fmt.parse_time("2026-11-28T10:03:00Z") == "2026-11-28T10:03:00+00:00"


def test_parse_size_and_port() -> None:
    assert fmt.parse_size("64m") == 64 * 1024 * 1024
    assert fmt.parse_size("1024") == 1024
    with pytest.raises(InvalidArgument):
        fmt.parse_size("-1")
    assert fmt.parse_port("127.0.0.1:8080:80/udp") == ["127.0.0.1", 8080, 80, "udp"]
    assert fmt.parse_port("8080:80") == ["", 8080, 80, "tcp"]
    with pytest.raises(InvalidArgument):
        fmt.parse_port("eighty")


def test_filters() -> None:
    assert fmt.parse_filters(["container=web", "type=container.exited"]) == {
        "container": "web", "type": "container.exited"}
    with pytest.raises(InvalidArgument):
        fmt.parse_filters(["image=x"])


def test_progress_shows_on_a_terminal_only() -> None:
    master, slave = os.openpty()
    try:
        tty = os.fdopen(slave, "w", closefd=False)
        with fmt.Progress("stopping web", tty):
            # the wait being shown: progress appears after one quiet second
            __import__("time").sleep(1.4)
        tty.flush()
        assert b"stopping web... 1s" in os.read(master, 4096)
        plain = io.StringIO()
        with fmt.Progress("stopping web", plain):
            __import__("time").sleep(1.1)
        assert plain.getvalue() == ""
    finally:
        os.close(master)
        os.close(slave)

