"""Stdio streams across hosts: each host's worker binds its stream socket on its own
address (tcp + CURVE, its own key pair), and the CLI in the root namespace finds it
through the bus (``query.stream``) and talks to it directly."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from typing import Any, cast

import pytest

from bus import keys
from bus.stream import StreamSession
from engine.command_types import STREAM
from engine.errors import PermissionDenied
from tests.multihost.cluster import Cluster
from tests.stdio.terminal import OnTerminal


def _berth(mh: Cluster, *args: str, input: bytes | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "berth", *args], env=mh.env(), input=input,
                          capture_output=True, timeout=timeout, check=False)


def _ok(result: subprocess.CompletedProcess[Any]) -> Any:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def _terminal(mh: Cluster, *args: str, rows: int = 24, cols: int = 80) -> OnTerminal:
    """OnTerminal reads only ``.env`` of its engine: the cluster's client env."""
    class _Env:
        env = mh.env()
    return OnTerminal(cast(Any, _Env()), *args, rows=rows, cols=cols)


def test_each_host_streams_from_its_own_address_with_its_own_key(mh: Cluster) -> None:
    with mh.client() as c:
        found = {node: c.send(STREAM, node=node).result for node in ("a", "b")}
    assert mh.network is not None
    for node, where in found.items():
        address = mh.network.hosts[node].address
        assert re.fullmatch(rf"tcp://{re.escape(address)}:\d+", where["endpoint"]), where
        assert mh.curve is not None
        own = keys.load_pair(mh.curve.secret(node)).public.decode()
        assert where["public_key"] == own


def test_run_i_and_exec_i_on_another_host_echo_stdin(mh: Cluster) -> None:
    result = _berth(mh, "run", "-i", "--rm", "--node", "b", mh.rootfs, "cat",
                    input=b"over\nthe wire\n")
    assert (result.returncode, result.stdout, result.stderr) == (0, b"over\nthe wire\n", b"")
    _ok(_berth(mh, "run", "-d", "--node", "a", "--name", "ex-a", mh.rootfs, "sleep", "60"))
    result = _berth(mh, "exec", "-i", "ex-a", "sh", "-c", "cat; echo e >&2", input=b"x\n")
    assert (result.returncode, result.stdout, result.stderr) == (0, b"x\n", b"e\n")


def test_run_t_and_attach_across_hosts(mh: Cluster) -> None:
    term = _terminal(mh, "run", "-it", "--rm", "--node", "a", mh.rootfs, "sh", "-c",
                     "tty; stty size", rows=27, cols=88)
    try:
        out = term.read_until(b"27 88")
        assert re.search(rb"/dev/pts/\d+", out), out
        assert term.wait() == 0
    finally:
        term.close()
    _ok(_berth(mh, "run", "-d", "-it", "--node", "b", "--name", "sh-b", mh.rootfs, "sh"))
    term = _terminal(mh, "attach", "sh-b")
    try:
        term.write(b"echo from-$((6*7))\r")
        term.read_until(b"from-42")
        term.write(b"\x10\x11")  # ctrl-p, ctrl-q: detach
        assert term.wait() == 0
    finally:
        term.close()
    assert _ok(_berth(mh, "inspect", "--format", "{{.State.Status}}", "sh-b")).strip() == b"running"


def test_logs_follow_with_filters_across_hosts(mh: Cluster) -> None:
    _ok(_berth(mh, "run", "-d", "--node", "b", "--name", "lg-b", mh.rootfs, "sh", "-c",
               "echo one; echo two; sleep 3; echo three; sleep 60 & wait"))
    deadline = time.monotonic() + 20
    while b"two" not in _ok(_berth(mh, "logs", "lg-b")):
        assert time.monotonic() < deadline, "the container did not write its lines"
    proc = subprocess.Popen([sys.executable, "-m", "berth", "logs", "-f", "-t", "--tail", "1",
                             "lg-b"], env=mh.env(), stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        seen = b""
        deadline = time.monotonic() + 30
        while b" three\n" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 1)
            if ready:
                seen += os.read(proc.stdout.fileno(), 4096)
        lines = seen.decode().splitlines()
        assert all(re.match(r"\d{4}-\d\d-\d\dT\S+ ", line) for line in lines), lines
        # The last line before it attached, then what followed (all of it, had "three"
        # come out first).
        assert [line.split(" ", 1)[1] for line in lines] in (["two", "three"], ["three"])
        assert proc.poll() is None
        _ok(_berth(mh, "kill", "lg-b"))
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_an_unknown_key_is_refused_by_a_hosts_stream_socket(mh: Cluster) -> None:
    cid = _ok(_berth(mh, "run", "-d", "-i", "--node", "a", mh.rootfs, "sh", "-c",
                     "cat > /tmp/got; sleep 60")).decode().strip()
    with mh.client() as c:
        where = c.send(STREAM, node="a").result
    assert mh.curve is not None
    stranger_dir = os.path.join(mh.tmp, "stranger")
    _public, secret = keys.generate("stranger", stranger_dir)
    own = keys.load_pair(secret)
    session = StreamSession(where["endpoint"],
                            curve=keys.ClientKeys(own, where["public_key"].encode()))
    try:  # refused at whichever call first hears of the handshake
        with pytest.raises(PermissionDenied, match="refused this client's key"):
            session.open("attach", cid, stdin=True)
            session.send_stdin(b"owned\n")
            session.recv(15)
    finally:
        session.close()
    assert _ok(_berth(mh, "exec", cid, "cat", "/tmp/got")) == b""
