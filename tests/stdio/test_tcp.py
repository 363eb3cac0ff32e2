"""Stdio streams over a tcp bus with CURVE, through real ``berth`` processes: the
worker binds its stream socket on tcp as a CURVE server with its own key pair and
admits the broker's clients' keys; the CLI learns where it is and its key from the
worker (``query.stream``). A key the broker would not admit never reaches a container.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from bus import keys
from bus.broker import Broker
from bus.client import Client
from bus.endpoints import Endpoints
from bus.stream import StreamSession
from engine.errors import PermissionDenied
from tests.e2e.conftest import Engine, _remove_all
from tests.helpers import wait_until
from tests.security.conftest import LOOPBACK, KeyStore, keystore
from tests.stdio.terminal import OnTerminal
from tests.stdio.test_stdio import _readline
from workers.worker import Worker, WorkerConfig

__all__ = ["keystore"]

NODE = "node-t"


@dataclass
class TcpEngine(Engine):
    """The e2e Engine on a tcp bus: the CLI is a CURVE client with ``key``'s pair."""

    keystore: KeyStore | None = None
    key: str = "alice"

    @property
    def env(self) -> dict[str, str]:
        env = super().env
        assert self.keystore is not None
        env.pop("BERTH_BUS_WORKERS", None)
        env.update(BERTH_KEY=str(self.keystore.secret_file(self.key)),
                   BERTH_SERVER_KEY=str(self.keystore.broker_public))
        return env

    def as_key(self, name: str) -> TcpEngine:
        return TcpEngine(self.root, self.run, self.rootfs, self.endpoints, self.broker,
                         self.worker, keystore=self.keystore, key=name)

    def config(self) -> WorkerConfig:
        assert self.keystore is not None
        return WorkerConfig(node=NODE, root=self.root, run=self.run, db_url=self.db_url,
                            backend=self.endpoints.backend, default_network="none",
                            heartbeat_interval=0.2,
                            key_file=str(self.keystore.secret_file(NODE)),
                            server_key_file=str(self.keystore.broker_public))


