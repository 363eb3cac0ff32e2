"""Pure pieces of the runtime layer: argument building, sync messages, error sorting."""

from __future__ import annotations

import os
import time

import pytest

from engine.containers.bundle import STOP_SIGNAL_ANNOTATION, oci_config
from engine.containers.spec import PortMapping, RunSpec
from engine.errors import InvalidState, NotFound, PermissionDenied, RuntimeFailure, Timeout
from engine.runtime.config import RuntimeConfig
from engine.runtime.conmon import ConmonOptions, conmon_args, conmon_env, parse_sync, read_sync
from engine.runtime.layout import ContainerPaths
from engine.runtime.runc import classify
from engine.signals import parse_signal

CFG = RuntimeConfig(
    state_dir="/s", tmp_dir="/r", runtime_path="/usr/bin/runc", conmon_path="/usr/bin/conmon"
)


def _flags(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_conmon_args_carry_the_seed_flags() -> None:
    cfg = RuntimeConfig(
        state_dir="/s", tmp_dir="/r", conmon_path="/usr/bin/conmon", runtime_path="/usr/bin/runc",
        log_size_max=1024, no_pivot=True, debug=True, exit_command=("/bin/berth-exit", "a", "b"),
    )
    paths = ContainerPaths.of(cfg, "c1")
    argv = conmon_args(cfg, paths, ConmonOptions("c1", "web", terminal=True))
    assert _flags(argv, "-c") == ["c1"] and _flags(argv, "-u") == ["c1"]
    assert _flags(argv, "-n") == ["web"]
    assert _flags(argv, "-r") == ["/usr/bin/runc"]
    assert _flags(argv, "-b") == ["/s/containers/c1"]
    assert _flags(argv, "-p") == ["/s/containers/c1/pidfile"]
    assert _flags(argv, "-l") == ["k8s-file:/s/containers/c1/ctr.log"]
    assert _flags(argv, "--exit-dir") == ["/r/exits"]
    assert _flags(argv, "--exit-command") == ["/bin/berth-exit"]
    assert _flags(argv, "--exit-command-arg") == ["a", "b"]
    assert _flags(argv, "--conmon-pidfile") == ["/s/containers/c1/conmon.pid"]
    assert _flags(argv, "--socket-dir-path") == ["/r/socket"]
    assert _flags(argv, "--log-size-max") == ["1024"]
    assert _flags(argv, "--runtime-arg") == ["--root", "/r/runc"]
    assert "-t" in argv and "-i" not in argv and "--no-pivot" in argv
    assert _flags(argv, "--log-level") == ["debug"] and "--syslog" in argv
    assert "--restore" not in argv and "-s" not in argv


def test_a_containers_log_opt_max_size_wins_over_the_default() -> None:
    paths = ContainerPaths.of(CFG, "c1")
    assert CFG.log_size_max < 0  # podman's default: no limit, no flag
    assert "--log-size-max" not in conmon_args(CFG, paths, ConmonOptions("c1", "c1"))
    argv = conmon_args(CFG, paths, ConmonOptions("c1", "c1", log_size_max=10_000_000))
    assert _flags(argv, "--log-size-max") == ["10000000"]


def test_conmon_args_for_restore_and_stdin() -> None:
    paths = ContainerPaths.of(CFG, "c1")
    argv = conmon_args(CFG, paths, ConmonOptions("c1", "c1", stdin=True, restore_path="/img",
                                                 restore_tcp_established=True))
    assert _flags(argv, "--restore") == ["/img"]
    assert "--tcp-established" in _flags(argv, "--runtime-opt")
    assert "-i" in argv and "-t" not in argv and "--syslog" not in argv


def test_conmon_env_passes_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/notify")
    env = conmon_env(CFG, 0)
    assert env["_OCI_SYNCPIPE"] == "3" and env["_OCI_STARTPIPE"] == "4"
    assert env["NOTIFY_SOCKET"] == "/run/notify"
    assert env["PATH"].split(":")[0] == os.path.dirname(CFG.criu_path)


def test_listen_fds_only_for_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.runtime.conmon import listen_fds

    monkeypatch.setenv("LISTEN_FDS", "2")
    monkeypatch.setenv("LISTEN_PID", "1")
    assert listen_fds() == []
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    assert listen_fds() == [3, 4]


def test_sync_message_parsing() -> None:
    assert parse_sync(b'{"pid": 1234}\n', "") == 1234
    assert parse_sync(b'{"data": 99}\n', "") == 99
    with pytest.raises(RuntimeFailure, match="container create failed: exec: no such file"):
        parse_sync(b'{"pid": -1, "message": "exec: no such file"}\n', "")
    with pytest.raises(RuntimeFailure, match="probably exited.*conmon said this"):
        parse_sync(b"", "conmon said this")
    with pytest.raises(RuntimeFailure, match="unreadable"):
        parse_sync(b"not json\n", "")


def test_sync_read_is_bounded() -> None:
    r, w = os.pipe()
    try:
        start = time.monotonic()
        with pytest.raises(Timeout, match="creation timeout"):
            read_sync(r, time.monotonic() + 0.2)
        assert time.monotonic() - start < 2
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize(
    "stderr,kind",
    [
        ('time="x" level=error msg="container does not exist"', NotFound),
        ('time="x" level=error msg="open /x: permission denied"', PermissionDenied),
        ('time="x" level=error msg="container not running"', InvalidState),
        ('time="x" level=error msg="container 1 is not paused"', InvalidState),
        ("something else entirely", RuntimeFailure),
    ],
)
def test_runc_stderr_is_sorted_into_typed_errors(stderr: str, kind: type) -> None:
    err = classify(stderr, "doing it")
    assert type(err) is kind
    assert str(err).startswith("doing it: ")


def test_signal_parsing() -> None:
    assert (
        parse_signal("TERM") == 15 == parse_signal("SIGTERM") == parse_signal("sigterm")
        == parse_signal(15)
    )
    assert parse_signal("9") == 9
    assert parse_signal("RTMIN+1") == parse_signal("SIGRTMIN") + 1


def test_oci_config_reflects_the_spec() -> None:
    spec = RunSpec(
        rootfs="/rootfs", args=("sh", "-c", "x"), env=("A=1",), cwd="/w", user="5:6",
        hostname="h", terminal=True, stop_signal=2, memory=8 << 20, pids_limit=7, read_only=True,
        ports=(PortMapping("", 8080, 80),), cap_add=("CAP_SYS_ADMIN",),
    )
    doc = oci_config(spec, "c" * 64, cgroups_path="/berth/x")
    proc = doc["process"]
    assert proc["args"] == ["sh", "-c", "x"] and proc["cwd"] == "/w" and proc["terminal"] is True
    assert proc["user"] == {"uid": 5, "gid": 6}
    assert "A=1" in proc["env"] and any(e.startswith("PATH=") for e in proc["env"])
    assert "CAP_SYS_ADMIN" in proc["capabilities"]["bounding"]
    assert doc["root"] == {"path": "/rootfs", "readonly": True}
    assert doc["hostname"] == "h"
    assert doc["linux"]["resources"]["memory"] == {"limit": 8 << 20}
    assert doc["linux"]["resources"]["pids"] == {"limit": 7}
    assert doc["linux"]["cgroupsPath"] == "/berth/x"
    assert doc["annotations"][STOP_SIGNAL_ANNOTATION] == "2"
    assert {"type": "network"} in doc["linux"]["namespaces"]


def test_runspec_round_trips_and_refuses_unknown_keys() -> None:
    spec = RunSpec(
        rootfs="/r", args=("a",), ports=(PortMapping("127.0.0.1", 1, 2, "udp"),), memory=None
    )
    assert RunSpec.from_data(spec.to_data()) == spec
    from engine.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match="unknown run option"):
        RunSpec.from_data({**spec.to_data(), "privileged": True})


def test_a_runtime_message_with_escaped_newlines_reads_as_one_line() -> None:
    """Regression: a failed checkpoint's error carried CRIU's log path after a literal
    backslash-n, as runc's logrus escapes it."""
    from engine.runtime.runc import classify, runtime_message

    stderr = ('time="2026-12-01T10:03:00Z" level=error msg="criu failed: type NOTIFY '
              'errno 0\\nlog file: /var/lib/berth/c/dump.log"\n')
    assert runtime_message(stderr) == (
        "criu failed: type NOTIFY errno 0; log file: /var/lib/berth/c/dump.log")
    error = classify(stderr, "checkpointing container c")
    assert "\\n" not in error.message and "\n" not in error.message


def test_a_start_pipe_conmon_closed_is_a_runtime_failure() -> None:
    """conmon gone before it read its start byte: one sentence, not a BrokenPipeError
    escaping as an internal error."""
    import os

    from engine.errors import RuntimeFailure
    from engine.runtime import execs

    r, w = os.pipe()
    os.close(r)
    try:
        with pytest.raises(RuntimeFailure, match="conmon ended before the exec session"):
            execs._start(w)
    finally:
        os.close(w)
