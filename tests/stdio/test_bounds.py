"""What a stream client can make its worker hold: stdin frames only against the
credit the worker granted, one inotify instance however many ``logs -f`` follow, and
sessions counted in what they hold. Real worker processes, measured in /proc."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest
import zmq

from bus import stream as s
from bus.stream import StreamSession
from engine.errors import ProtocolError
from tests.e2e.conftest import Engine
from tests.helpers import rss_kib, wait_until
from workers.attach import FDS_PER_SESSION, MAX_SESSIONS, RESERVED_FDS, session_limit
from workers.inotify import POLL_INTERVAL, SharedInotify


def _ok(result: object) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)  # type: ignore[attr-defined]
    return str(result.stdout)  # type: ignore[attr-defined]


def _inotify_fds(pid: int) -> int:
    """The inotify instances a process holds (its descriptors that are one)."""
    count = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{name}") == "anon_inode:inotify":
                count += 1
        except FileNotFoundError:
            continue
    return count


def _endpoint(engine: Engine) -> str:
    endpoint = s.stream_endpoint(engine.endpoints.backend, "local")
    assert endpoint is not None
    path = endpoint[len("ipc://"):]
    wait_until(lambda: os.path.exists(path), 30, what="the worker's stream socket")
    return endpoint


def _next(sock: zmq.Socket[bytes], timeout: float) -> s.Frame:
    """The worker's next frame that is not a ping."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if sock.poll(int(left * 1000), zmq.POLLIN):
            frame = s.decode(sock.recv(), s.WORKER_OPS)
            if frame.op != "ping":
                return frame
    raise AssertionError("the worker sent nothing")


def test_stdin_sent_without_credit_ends_the_session_and_the_worker_stays_small(
        engine: Engine) -> None:
    """A client that sends 64 KiB stdin frames, never waiting for credit but paced so
    that few wait between two drains of its session, at a container that reads none
    of it: the worker holds at most its grant (1 MiB), ends the session with an error
    saying why, and does not grow by the 64 MiB sent; the container goes on."""
    worker = engine.start_worker_process()
    cid = _ok(engine.cli("run", "-d", "-i", "--name", "sink", engine.rootfs,
                         "sleep", "600")).strip()
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDTIMEO, 10_000)
    sock.setsockopt(zmq.SNDHWM, 8)  # what is sent has left this process for the worker
    sock.connect(_endpoint(engine))
    try:
        sock.send(s.encode("open", kind="attach", container=cid, session="", stdin=True,
                           tty=False, logs={}, credit=s.WINDOW))
        ready = _next(sock, 10)
        assert (ready.op, ready.get("credit")) == ("ready", s.STDIN_WINDOW)
        before = rss_kib(worker.pid)
        chunk = s.encode("in", data=b"x" * s.MAX_CHUNK)
        started = time.monotonic()
        sent = 0
        for i in range(1024):  # 64 MiB, bounded in count and (SNDTIMEO) in time
            try:
                sock.send(chunk)
            except zmq.Again:
                break
            sent += 1
            if i % 8 == 7:  # paced: never many frames waiting between two drains
                time.sleep(0.002)
        assert sent > 4 * s.STDIN_WINDOW and time.monotonic() - started < 60
        frame = _next(sock, 20)
        while frame.op == "credit":  # what it wrote to conmon before the overrun
            frame = _next(sock, 20)
        assert frame.op == "error", frame
        assert frame.get("code") == ProtocolError.code
        assert "stdin sent without credit" in str(frame.get("message"))
        wait_until(lambda: rss_kib(worker.pid) > 0, 1)
        time.sleep(0.5)  # let the I/O thread drop whatever it still had queued
        growth = rss_kib(worker.pid) - before
        assert growth < 16 * 1024, (before, growth, sent)
    finally:
        sock.close(linger=0)
    state = json.loads(_ok(engine.cli("inspect", cid)))[0]["state"]
    assert state == "running"  # the session ended, not the container
    _ok(engine.cli("rm", "-f", cid))


def test_a_client_that_keeps_the_credit_streams_a_large_stdin(up: Engine) -> None:
    """Credit comes back one per frame written whole: 8 MiB goes through ``run -i``."""
    data = b"y" * (8 * 1024 * 1024)
    result = up.cli("run", "-i", "--rm", up.rootfs, "wc", "-c", input=data, timeout=120)
    assert (result.returncode, result.stdout.strip()) == (0, str(len(data))), result.stderr


@pytest.fixture
def follows(engine: Engine) -> Iterator[list[StreamSession]]:
    sessions: list[StreamSession] = []
    yield sessions
    for session in sessions:
        session.close()


