"""Docker's exec through docker-py: the connection is hijacked (101, Upgrade: tcp),
output comes back in multiplexed frames as it is written, stdin goes in, and the
command is recorded with the caller as actor."""

from __future__ import annotations

import os
import socket
import time

import docker.errors
import pytest

from tests.dockerapi.conftest import Api


@pytest.fixture
def running(api: Api, busybox: str) -> docker.models.containers.Container:
    client = api.client(version="1.41")
    client.images.pull(busybox)
    return client.containers.run(busybox, ["sleep", "300"], detach=True, name="dpy-exec")


def test_exec_run_output_streams_and_exit_code(api: Api, running: object) -> None:
    ctr = running
    assert isinstance(ctr, docker.models.containers.Container)
    code, out = ctr.exec_run(["sh", "-c", "echo out; echo err >&2; exit 4"])
    assert code == 4 and out == b"out\nerr\n"
    code, (out, err) = ctr.exec_run(["sh", "-c", "echo out; echo err >&2"], demux=True)
    assert (code, out, err) == (0, b"out\n", b"err\n")
    code, out = ctr.exec_run(["sh", "-c", "echo $V; pwd; id -u"], environment={"V": "vee"},
                             workdir="/tmp", user="1000")
    assert code == 0 and out == b"vee\n/tmp\n1000\n"
    code, out = ctr.exec_run(["sh", "-c", "tty"], tty=True)
    assert code == 0 and out.startswith(b"/dev/pts/")  # raw: no frame headers
    # a terminal exec started with Tty false is framed, as Docker frames by the start
    # (docker-py's exec_start reads frames unless told tty=True)
    low = ctr.client.api  # type: ignore[attr-defined]
    made = low.exec_create(ctr.id, ["sh", "-c", "echo hello out; echo hello err >&2"],
                           tty=True)
    assert low.exec_start(made) == b"hello out\r\nhello err\r\n"
    made = low.exec_create(ctr.id, ["sh", "-c", "echo raw"], tty=True)
    assert low.exec_start(made, tty=True) == b"raw\r\n"
    # streamed: the first line arrives while the process still runs
    result = ctr.exec_run(["sh", "-c", "echo one; sleep 2; echo two"], stream=True)
    started = time.monotonic()
    first = next(result.output)
    assert first == b"one\n" and time.monotonic() - started < 1.8
    assert b"".join(result.output) == b"two\n"
    history = api.engine.cli("history", "dpy-exec")
    assert history.returncode == 0, history.stderr
    actor = f"docker-api uid={os.getuid()} pid={os.getpid()} docker-sdk-python/"
    execs = [x for x in history.stdout.splitlines() if "container.exec_started" in x]
    assert len(execs) == 7 and all(actor in x for x in execs), history.stdout
    ctr.remove(force=True)


def test_exec_stdin_detach_inspect_and_refusals(api: Api, running: object) -> None:
    ctr = running
    assert isinstance(ctr, docker.models.containers.Container)
    client = api.client(version="1.41")
    exec_id = client.api.exec_create(ctr.id, ["cat"], stdin=True)["Id"]
    sock = client.api.exec_start(exec_id, socket=True)
    raw: socket.socket = sock._sock  # the hijacked connection
    raw.sendall(b"typed in\n")
    raw.shutdown(socket.SHUT_WR)  # stdin's end: cat exits
    got = b""
    raw.settimeout(20)
    while chunk := raw.recv(4096):
        got += chunk
    assert got == b"\x01\x00\x00\x00\x00\x00\x00\x09typed in\n"
    deadline = time.monotonic() + 10
    while client.api.exec_inspect(exec_id)["Running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.api.exec_inspect(exec_id)["ExitCode"] == 0
    # a second start of the same exec is Docker's 409
    with pytest.raises(docker.errors.APIError) as again:
        client.api.exec_start(exec_id)
    assert again.value.status_code == 409
    # detached: answered at once, the process goes on and its end is recorded
    detached = client.api.exec_create(ctr.id, ["sh", "-c", "sleep 1; exit 5"])["Id"]
    assert not client.api.exec_start(detached, detach=True)  # an empty body
    deadline = time.monotonic() + 20
    while client.api.exec_inspect(detached)["ExitCode"] is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.api.exec_inspect(detached)["ExitCode"] == 5
    with pytest.raises(docker.errors.NotFound):
        client.api.exec_inspect("nope")
    with pytest.raises(docker.errors.APIError) as no_cmd:
        client.api.exec_create(ctr.id, [])
    assert no_cmd.value.status_code == 400
    ctr.stop(timeout=1)
    with pytest.raises(docker.errors.APIError) as stopped:
        client.api.exec_create(ctr.id, ["true"])
    assert stopped.value.status_code == 409
    ctr.remove()
