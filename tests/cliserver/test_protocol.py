"""The front end's framing, without a socket: what parses, what is refused."""

from __future__ import annotations

import struct

import pytest

from berth.cliserver.protocol import (
    HEADER,
    MAGIC,
    MAX_REQUEST,
    BadRequest,
    Request,
    encode,
    parse,
    payload_length,
    runs_in_python,
)


def test_a_request_round_trips() -> None:
    req = Request(0o027, "/tmp/x", ("run", "--rm", "é", ""), {"A": "1", "B": "x=y", "C": ""})
    frame = encode(req)
    assert payload_length(frame[:HEADER]) == len(frame) - HEADER
    assert parse(frame[HEADER:]) == req


def test_the_environment_keeps_the_first_of_a_name_and_skips_non_variables() -> None:
    payload = b"22\0/\0" + b"1\0ps\0" + b"A=1\0A=2\0junk\0=x\0"
    assert parse(payload) == Request(0o22, "/", ("ps",), {"A": "1"})


@pytest.mark.parametrize("header, why", [
    (b"GET / HTTP/1.1\r\n", "did not start with its greeting"),
    (MAGIC + struct.pack(">I", MAX_REQUEST + 1), "over the command server's limit"),
])
def test_headers_refused(header: bytes, why: str) -> None:
    with pytest.raises(BadRequest, match=why):
        payload_length(header[:HEADER])


@pytest.mark.parametrize("payload, why", [
    (b"22\0/\0" + b"1\0ps", "not terminated"),
    (b"22\0/\0", "no umask"),
    (b"zz\0/\0" + b"0\0", "not a number"),
    (b"1777\0/\0" + b"0\0", "umask or working directory is invalid"),
    (b"22\0relative\0" + b"0\0", "umask or working directory is invalid"),
    (b"22\0/\0" + b"3\0ps\0", "argument count does not match"),
    (b"22\0/\0" + b"-1\0", "argument count does not match"),
])
def test_payloads_refused(payload: bytes, why: str) -> None:
    with pytest.raises(BadRequest, match=why):
        parse(payload)


@pytest.mark.parametrize("argv, direct", [
    (("up", "-d"), True),
    (("--timeout", "3", "db", "upgrade"), True),
    (("--timeout", "up", "ps"), False),
    (("cli-server",), True),
    (("ps", "up"), False),
    (("--version",), False),
    (("run", "--rm", "x", "worker"), False),
])
def test_commands_that_run_servers_are_known(argv: tuple[str, ...], direct: bool) -> None:
    assert runs_in_python(argv) is direct
