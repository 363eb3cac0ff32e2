"""Bad input through raw HTTP on the socket: one clear sentence in Docker's error
shape, the right status, nothing created; and the server stays small under floods
of bytes and idle connections."""

from __future__ import annotations

import json
import socket
import time

import pytest

from berth.dockerapi import server as http
from tests.dockerapi.conftest import Api
from tests.helpers import rss_kib


def _exchange(api: Api, head: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    with api.raw() as s:
        s.sendall(head.encode("latin-1") + body)
        return _read_response(s)


def _read_response(s: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        part = s.recv(65536)
        if not part:
            break
        data += part
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        part = s.recv(65536)
        if not part:
            break
        rest += part
    return status, headers, rest


def _post(api: Api, path: str, body: bytes, content_type: str = "application/json",
          ) -> tuple[int, dict[str, str], bytes]:
    head = (f"POST {path} HTTP/1.1\r\nHost: docker\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return _exchange(api, head, body)


def _message(body: bytes) -> str:
    value = json.loads(body)
    assert isinstance(value, dict) and set(value) == {"message"}, value
    return str(value["message"])


def _nothing_created(api: Api) -> None:
    with api.engine.client() as c:
        assert c.ps(all=True) == []
    with api.engine.store() as store:
        assert [r.type for r in store.read_all() if r.type.startswith("container.")] == []


@pytest.mark.parametrize(("body", "status", "words"), [
    (b'{"Image": "busybox", "Cmd": ["true"]', 400, "invalid JSON body"),
    (b'{"Image": "busybox", "Cmd": "sh", "Env": "A=1"}', 400, "Config.Env: expected a list"),
    (b'{"Image": 7}', 400, "Config.Image: expected a string"),
    (b'{"Image": "busybox", "Tty": "yes"}', 400, "Config.Tty: expected true or false"),
    (b'{"Image": "busybox", "HostConfig": {"Memory": NaN}}', 400, "NaN is not a JSON number"),
    (b'{"Image": "busybox", "HostConfig": {"Memory": 1.5}}', 400, "HostConfig.Memory"),
    (b'{"Image": "busy\\u0000box"}', 400, "NUL"),
    (b'{"Image": "busybox"}\x00', 400, "NUL byte"),
    (b'{"Image": "busybox", "HostConfig": {"Privileged": true}}', 400,
     "HostConfig.Privileged is not supported"),
    (b'{"Image": "busybox", "HostConfig": {"Devices": [{"PathOnHost": "/dev/sda"}]}}', 400,
     "HostConfig.Devices is not supported"),
    (b'{"Image": "busybox", "HostConfig": {"PortBindings": {"80/sctp": []}}}', 400,
     "PortBindings key"),
    (b'{"Image": "busybox", "HostConfig": {"RestartPolicy": {"Name": "always", '
     b'"MaximumRetryCount": 3}}}', 400, "maximum retry count"),
    (b'[' * 100_000 + b']' * 100_000, 400, "invalid JSON body"),
    (b'{"Image": "' + b"x" * 70_000 + b'"}', 400, "longer than"),
])
def test_a_bad_create_body_is_one_sentence_and_creates_nothing(
        api: Api, body: bytes, status: int, words: str) -> None:
    got, headers, answer = _post(api, "/v1.41/containers/create?name=bad", body)
    assert got == status, answer
    assert headers["content-type"] == "application/json"
    assert words in _message(answer)
    _nothing_created(api)


def test_bad_names_versions_routes_and_parameters(api: Api) -> None:
    status, _, body = _post(api, "/containers/create?name=-bad", b'{"Image": "x"}')
    assert status == 400 and "Invalid container name" in _message(body)
    status, _, body = _exchange(api, "GET /v1.99/version HTTP/1.1\r\nHost: d\r\n\r\n")
    assert status == 400 and "too new" in _message(body)
    status, _, body = _exchange(api, "GET /v1.12/version HTTP/1.1\r\nHost: d\r\n\r\n")
    assert status == 400 and "too old" in _message(body)
    status, _, body = _exchange(api, "GET /nothing/here HTTP/1.1\r\nHost: d\r\n\r\n")
    assert status == 404 and "page not found" in _message(body)
    status, _, body = _exchange(api, "GET /services HTTP/1.1\r\nHost: d\r\n\r\n")
    assert status == 501 and "does not implement" in _message(body)
    status, _, body = _exchange(api, "GET /swarm HTTP/1.1\r\nHost: d\r\n\r\n")
    assert status == 503 and _message(body) == "This node is not part of a swarm"
    status, _, body = _exchange(api, "GET /containers/nope/json HTTP/1.1\r\nHost: d\r\n\r\n")
    assert status == 404 and _message(body) == "No such container: nope"
    status, _, body = _exchange(api, "GET /containers/json?filters=%7Bbad HTTP/1.1\r\n"
                                     "Host: d\r\n\r\n")
    assert status == 400 and "invalid filters" in _message(body)
    status, _, body = _exchange(api, 'GET /containers/json?filters={"volume":["x"]} '
                                     "HTTP/1.1\r\nHost: d\r\n\r\n")
    assert status == 400 and "invalid filter 'volume'" in _message(body)
    status, _, body = _exchange(api, "GET /containers/json?all=maybe HTTP/1.1\r\nHost: d\r\n\r\n")
    assert status == 400 and "not a boolean" in _message(body)
    status, _, body = _exchange(api, "DELETE /version HTTP/1.1\r\nHost: d\r\n\r\n")
    assert status == 405
    status, _, body = _exchange(api, "GET /images/search?term=x HTTP/1.1\r\nHost: d\r\n\r\n")
    assert status == 501
    status, _, body = _exchange(api, "this is not http\r\n\r\n")
    assert status == 400 and "malformed HTTP request" in _message(body)
    _nothing_created(api)


def test_ping_answers_get_and_head_with_docker_headers(api: Api) -> None:
    for method in ("GET", "HEAD"):
        status, headers, body = _exchange(api, f"{method} /_ping HTTP/1.1\r\nHost: d\r\n"
                                               "Connection: close\r\n\r\n")
        assert status == 200
        assert headers["api-version"] == "1.41" and headers["ostype"] == "linux"
        assert body == (b"OK" if method == "GET" else b"")


def test_an_oversized_body_is_refused_before_it_is_read(api: Api) -> None:
    huge = http.MAX_BODY + 1
    with api.raw() as s:
        s.sendall(f"POST /containers/create HTTP/1.1\r\nHost: d\r\nContent-Length: {huge}\r\n"
                  "Content-Type: application/json\r\n\r\n".encode())
        status, _, body = _read_response(s)  # answered without sending the body
    assert status == 413 and "too large" in _message(body)
    # chunked, with no length announced: cut off once past the bound
    with api.raw() as s:
        s.sendall(b"POST /containers/create HTTP/1.1\r\nHost: d\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        piece = b"x" * 65536
        try:
            for _ in range(40):
                s.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, _, body = _read_response(s)
    assert status == 413
    # a head past the bound: 431 or 400, one sentence
    status, _, body = _exchange(api, "GET /_ping HTTP/1.1\r\nHost: d\r\nX-Big: "
                                + "a" * (http.MAX_HEAD + 10) + "\r\n\r\n")
    assert status in (400, 431) and "malformed HTTP request" in _message(body)
    _nothing_created(api)


def test_many_idle_connections_are_bounded_and_the_server_stays_small(api: Api) -> None:
    before = rss_kib(api.proc.pid)
    idle = []
    try:
        for _ in range(1000):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            idle.append(s)
            deadline = time.monotonic() + 10
            while True:  # a full listen backlog is the kernel's back-pressure: wait
                try:
                    s.connect(api.socket)
                    break
                except BlockingIOError:
                    assert time.monotonic() < deadline, "the server stopped accepting"
                    time.sleep(0.01)
        # past the cap, connections are answered 503 at once and closed
        turned_away = 0
        for s in idle[-50:]:
            status, _, body = _read_response(s)
            assert status == 503 and "too many connections" in _message(body)
            turned_away += 1
        assert turned_away == 50
        grown = rss_kib(api.proc.pid) - before
        assert grown < 64 * 1024, f"the server grew by {grown} KiB for 1000 idle connections"
    finally:
        for s in idle:
            s.close()
    # once they are gone, a client is served again
    deadline = time.monotonic() + 10
    while True:
        status, _, _ = _exchange(api, "GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close"
                                      "\r\n\r\n")
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == 200


def test_a_follow_stream_nobody_reads_holds_the_server_to_one_piece(api: Api,
                                                                     busybox: str) -> None:
    client = api.client(version="1.41")
    client.images.pull(busybox)
    ctr = client.containers.run(
        busybox, ["sh", "-c", "while true; do head -c 20000 /dev/zero | tr '\\0' a; echo; "
                              "sleep 0.01; done"], detach=True)
    before = rss_kib(api.proc.pid)
    with api.raw() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(f"GET /containers/{ctr.id}/logs?follow=1&stdout=1 HTTP/1.1\r\n"
                  "Host: d\r\n\r\n".encode())
        time.sleep(6)  # ~12 MB written by the container meanwhile; none read here
        grown = rss_kib(api.proc.pid) - before
        assert grown < 4 * 1024, f"the server buffered {grown} KiB for an unread stream"
        # the other callers are served meanwhile
        status, _, _ = _exchange(api, "GET /_ping HTTP/1.1\r\nHost: d\r\n"
                                      "Connection: close\r\n\r\n")
        assert status == 200
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(1)
        assert head.startswith(b"HTTP/1.1 200")
        assert b"application/vnd.docker.multiplexed-stream" in head
        size_line = b""
        while not size_line.endswith(b"\r\n"):
            size_line += s.recv(1)
        assert s.recv(1) == b"\x01"  # the first chunk opens with a stdout frame's header
    ctr.remove(force=True)


def test_second_pass_endpoints_refuse_bad_input_in_one_sentence(api: Api) -> None:
    """archive, stats, update, prune and a pull's X-Registry-Auth: bad input is one
    sentence and changes nothing (the log holds no new event)."""
    with api.engine.store() as store:
        before = store.max_position()
    cases = [
        ("GET /containers/nope/stats?stream=0 HTTP/1.1\r\nHost: d\r\n\r\n", b"", 404,
         "No such container: nope"),
        ("GET /containers/nope/archive HTTP/1.1\r\nHost: d\r\n\r\n", b"", 400, "path"),
        ("POST /containers/nope/update HTTP/1.1\r\nHost: d\r\nContent-Length: 15\r\n\r\n",
         b'{"Memory": NaN}', 400, "invalid JSON"),
        ("POST /containers/nope/update HTTP/1.1\r\nHost: d\r\nContent-Length: 16\r\n\r\n",
         b'{"CpuShares": 5}', 400, "CpuShares cannot be updated"),
        ('POST /containers/prune?filters={"until":["1h"]} HTTP/1.1\r\nHost: d\r\n'
         "Content-Length: 0\r\n\r\n", b"", 400, "'until' is not supported"),
        ("POST /images/create?fromImage=x HTTP/1.1\r\nHost: d\r\nX-Registry-Auth: %%%secret"
         "\r\nContent-Length: 0\r\n\r\n", b"", 400, "invalid X-Registry-Auth"),
    ]
    for head, body, status, words in cases:
        got, _, answer = _exchange(api, head, body)
        assert got == status and words in _message(answer), (head, got, answer)
        assert "secret" not in _message(answer)
    with api.engine.store() as store:
        assert store.max_position() == before
