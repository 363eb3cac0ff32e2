"""podman's run/create flags that berth had not: ``-e VAR`` from the environment,
``-h`` as ``--hostname``, ``--cidfile``, ``--replace``, ``--cpus``, ``-m``/``--memory``
(0: no limit), ``--security-opt no-new-privileges`` and ``label=disable``, ``-q``;
each on a real container."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.e2e.conftest import Engine

LOOP = "trap 'exit 0' TERM; while true; do sleep 0.1; done"


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def _config(up: Engine, name: str) -> dict[str, object]:
    item = json.loads(_ok(up.cli("inspect", name)))[0]
    with open(os.path.join(item["bundle"], "config.json")) as f:
        return dict(json.load(f))


def test_env_from_the_callers_environment_and_h_as_hostname(up: Engine) -> None:
    env = dict(up.env, BERTH_T_FROM_HOST="passed through")
    env.pop("BERTH_T_UNSET", None)
    done = subprocess.run(
        [sys.executable, "-m", "berth", "run", "--rm", "-e", "BERTH_T_FROM_HOST",
         "-e", "BERTH_T_UNSET", "-h", "myhost", up.rootfs, "sh", "-c",
         'echo "$BERTH_T_FROM_HOST"; hostname; env | grep -c BERTH_T_UNSET'],
        env=env, capture_output=True, text=True, timeout=60)
    # an unset VAR is left out, as podman's: grep counts 0 lines and exits 1
    assert (done.returncode, done.stdout.splitlines()) == (1, ["passed through", "myhost", "0"])
    assert up.cli("run", "--rm", "-e", "", up.rootfs, "true").returncode == 125
    assert "show this help" in _ok(up.cli("run", "--help"))


def test_cidfile_is_written_once_and_never_overwritten(up: Engine, short_tmp: str) -> None:
    path = os.path.join(short_tmp, "cid")
    cid = _ok(up.cli("run", "-d", "--cidfile", path, up.rootfs, "true")).strip()
    with open(path) as f:
        assert f.read() == cid
    again = up.cli("create", "--cidfile", path, "--name", "second", up.rootfs, "true")
    assert again.returncode == 125 and "exists" in again.stderr
    assert up.cli("container", "exists", "second").returncode == 1  # nothing created
    attached = os.path.join(short_tmp, "cid2")
    out = _ok(up.cli("run", "--cidfile", attached, up.rootfs, "echo", "hi"))
    with open(attached) as f:
        assert out == "hi\n" and len(f.read()) == 64


def test_replace_removes_the_holder_of_the_name(up: Engine) -> None:
    first = _ok(up.cli("run", "-d", "--name", "held", up.rootfs, "sh", "-c", LOOP)).strip()
    clash = up.cli("run", "-d", "--name", "held", up.rootfs, "true")
    assert clash.returncode == 125
    second = _ok(up.cli("run", "-d", "--replace", "--name", "held", up.rootfs,
                        "sh", "-c", LOOP)).strip()
    assert second != first
    assert json.loads(_ok(up.cli("inspect", "held")))[0]["id"] == second
    assert up.cli("run", "-d", "--replace", up.rootfs, "true").returncode == 125  # no --name
    _ok(up.cli("rm", "-f", "held"))


def test_cpus_memory_and_no_new_privileges_reach_the_runtime(up: Engine) -> None:
    _ok(up.cli("run", "-d", "--name", "limited", "--cpus", "0.5", "-m", "64m",
               "--security-opt", "no-new-privileges", "--security-opt", "label=disable",
               up.rootfs, "sh", "-c", LOOP))
    config = _config(up, "limited")
    resources = config["linux"]["resources"]  # type: ignore[index]
    assert resources["cpu"] == {"quota": 50000, "period": 100000}
    assert resources["memory"] == {"limit": 64 * 1024 * 1024}
    status = _ok(up.cli("exec", "limited", "cat", "/proc/self/status"))
    assert "NoNewPrivs:\t1" in status
    _ok(up.cli("run", "-d", "--name", "unlimited", "--memory=0", up.rootfs, "sh", "-c", LOOP))
    assert "memory" not in _config(up, "unlimited")["linux"]["resources"]  # type: ignore[index]
    for bad in (["--cpus", "nan"], ["--cpus", "0"], ["--security-opt", "label=type:x"]):
        refused = up.cli("run", "--rm", *bad, up.rootfs, "true")
        assert refused.returncode == 125, bad
    _ok(up.cli("rm", "-f", "limited", "unlimited"))


def test_quiet_is_accepted_and_prints_only_the_output(up: Engine) -> None:
    assert _ok(up.cli("run", "--rm", "-q", up.rootfs, "echo", "only")) == "only\n"


def test_pid_ipc_uts_host_share_the_hosts_namespaces(up: Engine) -> None:
    def ns(kind: str) -> str:
        return os.readlink(f"/proc/self/ns/{kind}")

    shared = _ok(up.cli("run", "--rm", "--pid", "host", "--ipc", "host", "--uts", "host",
                        up.rootfs, "sh", "-c",
                        "for n in pid ipc uts; do readlink /proc/self/ns/$n; done; "
                        "hostname")).split()
    assert shared == [ns("pid"), ns("ipc"), ns("uts"), os.uname().nodename]
    etc = _ok(up.cli("run", "--rm", "--uts=host", up.rootfs, "cat", "/etc/hostname"))
    assert etc == os.uname().nodename + "\n"  # the file says the host's name too
    own = _ok(up.cli("run", "--rm", "--pid", "private", "-h", "inside", up.rootfs, "sh", "-c",
                     "for n in pid ipc uts; do readlink /proc/self/ns/$n; done; "
                     "hostname; cat /proc/1/comm")).split()
    assert own[:3] != shared[:3] and not set(own[:3]) & set(shared[:3])
    assert own[3:] == ["inside", "cat"]  # its own PID 1: the shell exec()s the last command
    for bad in (["--pid", "container:x"], ["--ipc", "shareable"], ["--uts", "host", "-h", "x"]):
        refused = up.cli("run", "--rm", *bad, up.rootfs, "true")
        assert refused.returncode == 125 and refused.stderr.count("\n") == 1, bad


def test_log_driver_k8s_file_is_the_log_berth_writes(up: Engine) -> None:
    _ok(up.cli("run", "--name", "logged", "--log-driver=k8s-file", up.rootfs, "echo", "kept"))
    assert _ok(up.cli("logs", "logged")) == "kept\n"  # read back from conmon's k8s-file
    for driver in ("journald", "none", "passthrough", "syslog"):
        refused = up.cli("run", "--rm", "--log-driver", driver, up.rootfs, "true")
        assert refused.returncode == 125 and "k8s-file" in refused.stderr, driver
    assert up.cli("container", "exists", "logged").returncode == 0
    _ok(up.cli("rm", "logged"))
