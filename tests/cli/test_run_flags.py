"""podman's run flags, through the real CLI into real containers: labels (and the ps
filters), --env-file, --entrypoint, --init, capabilities, ulimits, users by name, the
default seccomp profile."""

from __future__ import annotations

import json
import os
import subprocess

from engine.containers.process import default_ulimits
from tests.e2e.conftest import Engine

LOOP = "trap 'exit 0' TERM; while true; do sleep 0.1; done"


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def _run(up: Engine, *args: str) -> subprocess.CompletedProcess[str]:
    flags, command = args[:-1], args[-1]
    return up.cli("run", "--rm", *flags, up.rootfs, "sh", "-c", command)


def test_labels_and_the_ps_filters(up: Engine) -> None:
    _ok(up.cli("run", "-d", "--name", "web1", "--label", "tier=web", "-l", "team=a",
               up.rootfs, "sh", "-c", LOOP))
    _ok(up.cli("run", "-d", "--name", "db1", "--label", "tier=db", up.rootfs, "sh", "-c", LOOP))
    _ok(up.cli("run", "-d", "--name", "done1", up.rootfs, "true"))
    _ok(up.cli("wait", "done1"))

    def names(*filters: str) -> list[str]:
        flags = [x for f in filters for x in ("--filter", f)]
        return sorted(_ok(up.cli("ps", "--format", "{{.Names}}", *flags)).split())

    assert names("label=tier=web") == ["web1"]
    assert names("label=tier") == ["db1", "web1"]
    assert names("label=tier", "label=team") == ["web1"]  # every label must be there
    assert names("label=tier=web", "label=tier=db") == []
    assert names("name=web1", "name=db1") == ["db1", "web1"]  # other keys: any value
    assert names("name=^d") == ["db1"]
    assert names("status=exited") == ["done1"]  # a status filter needs no -a
    assert names("node=local", "status=running") == ["db1", "web1"]
    assert names("ancestor=" + up.rootfs, "name=1$") == ["db1", "web1"]
    web = json.loads(_ok(up.cli("inspect", "web1")))[0]
    assert web["spec"]["labels"] == {"team": "a", "tier": "web"}
    quiet = _ok(up.cli("ps", "-q", "--filter", "label=tier=web")).split()
    assert quiet == [web["id"][:12]]
    assert _ok(up.cli("ps", "-q", "--no-trunc", "-f", "name=web1")).split() == [web["id"]]
    table = _ok(up.cli("ps", "--format", "table {{.ID}}\\t{{.Names}}\\t{{.Labels.tier}}",
                       "-f", "label=tier")).splitlines()
    assert table[0].split() == ["CONTAINER", "ID", "NAMES", "TIER"]
    assert sorted(line.split()[1:] for line in table[1:]) == [["db1", "db"], ["web1", "web"]]
    as_json = json.loads(_ok(up.cli("ps", "-a", "--format", "json")))
    assert isinstance(as_json, list) and {r["name"] for r in as_json} == {"web1", "db1", "done1"}
    whole = _ok(up.cli("ps", "-f", "name=db1", "--format", "{{json .}}"))
    assert json.loads(whole)["Names"] == "db1"
    bad = up.cli("ps", "--filter", "colour=red")
    assert bad.returncode == 125 and "invalid filter" in bad.stderr
    assert up.cli("ps", "--format", "{{.Nope}}").returncode == 125


def test_env_file_and_entrypoint(up: Engine, short_tmp: str) -> None:
    path = os.path.join(short_tmp, "env")
    with open(path, "w") as f:
        f.write("# a comment\n\nA=1\nB=two words\nC=from file\n")
    out = _ok(_run(up, "--env-file", path, "-e", "C=from flag", 'echo "$A|$B|$C"'))
    assert out == "1|two words|from flag\n"
    missing = up.cli("run", "--rm", "--env-file", path + ".none", up.rootfs, "true")
    assert missing.returncode == 125 and "cannot read env file" in missing.stderr
    with open(path, "w") as f:  # a password file given by mistake: never quoted
        f.write("A=1\nroot:$6$saltsalt$hashhashhash:19000:0:99999:7:::\n")
    shadow = up.cli("run", "--rm", "--env-file", path, up.rootfs, "true")
    assert (shadow.returncode, shadow.stderr) == (
        125, f"berth: invalid line 2 in env file {path}: use KEY=VALUE with KEY a variable "
             "name\n")
    fifo = os.path.join(short_tmp, "env.fifo")
    os.mkfifo(fifo)
    blocked = up.cli("run", "--rm", "--env-file", fifo, up.rootfs, "true")
    assert (blocked.returncode, blocked.stderr) == (
        125, f"berth: env file {fifo} is not a regular file\n")
    assert _ok(up.cli("run", "--rm", "--entrypoint", "/bin/echo", up.rootfs, "hello")) \
        == "hello\n"
    assert _ok(up.cli("run", "--rm", "--entrypoint", '["sh", "-c"]', up.rootfs,
                      "echo from json")) == "from json\n"
    cid = _ok(up.cli("create", "--entrypoint", "/bin/echo", up.rootfs, "x")).strip()
    spec = json.loads(_ok(up.cli("inspect", cid)))[0]["spec"]
    assert spec["entrypoint"] == ["/bin/echo"] and spec["args"] == ["x"]


