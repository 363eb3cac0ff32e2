"""The HTTP server on its own (a real unix socket, handlers written here): a
streamed answer whose producer fails after the head ends that connection quietly
and the server goes on; keep-alive; the socket's mode and an old socket's reuse."""

from __future__ import annotations

import os
import socket
import stat
import threading
from collections.abc import Iterator

import pytest

from berth.dockerapi.server import Request, Response, Server


def _serve(path: str, handler: object) -> tuple[Server, threading.Thread]:
    server = Server(path, handler)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


def _get(path: str, target: str) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return data


def test_a_failing_stream_ends_its_connection_and_the_server_goes_on(
        short_tmp: str, monkeypatch: pytest.MonkeyPatch) -> None:
    crashed: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: crashed.append(args.exc_value))

    def handler(request: Request) -> Response:
        if request.path == "/fails":
            def chunks() -> Iterator[bytes]:
                yield b"first"
                raise RuntimeError("the engine stopped")
            return Response(200, chunks=chunks())
        return Response.of_json({"ok": True})

    path = os.path.join(short_tmp, "api.sock")
    server, thread = _serve(path, handler)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        answer = _get(path, "/fails")
        assert answer.startswith(b"HTTP/1.1 200") and b"first" in answer
        assert not answer.endswith(b"0\r\n\r\n")  # the chunked body was cut, not ended
        assert _get(path, "/fine").endswith(b'{"ok": true}')
        assert crashed == []  # no connection thread died with a traceback
    finally:
        server.stop()
        thread.join(5)
    assert not os.path.exists(path)


def test_an_old_socket_is_reused_but_a_live_one_or_a_file_is_not(short_tmp: str) -> None:
    path = os.path.join(short_tmp, "api.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # a socket file nobody listens on: replaced
    server, thread = _serve(path, lambda r: Response.of_json({}))
    try:
        with pytest.raises(OSError, match="already listens"):
            Server(path, lambda r: Response.of_json({}))
    finally:
        server.stop()
        thread.join(5)
    plain = os.path.join(short_tmp, "plain")
    with open(plain, "w") as f:
        f.write("mine")
    with pytest.raises(OSError, match="not a socket"):
        Server(plain, lambda r: Response.of_json({}))
    with open(plain) as f:
        assert f.read() == "mine"
