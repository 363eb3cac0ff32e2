"""The pure parts of attached stdio: stream frames, k8s-file records, detach keys."""

from __future__ import annotations

import os

import msgpack  # type: ignore[import-untyped]
import pytest

from berth.cli.attach import parse_detach_keys, parse_log_time
from bus import stream as s
from engine.errors import InvalidArgument, ProtocolError
from engine.runtime.logfile import LogReader, parse, tail_offset


def test_frames_round_trip_and_bad_ones_are_refused_with_a_sentence() -> None:
    frame = s.decode(s.encode("in", data=b"abc"), s.CLIENT_OPS)
    assert (frame.op, frame.get("data")) == ("in", b"abc")
    # ``code`` is an exit code in ``exit`` and an error code in ``error``.
    assert s.decode(s.encode("exit", code=3), s.WORKER_OPS).get("code") == 3
    assert s.decode(s.encode("exit", code=None), s.WORKER_OPS).get("code") is None
    refusal = s.decode(s.encode("error", code="not_found", message="no"), s.WORKER_OPS)
    assert (refusal.get("code"), refusal.get("message")) == ("not_found", "no")
    for raw, words in (
        (b"\xc1", "unreadable"),
        (msgpack.packb([1, 2]), "map of protocol version 1"),
        (msgpack.packb({"v": 2, "op": "in"}), "protocol version 1"),
        (s.encode("exit", code=1), "unknown stream op"),  # a worker op sent by a client
        (s.encode("in", data="text"), "wrong type"),
        (s.encode("credit", n=True), "wrong type"),
        (s.encode("in", nonsense=1), "unknown field"),
        (s.encode("in", data=b"x" * (s.MAX_CHUNK + 1)), "over"),
    ):
        with pytest.raises(ProtocolError, match=words):
            s.decode(raw, s.CLIENT_OPS)
    assert s.stream_endpoint("ipc:///run/berth/bus.sock", "n1") == \
        "ipc:///run/berth/stream-n1.sock"
    assert s.stream_endpoint("tcp://10.0.0.1:5555", "n1") is None


def test_k8s_file_records() -> None:
    record = parse(b"2026-12-02T01:04:28.757400193+00:00 stderr P half a line")
    assert record is not None
    assert (record.fd, record.partial, record.data) == (2, True, b"half a line")
    assert record.when() is not None and record.when().microsecond == 757400  # type: ignore[union-attr]
    empty = parse(b"2026-12-02T01:04:28.1+00:00 stdout F")
    assert empty is not None and empty.data == b"" and not empty.partial
    assert parse(b"garbage") is None and parse(b"t stdin F x") is None


def test_tail_offset_and_reader(tmp_path: object) -> None:
    path = f"{tmp_path}/ctr.log"
    lines = [f"2026-12-02T01:00:0{i}.0+00:00 stdout F line {i}" for i in range(5)]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    reader = LogReader(path, tail_offset(path, 2))
    assert [r.data for r in reader.read(1 << 16)] == [b"line 3", b"line 4"]
    assert reader.read(1 << 16) == []
    assert tail_offset(path, 0) == reader.offset
    assert tail_offset(path, 99) == 0
    # A half-written last line waits for its newline.
    with open(path, "a") as f:
        f.write("2026-12-02T01:00:09.0+00:00 stdout F par")
    assert reader.read(1 << 16) == []
    with open(path, "a") as f:
        f.write("tial\n")
    assert [r.data for r in reader.read(1 << 16)] == [b"partial"]
    # conmon truncated the file (--log-size-max): read again from the top.
    with open(path, "w") as f:
        f.write(lines[0] + "\n")
    assert [r.data for r in reader.read(1 << 16)] == [b"line 0"]
    # conmon renamed a new file over it that has grown past the offset already: the
    # new one is read from its top, not from the old one's offset.
    with open(f"{path}.tmp", "w") as f:
        f.write("\n".join(lines[2:]) + "\n")
    os.rename(f"{path}.tmp", path)
    assert [r.data for r in reader.read(1 << 16)] == [b"line 2", b"line 3", b"line 4"]


def test_detach_keys_and_log_times() -> None:
    assert parse_detach_keys("ctrl-p,ctrl-q") == b"\x10\x11"
    assert parse_detach_keys("ctrl-x") == b"\x18"
    assert parse_detach_keys("a,ctrl-@") == b"a\x00"
    assert parse_detach_keys("") == b""
    for bad in ("ctrl-", "ctrl-1", "alt-x"):
        with pytest.raises(InvalidArgument):
            parse_detach_keys(bad)
    assert parse_log_time("0").startswith("1970-01-01T00:00:00")
    assert parse_log_time("2026-01-02T03:04:05Z").startswith("2026-01-02T03:04:05")
    with pytest.raises(InvalidArgument, match="invalid time"):
        parse_log_time("yesterday")


def test_tcp_stream_endpoints_bind_and_advertise() -> None:
    """A worker on a tcp bus binds where it is told, else an ephemeral port on the
    address that reaches the broker; a wildcard host is advertised by that address."""
    assert s.tcp_stream_bind("tcp://10.1.2.3:7000", "tcp://127.0.0.1:5556") == \
        "tcp://10.1.2.3:7000"
    assert s.tcp_stream_bind(None, "tcp://127.0.0.1:5556") == "tcp://127.0.0.1:*"
    assert s.tcp_stream_bind("", "tcp://127.0.0.1:5556,tcp://127.0.0.2:5556") == \
        "tcp://127.0.0.1:*"
    for bad in ("ipc:///x.sock", "tcp://host", "tcp://host:"):
        with pytest.raises(InvalidArgument, match="tcp://HOST:PORT"):
            s.tcp_stream_bind(bad, "tcp://127.0.0.1:5556")
    assert s.advertised("tcp://127.0.0.1:41234", "tcp://127.0.0.1:5556") == \
        "tcp://127.0.0.1:41234"
    assert s.advertised("tcp://0.0.0.0:41234", "tcp://127.0.0.1:5556") == \
        "tcp://127.0.0.1:41234"
    assert s.advertised("tcp://[::]:41234", "tcp://127.0.0.1:5556") == \
        "tcp://127.0.0.1:41234"