def test_init_is_pid_1(up: Engine) -> None:
    out = _ok(_run(up, "--init", "tr '\\0' ' ' < /proc/1/cmdline; echo; echo $$"))
    first, pid = out.splitlines()
    assert first.split()[:3] == ["/dev/init", "--", "sh"]
    assert pid != "1"  # the shell is catatonit's child
    plain = _ok(_run(up, "echo $$"))
    assert plain.strip() == "1"


def test_capabilities_can_be_dropped_and_added(up: Engine) -> None:
    chown = "touch /tmp/f && chown 1:1 /tmp/f && echo chowned"
    assert _ok(_run(up, chown)) == "chowned\n"
    dropped = _run(up, "--cap-drop", "CHOWN", chown)
    assert dropped.returncode == 1 and "Operation not permitted" in dropped.stderr
    assert _run(up, "--cap-drop", "ALL", chown).returncode == 1
    assert _ok(_run(up, "--cap-drop", "all", "--cap-add", "chown", chown)) == "chowned\n"
    bad = up.cli("run", "--rm", "--cap-add", "FLY", up.rootfs, "true")
    assert bad.returncode == 125 and "invalid capability" in bad.stderr


def test_ulimits_default_and_given(up: Engine) -> None:
    def nofile(*flags: str) -> list[str]:
        out = _ok(_run(up, *flags, "grep 'Max open files' /proc/self/limits"))
        return out.split()[3:5]

    default = {u.name: u for u in default_ulimits()}["nofile"]
    assert nofile() == [str(default.soft), str(default.hard)]
    assert nofile("--ulimit", "nofile=1000:2000") == ["1000", "2000"]
    out = _ok(_run(up, "--ulimit", "core=-1", "grep 'Max core' /proc/self/limits"))
    assert out.split()[4:6] == ["unlimited", "unlimited"]
    bad = up.cli("run", "--rm", "--ulimit", "nofile=2:1", up.rootfs, "true")
    assert bad.returncode == 125 and "soft limit" in bad.stderr


def test_user_by_name(up: Engine) -> None:
    assert _ok(_run(up, "--user", "nobody", "id -u; id -g")).split() == ["65534", "65534"]
    assert _ok(_run(up, "-u", "nobody:root", "id -u; id -g")).split() == ["65534", "0"]
    unknown = up.cli("run", "--rm", "--user", "alice", up.rootfs, "true")
    assert unknown.returncode == 125 and "not in the container's /etc/passwd" in unknown.stderr


def test_default_seccomp_profile_and_unconfined(up: Engine) -> None:
    """swapoff is refused by the profile itself (EPERM) even with CAP_SYS_ADMIN; without
    the profile the kernel gets to look for the file."""
    confined = _run(up, "--cap-add", "SYS_ADMIN", "swapoff /nonexistent")
    assert confined.returncode != 0 and "Operation not permitted" in confined.stderr
    free = _run(up, "--cap-add", "SYS_ADMIN", "--security-opt", "seccomp=unconfined",
                "swapoff /nonexistent")
    assert free.returncode != 0 and "No such file or directory" in free.stderr
    status = _ok(_run(up, "grep Seccomp: /proc/self/status"))
    assert status.split()[1] == "2"  # a filter is installed
    status = _ok(_run(up, "--security-opt", "seccomp=unconfined",
                      "grep Seccomp: /proc/self/status"))
    assert status.split()[1] == "0"


def test_log_opt_max_size_caps_the_containers_log_and_logs_still_reads_it(up: Engine) -> None:
    """``--log-opt max-size`` (podman's flag, powers of 1000) reaches conmon as
    ``--log-size-max``: 3000 lines (about 100 kB of log) leave a log file under the cap,
    and ``logs`` reads what is left, up to the last line. Without it there is no cap."""
    script = "i=0; while [ $i -lt 3000 ]; do echo line $i; i=$((i+1)); done"
    cid = _ok(up.cli("run", "-d", "--log-opt", "max-size=16k", up.rootfs, "sh", "-c",
                     script)).strip()
    _ok(up.cli("wait", cid))
    info = json.loads(_ok(up.cli("inspect", cid)))[0]
    assert info["spec"]["log_size_max"] == 16000
    log = os.path.join(up.root, "containers", cid, "ctr.log")
    assert 0 < os.path.getsize(log) <= 16000
    out = _ok(up.cli("logs", cid)).splitlines()
    assert out[-1] == "line 2999" and len(out) < 3000
    free = _ok(up.cli("run", "-d", up.rootfs, "sh", "-c", script)).strip()
    _ok(up.cli("wait", free))
    assert "log_size_max" not in json.loads(_ok(up.cli("inspect", free)))[0]["spec"]
    assert len(_ok(up.cli("logs", free)).splitlines()) == 3000
    for bad in ("max-size=0", "max-size=lots", "tag=x", "max-size"):
        refused = up.cli("create", "--log-opt", bad, up.rootfs, "true")
        assert refused.returncode == 125 and refused.stderr.count("\n") == 1, refused.stderr
        assert "--log-opt" in refused.stderr