def test_many_log_follows_share_one_inotify_instance(
        engine: Engine, follows: list[StreamSession]) -> None:
    """100 ``logs -f`` sessions (two inotify instances each used to exhaust root's
    128): the worker holds as many inotify instances as with none but one, every
    session still gets the new lines, ``run`` and ``exec`` still work, and each
    session ends with the container."""
    worker = engine.start_worker_process()
    cid = _ok(engine.cli("run", "-d", "--name", "ticker", engine.rootfs, "sh", "-c",
                         "i=0; while [ $i -lt 600 ]; do echo tick $i; i=$((i+1)); "
                         "sleep 0.1; done")).strip()
    endpoint = _endpoint(engine)
    before = _inotify_fds(worker.pid)
    for _ in range(100):
        session = StreamSession(endpoint)
        follows.append(session)
        session.open("logs", cid, logs={"follow": True})
    for session in follows:
        first = session.recv(20)
        assert first is not None and first.op == "ready", first
    seen = [b"" for _ in follows]

    def all_see(marker: bytes) -> bool:
        for i, session in enumerate(follows):
            while marker not in seen[i] and (frame := session.recv(0)) is not None:
                assert frame.op == "lines", frame
                seen[i] += b"".join(bytes(r[3]) + b"\n" for r in frame.get("lines"))
        return all(marker in got for got in seen)

    wait_until(lambda: all_see(b"tick 5\n"), 30, interval=0.05, what="every follow's lines")
    held = _inotify_fds(worker.pid)
    assert held <= before + 1, (before, held)  # the shared one, made by the first follow
    # New lines still reach every session (the shared instance wakes them all) ...
    wait_until(lambda: all_see(b"tick 20\n"), 30, interval=0.05, what="new lines")
    # ... and run and exec, which wait for exit files, are not starved meanwhile.
    assert _ok(engine.cli("exec", "ticker", "echo", "in")) == "in\n"
    assert _ok(engine.cli("run", "--rm", engine.rootfs, "echo", "out")) == "out\n"
    assert _inotify_fds(worker.pid) <= before + 1
    _ok(engine.cli("kill", "ticker"))
    ended = [False for _ in follows]

    def all_ended() -> bool:
        for i, session in enumerate(follows):
            while not ended[i] and (frame := session.recv(0)) is not None:
                ended[i] = frame.op == "exit"
        return all(ended)

    wait_until(all_ended, 30, interval=0.05, what="every follow ended with the container")


def test_the_session_limit_fits_the_descriptors_a_session_holds() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
        assert session_limit() == (1024 - RESERVED_FDS) // FDS_PER_SESSION < MAX_SESSIONS
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
        assert session_limit() == MAX_SESSIONS
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_shared_instance_wakes_watchers_and_polls_past_its_limit(tmp_path: object) -> None:
    base = str(tmp_path)
    a, b = os.path.join(base, "a"), os.path.join(base, "b")
    os.mkdir(a)
    os.mkdir(b)
    shared = SharedInotify(max_watches=1)
    woken: list[str] = []
    try:
        with pytest.raises(FileNotFoundError):
            shared.watch(os.path.join(base, "missing"), lambda: None)
        first = shared.watch(a, lambda: woken.append("first"))
        second = shared.watch(a, lambda: woken.append("second"))  # the same kernel watch
        third = shared.watch(b, lambda: woken.append("third"))  # past the limit: polled
        assert (first.polled, second.polled, third.polled) == (False, False, True)
        assert shared.instances == 1
        with open(os.path.join(a, "f"), "w") as f:
            f.write("x")
        wait_until(lambda: {"first", "second"} <= set(woken), 5, what="both woken")
        assert "third" not in woken
        second.close()
        woken.clear()
        with open(os.path.join(a, "f"), "a") as f:
            f.write("y")
        wait_until(lambda: "first" in woken, 5, what="the one left woken")
        assert "second" not in woken
        os.unlink(os.path.join(a, "f"))
        os.rmdir(a)  # the kernel drops the watch: its owner polls from then on
        wait_until(lambda: first.polled, 5, interval=POLL_INTERVAL / 5,
                   what="a removed directory's watch polled")
        first.close()
        third.close()
    finally:
        shared.close()


def test_follows_past_the_watch_limit_poll_and_still_follow(up: Engine) -> None:
    """A worker whose shared inotify instance watches as many directories as it may
    (here none): ``logs -f`` polls instead, gets the new lines and ends with the
    container; an attached ``run`` still gets its exit code."""
    assert up.worker is not None and up.worker.streams is not None
    watches = up.worker.streams.watches
    watches.max_watches = 0
    cid = _ok(up.cli("run", "-d", "--name", "slow", up.rootfs, "sh", "-c",
                     "echo one; sleep 1; echo two; sleep 1")).strip()
    result = up.cli("logs", "-f", cid)
    assert (result.returncode, result.stdout) == (0, "one\ntwo\n"), result.stderr
    assert watches.polled >= 2  # the log's directory and the exits directory
    assert up.cli("run", "--rm", up.rootfs, "sh", "-c", "exit 3").returncode == 3
