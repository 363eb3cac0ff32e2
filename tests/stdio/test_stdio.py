"""Interactive and streaming stdio through real ``berth`` processes, the worker's stream
socket, conmon's attach socket and real containers."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
import uuid

import zmq

from bus import stream as s
from engine.containers.service import KEEP_EXEC_SESSIONS
from engine.runtime import OCIRuntime
from tests.e2e.conftest import Engine
from tests.helpers import rss_kib, wait_until
from tests.stdio.terminal import OnTerminal


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def _berth(engine: Engine, *args: str, **kw: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "berth", *args], env=engine.env,
                            **kw)  # type: ignore[call-overload]


def _readline(pipe: int, timeout: float) -> bytes:
    """One line from a pipe, waiting at most ``timeout`` (b'' at the deadline)."""
    line = b""
    deadline = time.monotonic() + timeout
    while not line.endswith(b"\n") and (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([pipe], [], [], left)
        if not ready:
            break
        byte = os.read(pipe, 1)
        if not byte:
            break
        line += byte
    return line


def _none_left(engine: Engine) -> bool:
    """No container at all (``ps --format json`` prints one array, as podman's)."""
    import json

    return json.loads(_ok(engine.cli("ps", "-a", "--format", "json"))) == []


def _state(engine: Engine, ref: str) -> str:
    import json

    return str(json.loads(_ok(engine.cli("inspect", ref)))[0]["state"])


def test_run_i_forwards_stdin_and_its_end(up: Engine) -> None:
    result = up.cli("run", "-i", "--rm", up.rootfs, "cat", input=b"hi\n")
    assert (result.returncode, result.stdout, result.stderr) == (0, "hi\n", "")
    # Without -i the container's stdin is closed: cat ends at once with nothing.
    result = up.cli("run", "--rm", up.rootfs, "cat", input=b"ignored\n")
    assert (result.returncode, result.stdout) == (0, "")


def test_exec_streams_stdout_and_stderr_apart_and_takes_stdin(up: Engine) -> None:
    _ok(up.cli("run", "-d", "--name", "ex", up.rootfs, "sleep", "60"))
    result = up.cli("exec", "ex", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    result = up.cli("exec", "-i", "ex", "sh", "-c", "cat; echo end >&2", input=b"a\nb\n")
    assert (result.returncode, result.stdout, result.stderr) == (0, "a\nb\n", "end\n")


def test_output_is_pushed_while_the_container_runs_and_signals_reach_it(up: Engine) -> None:
    """The first line arrives while the container still runs; SIGUSR1 and SIGTERM sent
    to the client go to the container (sig-proxy), whose traps answer."""
    script = ("trap 'echo got-usr1' USR1; trap 'echo bye; exit 9' TERM; echo first; "
              "while :; do sleep 0.05; done")
    proc = _berth(up, "run", "--rm", "--name", "pushed", up.rootfs, "sh", "-c", script,
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        out = proc.stdout.fileno()
        assert _readline(out, 20) == b"first\n"
        assert proc.poll() is None and _state(up, "pushed") == "running"
        proc.send_signal(signal.SIGUSR1)
        assert _readline(out, 10) == b"got-usr1\n"
        assert proc.poll() is None  # the client is still attached
        proc.send_signal(signal.SIGTERM)
        assert _readline(out, 10) == b"bye\n"
        assert proc.wait(15) == 9
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _none_left(up)


def test_a_fast_producer_and_a_slow_reader_keep_memory_bounded(engine: Engine) -> None:
    """``yes`` against a reader taking 64 KiB every 20 ms: the worker (its own process),
    the broker (this one) and the client do not grow, and the stream goes on."""
    worker = engine.start_worker_process()
    proc = _berth(engine, "run", "--rm", "--name", "flood", engine.rootfs, "yes",
                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        out = proc.stdout.fileno()
        assert _readline(out, 20) == b"y\n"
        before = (rss_kib(worker.pid), rss_kib(os.getpid()), rss_kib(proc.pid))
        read = 0
        for _ in range(100):  # ~2 s at ~3 MiB/s, while yes writes as fast as it may
            read += len(os.read(out, 64 * 1024))
            time.sleep(0.02)
        after = (rss_kib(worker.pid), rss_kib(os.getpid()), rss_kib(proc.pid))
        assert proc.poll() is None  # still streaming: the session was never dropped
        assert read > 1024 * 1024
        # In flight at most WINDOW frames of 8 KiB (conmon's packets): 256 KiB; without
        # credit the client alone grows by megabytes in these two seconds.
        worker_growth, broker_growth, client_growth = (a - b for a, b in zip(after, before,
                                                                             strict=True))
        assert worker_growth < 4096 and broker_growth < 4096, (before, after)
        assert client_growth < 2048, (before, after)
    finally:
        assert proc.stdout is not None
        proc.stdout.close()  # the client's next write fails: it removes the container (--rm)
        assert proc.wait(20) == 0
    wait_until(lambda: _none_left(engine), 10,
               what="the flood container removed")


def test_tty_gives_a_terminal_of_the_clients_size(up: Engine) -> None:
    term = OnTerminal(up, "run", "-it", "--rm", up.rootfs, "sh", "-c", "tty; stty size",
                      rows=37, cols=101)
    try:
        out = term.read_until(b"37 101")
        assert re.search(rb"/dev/pts/\d+", out), out
        assert term.wait() == 0
    finally:
        term.close()


def test_a_resized_terminal_resizes_the_containers(up: Engine) -> None:
    """SIGWINCH (sent here by hand: the test's pty is nobody's controlling terminal)
    makes the client send the new size; each line typed shows the size seen inside."""
    term = OnTerminal(up, "run", "-it", "--rm", up.rootfs, "sh", "-c",
                      'while read x; do [ "$x" = q ] && exit 0; echo "size $(stty size) end"; '
                      "done", rows=20, cols=60)
    try:
        term.write(b"\r")
        term.read_until(b"size 20 60 end")
        term.resize(33, 99)
        term.proc.send_signal(signal.SIGWINCH)
        deadline = time.monotonic() + 15
        while b"size 33 99 end" not in term.output:
            assert time.monotonic() < deadline, term.output
            term.output = b""
            term.write(b"\r")
            term.read_until(b" end")
        term.write(b"q\r")
        assert term.wait() == 0
    finally:
        term.close()


def test_attach_and_detach_keys_leave_the_container_running(up: Engine) -> None:
    _ok(up.cli("run", "-d", "-i", "-t", "--name", "shell", up.rootfs, "sh"))
    term = OnTerminal(up, "attach", "shell")
    try:
        term.write(b"echo hello-$((40+2))\r")
        term.read_until(b"hello-42")
        term.write(b"\x10\x11")  # ctrl-p, ctrl-q
        assert term.wait() == 0
    finally:
        term.close()
    assert _state(up, "shell") == "running"
    # Custom keys: ctrl-x alone.
    term = OnTerminal(up, "attach", "--detach-keys", "ctrl-x", "shell")
    try:
        term.write(b"echo again\r")
        term.read_until(b"again\r\n")
        term.write(b"\x18")
        assert term.wait() == 0
    finally:
        term.close()
    assert _state(up, "shell") == "running"


def test_a_broken_detach_sequence_passes_its_keys_through(up: Engine) -> None:
    """ctrl-p followed by another key is no detach: both keys reach the container,
    whose ``od`` shows their bytes (hex, so the terminal's echo of ``^P`` cannot be
    taken for them)."""
    term = OnTerminal(up, "run", "-i", "-t", "--rm", up.rootfs, "sh", "-c",
                      "echo ready; exec od -An -tx1")
    try:
        term.read_until(b"ready")
        term.write(b"\x10x\r")  # ctrl-p, x, return
        term.write(b"\x04")  # end of input: od prints what it read
        term.read_until(b"10 78 0a")
        assert term.wait() == 0
    finally:
        term.close()


def test_exec_output_far_behind_its_reader_is_all_delivered(up: Engine) -> None:
    """A regression: exec output was read from the session's log, which conmon
    truncates at 2 MiB, so a reader more than 2 MiB behind lost output. It comes
    through the session's attach socket now, and a reader that stops holds the
    process back: ~11 MB written while nobody reads arrive whole."""
    _ok(up.cli("run", "-d", "--name", "big", up.rootfs, "sleep", "60"))
    proc = _berth(up, "exec", "big", "seq", "1", "1500000", stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        # Nobody reads for a while: long enough for seq to be done many times over
        # if nothing held it back (it was, and ran 9 MB past the log's 2 MiB cap).
        time.sleep(3)
        out = proc.stdout.read()
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    expected = "".join(f"{i}\n" for i in range(1, 1500001)).encode()
    assert len(out) == len(expected) and out == expected


def test_a_streamed_exec_whose_files_were_pruned_before_its_reader_caught_up_ends(
        up: Engine) -> None:
    """A streamed exec's reader behind by what its attach socket holds: the process
    has ended, and before the reader catches up, later sessions of the container (a
    health check's, another exec's) end and prune its files. The session used to end
    in "internal error: inotify_add_watch ...: No such file or directory" after all of
    its output; it ends like any other, the exit code left to the bus (``None``)."""
    cid = _ok(up.cli("run", "-d", "--name", "behind", up.rootfs, "sleep", "120")).strip()
    sid = str(uuid.uuid4())
    (path,) = [n for n in os.listdir(up.run) if n.startswith("stream-")]
    reader: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    reader.setsockopt(zmq.LINGER, 0)
    reader.connect(f"ipc://{os.path.join(up.run, path)}")
    try:
        # no credit yet: the worker reads nothing of the attach socket, conmon's ~15 kB
        # wait in it and the process ends
        reader.send(s.encode("open", kind="exec", container=cid, session=sid, stdin=False,
                             tty=False, logs={}, credit=0, height=0, width=0))
        with up.client() as c:
            reply = c.exec(cid, ["seq", "1", "3000"], session_id=sid, streamed=True)
            assert reply.result["exit_code"] == 0
            for _ in range(KEEP_EXEC_SESSIONS):
                c.exec(cid, ["true"])
                reader.send(s.encode("ping"))  # still here (a slow machine)
        session = OCIRuntime(up.config().runtime_config()).exec_session_paths(cid, sid)
        assert not os.path.exists(session.dir)  # pruned while its reader was behind
        reader.send(s.encode("credit", n=10 * s.WINDOW))
        out, last = b"", None
        while last is None or last.op not in ("exit", "error"):
            assert reader.poll(30_000), "the session said nothing for 30 s"
            last = s.decode(reader.recv(), s.WORKER_OPS)
            if last.op == "out":
                out += bytes(last.get("data", b""))
        assert (last.op, last.get("message")) == ("exit", None)
        assert out == "".join(f"{i}\n" for i in range(1, 3001)).encode()
    finally:
        reader.close()


def test_a_running_exec_does_not_hold_back_a_stop_of_its_container(up: Engine) -> None:
    """An exec runs for as long as its process (and, streamed, as its reader lets it):
    ``exec -it c sh`` for an hour, ``exec c cat big | less``. A stop, kill or ``rm -f``
    of the container meanwhile is carried out at once, as podman's is; it waited in
    the worker's per-container queue behind the exec (here 120 s, past the client's
    30 s: "no reply to container.stop")."""
    _ok(up.cli("run", "-d", "--name", "held", up.rootfs, "sleep", "300"))
    proc = _berth(up, "exec", "held", "sh", "-c", "echo started; sleep 120",
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert _readline(proc.stdout.fileno(), 30) == b"started\n"
        result = up.cli("stop", "-t", "1", "held", timeout=60)
        assert result.returncode == 0, result.stderr
        assert _state(up, "held") == "exited"
        assert proc.wait(30) != 0  # its process went with the container
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_exec_it_runs_on_a_terminal(up: Engine) -> None:
    _ok(up.cli("run", "-d", "--name", "tx", up.rootfs, "sleep", "60"))
    term = OnTerminal(up, "exec", "-it", "tx", "sh", "-c",
                      "tty; stty size; read line; echo got-$line", rows=29, cols=77)
    try:
        term.read_until(b"29 77")
        assert b"/dev/pts/" in term.output
        term.write(b"abc\r")
        term.read_until(b"got-abc")
        assert term.wait() == 0
    finally:
        term.close()


def test_logs_tail_since_until_timestamps_and_follow(up: Engine) -> None:
    cid = _ok(up.cli("run", "-d", "--name", "lg", up.rootfs, "sh", "-c",
                     "echo one; echo two >&2; sleep 1.2; echo three; echo four")).strip()
    assert _ok(up.cli("wait", cid)).strip() == "0"
    result = up.cli("logs", "lg")
    assert (result.stdout, result.stderr) == ("one\nthree\nfour\n", "two\n")
    assert _ok(up.cli("logs", "--tail", "2", "lg")) == "three\nfour\n"
    stamped = _ok(up.cli("logs", "-t", "lg")).splitlines()
    assert [line.split(" ", 1)[1] for line in stamped] == ["one", "three", "four"]
    times = [line.split(" ", 1)[0] for line in stamped]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+[+-]\d\d:\d\d", t) for t in times)
    assert _ok(up.cli("logs", "--since", times[1], "lg")) == "three\nfour\n"
    assert _ok(up.cli("logs", "--until", times[0], "lg")) == "one\n"
    assert _ok(up.cli("logs", "--since", "2999-01-01T00:00:00Z", "lg")) == ""
    # -f on an exited container prints what there is and ends.
    assert _ok(up.cli("logs", "-f", "lg")) == "one\nthree\nfour\n"


def test_logs_follow_pushes_new_lines_and_ends_with_the_container(up: Engine) -> None:
    _ok(up.cli("run", "-d", "--name", "fl", up.rootfs, "sh", "-c",
               "echo a; sleep 1; echo b; sleep 30 & wait"))
    proc = _berth(up, "logs", "-f", "fl", stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert _readline(proc.stdout.fileno(), 20) == b"a\n"
        assert _readline(proc.stdout.fileno(), 20) == b"b\n"
        assert proc.poll() is None
        _ok(up.cli("kill", "fl"))
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_logs_follow_of_several_containers_follows_them_all_at_once(up: Engine) -> None:
    """A regression: ``logs -f a b`` followed ``a`` until it exited and only then
    showed ``b``; both are followed at once, each line prefixed with its container."""
    _ok(up.cli("run", "-d", "--name", "fa", up.rootfs, "sh", "-c",
               "echo a1; sleep 30 & wait"))
    _ok(up.cli("run", "-d", "--name", "fb", up.rootfs, "sh", "-c",
               "echo b1; sleep 1; echo b2; sleep 30 & wait"))
    proc = _berth(up, "logs", "-f", "fa", "fb", stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        first = {_readline(fd, 20), _readline(fd, 20)}
        assert first == {b"fa a1\n", b"fb b1\n"}
        assert _readline(fd, 20) == b"fb b2\n"  # while fa still runs
        assert proc.poll() is None
        _ok(up.cli("kill", "fb"))
        _ok(up.cli("wait", "fb"))
        assert proc.poll() is None  # fa is still followed
        _ok(up.cli("kill", "fa"))
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    result = up.cli("logs", "fa", "fb")
    assert result.stdout == "fa a1\nfb b1\nfb b2\n"


def test_logs_follow_of_several_containers_refuses_a_wrong_name_at_once(up: Engine) -> None:
    """``logs -f good nosuch``: the wrong name is said at once and the command ends, as
    podman's does; it followed ``good`` in silence and said nothing of ``nosuch``
    until ``good`` exited (here in 120 s)."""
    _ok(up.cli("run", "-d", "--name", "fw", up.rootfs, "sh", "-c",
               "echo w1; sleep 120 & wait"))
    result = up.cli("logs", "-f", "fw", "nosuch", timeout=60)
    assert result.returncode != 0
    assert "nosuch" in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr


def test_start_attach_gets_all_output_and_the_exit_code(up: Engine) -> None:
    cid = _ok(up.cli("create", up.rootfs, "sh", "-c", "echo a; echo b >&2; exit 4")).strip()
    result = up.cli("start", "-a", cid)
    assert (result.returncode, result.stdout, result.stderr) == (4, "a\n", "b\n")


def test_bad_stdio_options_are_one_sentence(up: Engine) -> None:
    for args, expect in ((("run", "--detach-keys", "ctrl-", "-i", up.rootfs, "true"),
                          "invalid detach key"),
                         (("logs", "--since", "yesterday", "x"), "invalid time"),
                         (("attach", "no-such"), "no such container")):
        result = up.cli(*args)
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and expect in lines[0], result.stderr
    wait_until(lambda: _none_left(up), 10,
               what="no container left")
