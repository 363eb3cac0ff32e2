"""Docker's attach: a hijacked connection to a container's stdio, stdin in, output
out in multiplexed frames, the log first with logs=1, ctrl-p ctrl-q to leave."""

from __future__ import annotations

import socket
import time

import docker

from tests.dockerapi.conftest import Api


def _read_until(sock: socket.socket, want: bytes, timeout: float = 20) -> bytes:
    got = b""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    while want not in got and time.monotonic() < deadline:
        chunk = sock.recv(4096)
        if not chunk:
            break
        got += chunk
    return got


def test_attach_sends_stdin_and_frames_output(api: Api, busybox: str) -> None:
    client = api.client(version="1.41")
    client.images.pull(busybox)
    ctr = client.containers.run(busybox, ["sh", "-c", "echo ready; while read x; do "
                                          "echo got $x; echo warn >&2; done"],
                                detach=True, stdin_open=True, name="dpy-attach")
    deadline = time.monotonic() + 20
    while b"ready" not in ctr.logs() and time.monotonic() < deadline:
        time.sleep(0.05)
    params = {"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1, "logs": 1}
    sock = client.api.attach_socket(ctr.id, params=params)._sock
    # the log first (logs=1): the line written before we came
    assert _read_until(sock, b"ready\n").startswith(b"\x01\x00\x00\x00\x00\x00\x00\x06ready\n")
    sock.sendall(b"hello\n")
    got = _read_until(sock, b"warn\n")
    assert b"\x01\x00\x00\x00\x00\x00\x00\x0agot hello\n" in got
    assert b"\x02\x00\x00\x00\x00\x00\x00\x05warn\n" in got
    # Without a terminal, ctrl-p ctrl-q are data, as Docker's attach copies stdin
    # unescaped unless Tty (and berth's own attach since binary stdin passes whole)
    sock.sendall(b"\x10\x11z\n")
    got = _read_until(sock, b"warn\n")
    assert b"got \x10\x11z\n" in got
    ctr.reload()
    assert ctr.status == "running"
    sock.close()
    ctr.remove(force=True)


def test_attach_to_a_missing_container_is_404(api: Api) -> None:
    client = api.client(version="1.41")
    try:
        client.api.attach_socket("nope", params={"stream": 1, "stdout": 1})
    except docker.errors.NotFound:
        return
    raise AssertionError("attach to a missing container was not refused")