@pytest.fixture
def tcp(keystore: KeyStore, short_tmp: str, busybox_rootfs: str,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[TcpEngine]:
    monkeypatch.delenv("BERTH_STREAM_BIND", raising=False)
    monkeypatch.delenv("BERTH_AUTHORIZED_AUDITORS", raising=False)
    broker = Broker(LOOPBACK, LOOPBACK, LOOPBACK, security=keystore.security(),
                    heartbeat_interval=0.2)
    broker.start()
    keystore.peer(NODE, keys.WORKERS)
    keystore.peer("alice", keys.PUBLISHERS)
    endpoints = Endpoints(broker.frontend_endpoint, broker.backend_endpoint,
                          broker.events_endpoint)
    eng = TcpEngine(os.path.join(short_tmp, "root"), os.path.join(short_tmp, "run"),
                    busybox_rootfs, endpoints, broker, keystore=keystore)
    try:
        eng.worker = Worker(eng.config())
        eng.worker.start()
        worker = eng.worker
        wait_until(lambda: worker.link is not None and worker.link.connected.is_set()
                   and worker.streams is not None and worker.streams.advertised is not None,
                   10, what="worker connected, stream socket bound")
        yield eng
    finally:
        if eng.worker is not None:
            eng.worker.close()
        _remove_all(eng)
        broker.stop()


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def _sessions(eng: TcpEngine) -> int:
    assert eng.worker is not None and eng.worker.streams is not None
    return eng.worker.streams.stats["sessions"]


def test_the_stream_socket_is_tcp_with_the_workers_own_key(tcp: TcpEngine) -> None:
    assert tcp.worker is not None and tcp.worker.streams is not None
    where = tcp.worker.streams.advertised
    assert where is not None and re.fullmatch(r"tcp://127\.0\.0\.1:\d+", where), where
    assert tcp.keystore is not None
    alice = tcp.keystore.peers["alice"]
    with Client(tcp.endpoints.frontend, events_endpoint=tcp.endpoints.events, curve=alice,
                timeout=10) as client:
        from engine.command_types import STREAM

        found = client.send(STREAM, node=NODE).result
    worker_key = keys.load_pair(tcp.keystore.secret_file(NODE)).public.decode()
    assert found == {"node": NODE, "endpoint": where, "public_key": worker_key}


def test_run_i_echoes_stdin_and_run_streams_stdout_and_stderr(tcp: TcpEngine) -> None:
    result = tcp.cli("run", "-i", "--rm", tcp.rootfs, "cat", input=b"hi\nthere\n")
    assert (result.returncode, result.stdout, result.stderr) == (0, "hi\nthere\n", "")
    before = _sessions(tcp)
    result = tcp.cli("run", "--rm", tcp.rootfs, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert _sessions(tcp) == before + 1  # streamed, not polled through the bus


def test_exec_i_streams_over_tcp(tcp: TcpEngine) -> None:
    _ok(tcp.cli("run", "-d", "--name", "ex", tcp.rootfs, "sleep", "60"))
    result = tcp.cli("exec", "-i", "ex", "sh", "-c", "cat; echo end >&2; exit 2",
                     input=b"a\nb\n")
    assert (result.returncode, result.stdout, result.stderr) == (2, "a\nb\n", "end\n")


def test_run_t_sees_a_terminal_of_the_clients_size(tcp: TcpEngine) -> None:
    term = OnTerminal(tcp, "run", "-it", "--rm", tcp.rootfs, "sh", "-c", "tty; stty size",
                      rows=31, cols=97)
    try:
        out = term.read_until(b"31 97")
        assert re.search(rb"/dev/pts/\d+", out), out
        assert term.wait() == 0
    finally:
        term.close()


def test_attach_and_detach_over_tcp(tcp: TcpEngine) -> None:
    _ok(tcp.cli("run", "-d", "-i", "-t", "--name", "shell", tcp.rootfs, "sh"))
    term = OnTerminal(tcp, "attach", "shell")
    try:
        term.write(b"echo hello-$((40+2))\r")
        term.read_until(b"hello-42")
        term.write(b"\x10\x11")  # ctrl-p, ctrl-q
        assert term.wait() == 0
    finally:
        term.close()
    info = _ok(tcp.cli("inspect", "--format", "{{.State.Status}}", "shell")).strip()
    assert info == "running"


def test_logs_filters_and_follow_over_tcp(tcp: TcpEngine) -> None:
    cid = _ok(tcp.cli("run", "-d", "--name", "lg", tcp.rootfs, "sh", "-c",
                      "echo one; echo two >&2; sleep 1.2; echo three; echo four")).strip()
    assert _ok(tcp.cli("wait", cid)).strip() == "0"
    result = tcp.cli("logs", "lg")
    assert (result.stdout, result.stderr) == ("one\nthree\nfour\n", "two\n")
    assert _ok(tcp.cli("logs", "--tail", "2", "lg")) == "three\nfour\n"
    stamped = _ok(tcp.cli("logs", "-t", "lg")).splitlines()
    assert [line.split(" ", 1)[1] for line in stamped] == ["one", "three", "four"]
    times = [line.split(" ", 1)[0] for line in stamped]
    assert _ok(tcp.cli("logs", "--since", times[1], "lg")) == "three\nfour\n"
    assert _ok(tcp.cli("logs", "--until", times[0], "lg")) == "one\n"
    # -f pushes new lines as they come, with the filters, and ends with the container.
    _ok(tcp.cli("run", "-d", "--name", "fl", tcp.rootfs, "sh", "-c",
                "echo a; echo b; sleep 3; echo c; sleep 30 & wait"))
    proc = subprocess.Popen([sys.executable, "-m", "berth", "logs", "-f", "--tail", "1", "fl"],
                            env=tcp.env, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        wait_until(lambda: b"b\n" in _ok(tcp.cli("logs", "fl")).encode(), 20,
                   what="b written")
        first = _readline(proc.stdout.fileno(), 20)
        if first == b"b\n":  # the last line before it attached (else "c" came out first)
            first = _readline(proc.stdout.fileno(), 20)
        assert first == b"c\n"
        assert proc.poll() is None
        _ok(tcp.cli("kill", "fl"))
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_key_the_broker_would_not_admit_is_refused_on_the_stream_socket(
        tcp: TcpEngine) -> None:
    """Straight at the advertised endpoint (the broker refuses an unknown key before
    it could ask where that is): an unknown client key, and a client that does not
    know the worker's key, are refused in one sentence; the container sees nothing."""
    assert tcp.keystore is not None and tcp.worker is not None
    assert tcp.worker.streams is not None and tcp.worker.streams.advertised is not None
    cid = _ok(tcp.cli("run", "-d", "-i", "--name", "victim", tcp.rootfs, "sh", "-c",
                      "cat > /tmp/got; sleep 60")).strip()
    endpoint = tcp.worker.streams.advertised
    worker_public = keys.load_pair(tcp.keystore.secret_file(NODE)).public
    mallory = tcp.keystore.peer("mallory")  # a key pair nobody authorised
    wrong_server = tcp.keystore.peers["alice"]  # the broker's key, not the worker's
    for own, server in ((mallory.own, worker_public), (wrong_server.own,
                                                        wrong_server.server_public)):
        session = StreamSession(endpoint, curve=keys.ClientKeys(own, server))
        try:  # refused at whichever call first hears of the handshake
            with pytest.raises(PermissionDenied, match="refused this client's key"):
                session.open("attach", cid, stdin=True)
                session.send_stdin(b"owned\n")
                session.send_eof()
                session.recv(10)
        finally:
            session.close()
    assert tcp.worker.streams.stats["sessions"] == 0  # no session was ever opened
    assert _ok(tcp.cli("exec", "victim", "cat", "/tmp/got")) == ""


def test_an_auditors_key_reads_logs_but_cannot_attach(tcp: TcpEngine) -> None:
    assert tcp.keystore is not None
    _ok(tcp.cli("run", "-d", "-i", "--name", "au", tcp.rootfs, "sh", "-c",
                "echo seen; cat"))
    tcp.keystore.peer("carol", keys.AUDITORS)
    carol = tcp.as_key("carol")
    wait_until(lambda: _ok(carol.cli("logs", "--tail", "1", "au")) == "seen\n", 20,
               what="the auditor reads the log over the stream socket")
    result = carol.cli("attach", "au")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "auditor" in lines[0], result.stderr


def test_a_worker_without_the_clients_directory_has_no_stream_socket_and_run_polls(
        tcp: TcpEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker host without the authorised-publishers directory binds no stream
    socket (and logs why): plain ``run`` falls back to reading the log through the
    bus, and ``-i`` is refused in one sentence before anything is created."""
    assert tcp.worker is not None and tcp.keystore is not None
    tcp.worker.close()
    monkeypatch.setenv("BERTH_AUTHORIZED_PUBLISHERS", str(tcp.keystore.root / "nowhere"))
    tcp.worker = worker = Worker(tcp.config())
    worker.start()
    wait_until(lambda: worker.link is not None and worker.link.connected.is_set(), 10,
               what="worker connected")
    assert worker.streams is None
    result = tcp.cli("run", "--rm", tcp.rootfs, "sh", "-c", "echo polled; exit 4")
    assert (result.returncode, result.stdout) == (4, "polled\n"), result.stderr
    result = tcp.cli("run", "-i", "--rm", tcp.rootfs, "cat", input=b"x\n")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 125 and len(lines) == 1, result.stderr
    assert f"no stream socket for node {NODE}" in lines[0], lines
    assert "engine running" not in lines[0]
    assert _ok(tcp.cli("ps", "-a", "-q")) == ""  # the refused run left nothing


def test_the_stream_allow_list_is_the_brokers_for_clients(keystore: KeyStore,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``for_streams`` reads the clients' directories of this host; its ZAP answers
    admit publishers (and auditors, by their prefixed name), never a worker's key."""
    import zmq
    from zmq.utils.z85 import decode as z85_decode

    from bus.security import DOMAIN_STREAMS, BrokerSecurity, ZapHandler

    monkeypatch.delenv("BERTH_AUTHORIZED_AUDITORS", raising=False)
    node = keystore.peer("node-z", keys.WORKERS)
    pub = keystore.peer("pat", keys.PUBLISHERS)
    aud = keystore.peer("ann", keys.AUDITORS)
    stranger = keystore.peer("sam")
    security = BrokerSecurity.for_streams(node.own)
    assert security.server == node.own
    assert security.publishers_dir == keystore.authorized(keys.PUBLISHERS)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    zap = ZapHandler(ctx, security, (DOMAIN_STREAMS,))
    try:
        def answer(public: bytes, domain: str = DOMAIN_STREAMS) -> tuple[bytes, bytes]:
            reply = zap.answer([b"1.0", b"7", domain.encode(), b"127.0.0.1", b"", b"CURVE",
                                z85_decode(public)])
            return reply[2], reply[4]

        assert answer(pub.own.public) == (b"200", b"pat")
        assert answer(aud.own.public) == (b"200", keys.AUDITOR_PREFIX.encode() + b"ann")
        assert answer(node.own.public)[0] == b"400"
        assert answer(stranger.own.public)[0] == b"400"
        assert answer(pub.own.public, "berth.clients")[0] == b"400"  # not its domain
    finally:
        zap.stop()
        ctx.term()
    monkeypatch.setenv("BERTH_AUTHORIZED_PUBLISHERS", str(keystore.root / "nowhere"))
    from engine.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match="authorised-publishers directory .* does not "
                                              "exist on this host"):
        BrokerSecurity.for_streams(node.own)


def test_one_key_holds_a_bounded_share_of_the_stream_sessions(tcp: TcpEngine) -> None:
    """An auditor's key following logs: MAX_SESSIONS_PER_KEY sessions, then one more is
    refused in one sentence; another key still gets one (the worker is not full)."""
    from engine.errors import RateLimited
    from workers.attach import MAX_SESSIONS_PER_KEY

    assert tcp.keystore is not None and tcp.worker is not None
    assert tcp.worker.streams is not None and tcp.worker.streams.advertised is not None
    cid = _ok(tcp.cli("run", "-d", "--name", "talker", tcp.rootfs, "sh", "-c",
                      "echo hi; sleep 600")).strip()
    endpoint = tcp.worker.streams.advertised
    worker_public = keys.load_pair(tcp.keystore.secret_file(NODE)).public
    carol = tcp.keystore.peer("carol", keys.AUDITORS)
    opened: list[StreamSession] = []
    try:
        for _ in range(MAX_SESSIONS_PER_KEY):
            session = StreamSession(endpoint, curve=keys.ClientKeys(carol.own, worker_public))
            opened.append(session)
            session.open("logs", cid, logs={"follow": True})
        for session in opened:
            first = session.recv(20)
            assert first is not None and first.op == "ready", first
        extra = StreamSession(endpoint, curve=keys.ClientKeys(carol.own, worker_public))
        opened.append(extra)
        extra.open("logs", cid, logs={"follow": True})
        with pytest.raises(RateLimited, match=f"holds {MAX_SESSIONS_PER_KEY} stream sessions"):
            extra.recv(20)
        alice = tcp.keystore.peers["alice"]
        other = StreamSession(endpoint, curve=keys.ClientKeys(alice.own, worker_public))
        opened.append(other)
        other.open("logs", cid, logs={"follow": True})
        first = other.recv(20)
        assert first is not None and first.op == "ready", first
    finally:
        for session in opened:
            session.close()
