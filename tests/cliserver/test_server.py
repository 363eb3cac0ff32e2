"""The command server under abuse: garbage, a 10 MB request, a silent client,
another uid, 200 commands at once, a server killed -9 mid-command, a server older
than the code. Each ends with the server (or its replacement) still serving."""

from __future__ import annotations

import json
import os
import pwd
import signal
import socket
import struct
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from berth.cliserver import protocol, server
from tests.cliserver.conftest import REPO, Served
from tests.helpers import wait_until


def _answer(sock: socket.socket) -> tuple[bytes, str]:
    """The server's first answer: its kind and, for a refusal, its sentence."""
    sock.settimeout(15)
    head = b""
    while len(head) < 5:
        chunk = sock.recv(5 - len(head))
        if not chunk:
            return b"", ""
        head += chunk
    (n,) = struct.unpack(">I", head[1:])
    text = b""
    while head[:1] == protocol.REFUSED and len(text) < n:
        text += sock.recv(n - len(text))
    return head[:1], text.decode()


def _connect(served: Served) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(served.path)
    return s


def _still_serves(served: Served) -> None:
    result = served.cli("ps", "--format", "json")
    assert result.returncode == 0 and json.loads(result.stdout) == [], result.stderr
    assert served.front.fell_back() == []


def test_garbage_is_refused_in_one_sentence(served: Served) -> None:
    with _connect(served) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        kind, text = _answer(s)
    assert kind == protocol.REFUSED
    assert text == ("this socket serves berth's front end only; the request did not start "
                    "with its greeting")
    _still_serves(served)


def test_ten_megabytes_of_arguments_are_refused_unread(served: Served) -> None:
    request = protocol.encode(protocol.Request(0o22, "/", ("x" * 1000,) * 11_000, {}))
    assert len(request) > 10 * 1024 * 1024
    with _connect(served) as s:
        s.settimeout(15)
        try:
            s.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before all of it was sent
        kind, text = _answer(s)
    assert kind == protocol.REFUSED and "over the command server's limit" in text
    _still_serves(served)


def test_a_request_without_descriptors_runs_nothing(served: Served) -> None:
    with _connect(served) as s:
        s.sendall(protocol.encode(protocol.Request(0o22, "/", ("run", "x", "true"), {})))
        kind, text = _answer(s)
    assert kind == protocol.REFUSED and "did not carry stdin, stdout and stderr" in text
    _still_serves(served)


def test_a_silent_client_is_dropped(served: Served) -> None:
    with _connect(served) as s:
        s.sendall(protocol.MAGIC[:4])
        began = time.monotonic()
        kind, text = _answer(s)
    assert kind == protocol.REFUSED and "no whole request within" in text
    assert server.READ_TIMEOUT - 1 <= time.monotonic() - began <= server.READ_TIMEOUT + 10
    _still_serves(served)


def test_another_uid_is_refused_and_runs_the_plain_cli(served: Served) -> None:
    # The socket is 0600 in a 0700 directory; opened up here so that the uid check
    # itself is what stands in the way.
    os.chmod(os.path.dirname(os.path.dirname(served.path)), 0o711)
    os.chmod(os.path.dirname(served.path), 0o711)
    os.chmod(served.path, 0o666)
    nobody = pwd.getpwnam("nobody")
    env = dict(served.engine.env, HOME="/")
    fd = os.open(served.front.fallbacks, os.O_CREAT | os.O_WRONLY, 0o666)
    os.fchmod(fd, 0o666)  # nobody notes its fallback there
    os.close(fd)
    result = subprocess.run(
        ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups",
         served.front.binary, "--version"],
        env=env, capture_output=True, text=True, timeout=60, check=False, cwd="/")
    sentence = (f"berth: the berth command server serves uid {os.geteuid()} only, not "
                f"uid {nobody.pw_uid}; running the command without it")
    assert result.stderr.splitlines()[0] == sentence
    # and it ran the plain CLI (which this venv's interpreter, under /root, denies nobody)
    assert served.front.fell_back() == ["-P -m berth --version"]
    served.front.forget()
    _still_serves(served)


def test_two_hundred_commands_at_once_are_bounded(served: Served) -> None:
    assert served.proc is not None
    children_file = f"/proc/{served.proc.pid}/task/{served.proc.pid}/children"
    most = 0
    done = False

    def watch() -> None:
        nonlocal most
        while not done:
            with open(children_file) as f:
                most = max(most, len(f.read().split()))
            time.sleep(0.005)

    with ThreadPoolExecutor(201) as pool:
        watcher = pool.submit(watch)
        results = list(pool.map(lambda _: served.cli("ps", timeout=120), range(200)))
        done = True
        watcher.result()
    assert [r.returncode for r in results] == [0] * 200, [r.stderr for r in results][:3]
    assert all(r.stdout.startswith("CONTAINER ID") for r in results)
    assert 0 < most <= server.MAX_CHILDREN
    assert served.front.fell_back() == []


def test_a_server_killed_mid_command_neither_loses_nor_doubles_it(served: Served) -> None:
    proc = subprocess.Popen([served.front.binary, "run", "--name", "once", served.engine.rootfs,
                             "sh", "-c", "sleep 2; echo done; exit 5"], env=served.engine.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def running() -> bool:
        out = served.engine.cli("ps", "--format", "json").stdout
        return any(c["name"] == "once" for c in json.loads(out or "[]"))

    wait_until(running, 30, interval=0.1, what="the container running")
    assert served.proc is not None
    served.proc.kill()
    served.proc.wait()
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out) == (5, "done\n"), err
    ps = json.loads(served.engine.cli("ps", "-a", "--format", "json").stdout)
    assert [c["name"] for c in ps] == ["once"]  # one container, not two
    assert served.front.fell_back() == []
    # The socket is left behind by the dead server: the next command falls back.
    after = served.cli("ps", "-a", "--format", "json")
    assert after.returncode == 0 and len(json.loads(after.stdout)) == 1
    assert len(served.front.fell_back()) == 1
    # and a new server takes the socket over
    served.front.forget()
    served.start()
    _still_serves(served)


def test_a_server_older_than_the_code_is_replaced(served: Served) -> None:
    module = os.path.join(REPO, "berth", "cli", "listing.py")
    st = os.stat(module)
    try:
        os.utime(module, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        first = served.cli("ps", "--format", "json")
        assert first.returncode == 0 and json.loads(first.stdout) == []
        # that command ran without the old server, which starts again from the new code
        assert len(served.front.fell_back()) == 1
        wait_until(lambda: served.log_text().count("serving on") == 2, 30, interval=0.05,
                   what="the server replaced")
        assert "changed since the start; replacing this server" in served.log_text()
        served.front.forget()
        _still_serves(served)
    finally:
        os.utime(module, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_reach_the_command(served: Served, sig: signal.Signals) -> None:
    rootfs = served.engine.rootfs
    codes = []
    for argv in ([served.front.binary], ["python", "-m", "berth"]):
        if argv[0] == "python":
            import sys

            argv = [sys.executable, "-m", "berth"]
        proc = subprocess.Popen([*argv, "run", "--rm", rootfs, "sh", "-c",
                                 "trap 'echo caught; exit 7' INT TERM; "
                                 "echo ready; while true; do sleep 0.1; done"],
                                env=served.engine.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        codes.append((proc.returncode, out))
    assert codes[0] == codes[1] == (7, "caught\n")
    assert served.front.fell_back() == []


def _socket_open(pid: int) -> bool:
    """Whether the process holds a socket now (a descriptor listed may be closed before
    it is read: the front end opens and closes some while it starts)."""
    fds = f"/proc/{pid}/fd"
    for fd in os.listdir(fds):
        try:
            if os.readlink(f"{fds}/{fd}").startswith("socket:"):
                return True
        except FileNotFoundError:
            continue
    return False


def test_a_signal_while_the_command_is_handed_over_is_not_lost(served: Served) -> None:
    assert served.proc is not None
    served.proc.send_signal(signal.SIGSTOP)  # the request waits, unread
    try:
        proc = subprocess.Popen([served.front.binary, "run", "--rm", served.engine.rootfs,
                                 "sleep", "60"], env=served.engine.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_until(lambda: _socket_open(proc.pid), 10, what="the front end connected")
        proc.send_signal(signal.SIGTERM)
    finally:
        served.proc.send_signal(signal.SIGCONT)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGTERM  # as the plain CLI dies of it at start-up
    assert json.loads(served.engine.cli("ps", "-a", "--format", "json").stdout) == []


def test_a_command_killed_by_a_signal_kills_the_front_end_alike(served: Served) -> None:
    assert served.proc is not None
    proc = subprocess.Popen([served.front.binary, "run", "--rm", served.engine.rootfs, "sh",
                             "-c", "echo ready; sleep 60"], env=served.engine.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    with open(f"/proc/{served.proc.pid}/task/{served.proc.pid}/children") as f:
        (child,) = f.read().split()
    os.kill(int(child), signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    _still_serves_any(served)


def _still_serves_any(served: Served) -> None:
    result = served.cli("ps", "-a")
    assert result.returncode == 0 and result.stdout.startswith("CONTAINER ID"), result.stderr


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_more_silent_clients_than_it_holds_cost_it_no_cpu(served: Served) -> None:
    assert served.proc is not None
    silent = []
    try:
        for _ in range(server.MAX_CLIENTS + 20):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            # blocking, at most 10 s: a full backlog makes connect wait for an accept
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 10, 0))
            s.connect(served.path)
            silent.append(s)
        time.sleep(0.5)  # measuring an idle period (after the accepts): nothing to wait for
        began = _cpu_seconds(served.proc.pid)
        time.sleep(2)
        spent = _cpu_seconds(served.proc.pid) - began
        assert spent < 0.2, f"the server spent {spent:.2f}s of CPU on 2s of silent clients"
    finally:
        for s in silent:
            s.close()
    _still_serves(served)


def test_a_server_command_from_another_client_is_not_run(served: Served) -> None:
    r, w = os.pipe()
    try:
        with _connect(served) as s:
            request = protocol.encode(protocol.Request(0o22, "/", ("up",), served.engine.env))
            s.sendmsg([request], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                   struct.pack("3i", r, w, w))])
            kind, text = _answer(s)
    finally:
        os.close(r)
        os.close(w)
    assert (kind, text) == (protocol.REFUSED, "")
    _still_serves(served)
