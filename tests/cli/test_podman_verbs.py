"""podman's verbs and outputs on a real engine: the ``exists`` verbs, the
``container VERB`` forms, ``rm``'s exit codes and options, ``ps``'s columns and
options, ``images`` templates."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import threading
from typing import Any

from tests.e2e.conftest import Engine

LOOP = "trap 'exit 0' TERM; while true; do sleep 0.1; done"


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def _import(up: Engine, tmp: str, name: str) -> None:
    tarball = os.path.join(tmp, "rootfs.tar")
    with tarfile.open(tarball, "w") as tar:
        tar.add(up.rootfs, arcname=".")
    _ok(up.cli("image", "import", tarball, name, timeout=120))


def test_exists_verbs_answer_with_exit_0_or_1(up: Engine, short_tmp: str) -> None:
    _ok(up.cli("create", "--name", "there", up.rootfs, "true"))
    _ok(up.cli("volume", "create", "vol-there"))
    _import(up, short_tmp, "localhost/exists-img:1")
    for verb, present in (("container", "there"), ("volume", "vol-there"),
                          ("image", "localhost/exists-img:1"), ("network", "berth")):
        found = up.cli(verb, "exists", present)
        assert (found.returncode, found.stdout, found.stderr) == (0, "", ""), verb
        missing = up.cli(verb, "exists", "not-there")
        assert (missing.returncode, missing.stdout, missing.stderr) == (1, "", ""), verb
    bad = up.cli("container", "exists", "bad/name")
    assert bad.returncode == 125 and "invalid" in bad.stderr  # "could not tell" is not "no"


def test_container_verb_forms_are_the_verbs(up: Engine) -> None:
    cid = _ok(up.cli("container", "run", "-d", "--name", "formed", up.rootfs,
                     "sh", "-c", LOOP)).strip()
    assert _ok(up.cli("container", "inspect", "--format", "{{.ID}}", "formed")).strip() == cid
    assert _ok(up.cli("container", "ls", "--format", "{{.Names}}")).split() == ["formed"]
    assert _ok(up.cli("container", "stop", "formed")).strip() == "formed"
    assert _ok(up.cli("container", "rm", "formed")).strip() == "formed"
    assert up.cli("container", "exists", "formed").returncode == 1


def test_rm_exit_codes_ignore_time_and_all(up: Engine) -> None:
    _ok(up.cli("run", "-d", "--name", "busy", up.rootfs, "sh", "-c", LOOP))
    running = up.cli("rm", "busy")
    assert running.returncode == 2 and "busy is running" in running.stderr
    missing = up.cli("rm", "nosuch")
    assert missing.returncode == 1 and "no such container" in missing.stderr
    both = up.cli("rm", "nosuch", "busy")
    assert both.returncode == 2  # the worse of the two
    ignored = up.cli("rm", "--ignore", "nosuch")
    assert (ignored.returncode, ignored.stdout, ignored.stderr) == (0, "", "")
    # -t: the grace time of the stop before the removal; the loop exits on TERM
    assert _ok(up.cli("rm", "-f", "-t", "5", "busy")).strip() == "busy"
    history = [json.loads(line) for line in
               _ok(up.cli("history", "busy", "--format", "json")).splitlines()]
    exits = [e for e in history if e["type"] == "container.exited"]
    assert exits and exits[-1]["data"]["exit_code"] == 0, exits  # stopped by TERM, not killed
    ids = {_ok(up.cli("create", up.rootfs, "true")).strip() for _ in range(2)}
    assert set(_ok(up.cli("rm", "-a")).split()) == ids  # --all: full ids, as podman's
    assert up.cli("rm", "-t", "nan", "x").returncode == 125


def test_ps_columns_and_options(up: Engine) -> None:
    _ok(up.cli("run", "-d", "--name", "pub", "-p", "127.0.0.1:18931:80", up.rootfs,
               "sh", "-c", LOOP))
    assert up.cli("run", "--name", "seven", up.rootfs, "sh", "-c", "exit 7").returncode == 7
    _ok(up.cli("run", "--name", "zero", up.rootfs, "true"))
    header, *rows = _ok(up.cli("ps")).splitlines()
    assert re.split(r"\s{2,}", header) == ["CONTAINER ID", "IMAGE", "COMMAND",
                                                  "CREATED", "STATUS", "PORTS", "NAMES",
                                                  "NODE"]
    assert len(rows) == 1 and "127.0.0.1:18931->80/tcp" in rows[0] and up.rootfs in rows[0]
    bare = _ok(up.cli("ps", "--noheading")).splitlines()  # widths: without the header's
    assert len(bare) == 1 and bare[0].split()[0] == rows[0].split()[0]
    assert _ok(up.cli("ps", "--format", "{{.Names}} {{.Ports}}")).strip() == \
        "pub 127.0.0.1:18931->80/tcp"
    names = lambda *a: _ok(up.cli("ps", "--format", "{{.Names}}", *a)).split()  # noqa: E731
    assert names("--filter", "exited=7") == ["seven"]
    assert names("--filter", "exited=0") == ["zero"]
    assert names("-l") == ["zero"]
    assert names("-n", "2") == ["zero", "seven"]
    assert names("-a", "--sort", "names") == ["pub", "seven", "zero"]
    assert sorted(names("--external")) == ["pub", "seven", "zero"]
    assert up.cli("ps", "--filter", "exited=x").returncode == 125


def test_images_template_and_noheading(up: Engine, short_tmp: str) -> None:
    _import(up, short_tmp, "localhost/tmpl-img:2")
    line = _ok(up.cli("images", "--all", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"))
    listed = json.loads(_ok(up.cli("images", "--format", "json")))
    assert line.strip() == f"localhost/tmpl-img:2 {listed[0]['id'].removeprefix('sha256:')[:12]}"
    rows = _ok(up.cli("images", "--noheading")).splitlines()
    assert len(rows) == 1 and rows[0].startswith("localhost/tmpl-img")
    assert up.cli("rmi", "-a", "localhost/tmpl-img:2").returncode == 125
    assert "localhost/tmpl-img:2" in _ok(up.cli("rmi", "-a", "-f"))
    assert _ok(up.cli("images", "-q")) == ""
    assert _ok(up.cli("rmi", "-a")) == ""  # nothing left: nothing to do


def test_inspect_in_podmans_shape(up: Engine) -> None:
    cid = _ok(up.cli("run", "-d", "--name", "shaped", "-m", "32m", "-p",
                     "127.0.0.1:18932:80", up.rootfs, "sh", "-c", LOOP)).strip()
    fields = ("{{.State.Status}} {{.State.Running}} {{.State.ExitCode}} {{.HostConfig.Memory}}"
              " {{.Config.StopSignal}} {{.Id}}")
    assert _ok(up.cli("inspect", "--format", fields, "shaped")).split() == [
        "running", "true", "0", str(32 * 1024 * 1024), "SIGTERM", cid]
    item = json.loads(_ok(up.cli("inspect", "shaped")))[0]
    assert item["State"]["Pid"] == item["pid"] > 0 and item["State"]["ConmonPid"] > 0
    assert item["NetworkSettings"]["Ports"] == {"80/tcp": [{"HostIp": "127.0.0.1",
                                                            "HostPort": "18932"}]}
    assert item["state"] == "running"  # berth's own keys stay
    _ok(up.cli("kill", "shaped"))
    _ok(up.cli("wait", "shaped"))
    after = _ok(up.cli("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}} "
                       "{{.State.Pid}}", "shaped")).split()
    assert after == ["exited", "137", "0"]


def test_start_all_stop_ignore_volume_rm_all_network_prune(up: Engine) -> None:
    ids = sorted(_ok(up.cli("create", up.rootfs, "sh", "-c", LOOP)).strip() for _ in range(2))
    assert sorted(_ok(up.cli("start", "--all")).split()) == ids
    assert up.cli("start", "--all", ids[0]).returncode == 125
    assert sorted(r.split()[0] for r in _ok(up.cli("ps", "--noheading", "--no-trunc",
                                                   "--format", "{{.Id}}")).splitlines()) \
        == ids
    ignored = up.cli("stop", "--ignore", "nosuch")
    assert (ignored.returncode, ignored.stdout, ignored.stderr) == (0, "", "")
    assert up.cli("stop", "nosuch").returncode == 125
    _ok(up.cli("rm", "-f", *ids))
    unnamed = _ok(up.cli("volume", "create")).strip()
    assert len(unnamed) == 64 and int(unnamed, 16) >= 0
    _ok(up.cli("volume", "create", "kept-by-name"))
    assert sorted(_ok(up.cli("volume", "rm", "-a")).split()) == sorted([unnamed,
                                                                        "kept-by-name"])
    assert up.cli("volume", "rm", "-a", "x").returncode == 125
    _ok(up.cli("network", "create", "--subnet", "10.231.17.0/24", "prunable"))
    assert _ok(up.cli("network", "prune", "-f")).split() == ["prunable"]
    assert up.cli("network", "exists", "prunable").returncode == 1
    assert up.cli("network", "exists", "berth").returncode == 0  # the default stays


def test_info_template_in_podmans_shape(up: Engine) -> None:
    shown = _ok(up.cli("info", "--format", "{{.Host.OCIRuntime.Name}} {{.Store.GraphDriverName}}"
                       " {{.Host.DatabaseBackend}} {{.Host.Security.Rootless}}")).split()
    assert shown == ["runc", "overlay", "sqlite", "false"]
    root = _ok(up.cli("info", "-f", "{{.Store.GraphRoot}}")).strip()
    assert root.startswith(up.root)  # the worker's state directory, under BERTH_ROOT
    assert up.cli("info", "--format", "{{range .X}}").returncode == 125  # refused, not guessed


def test_events_f_is_filter_and_stream_false_prints_and_exits(up: Engine) -> None:
    _ok(up.cli("run", "--rm", "--name", "evented", up.rootfs, "true"))
    lines = _ok(up.cli("events", "-f", "type=container.started", "--stream=false",
                       "--format", "json")).splitlines()
    assert [json.loads(line)["type"] for line in lines] == ["container.started"]
    assert up.cli("events", "--stream", "maybe").returncode == 125
    follower = subprocess.Popen([sys.executable, "-m", "berth", "events", "--stream=true",
                                 "-f", "type=container.created", "--format", "json"],
                                env=up.env, stdout=subprocess.PIPE, text=True)
    got: list[dict[str, Any]] = []
    try:
        assert follower.stdout is not None
        reader = threading.Thread(target=lambda: got.append(json.loads(
            follower.stdout.readline())), daemon=True)  # type: ignore[union-attr]
        reader.start()
        # --stream=true follows from now on (podman's), so the follower may not have
        # subscribed yet when a create runs: create until one is seen
        made: list[str] = []
        for n in range(60):
            if got:
                break
            made.append(_ok(up.cli("create", "--name", f"seen-live-{n}", up.rootfs,
                                   "true")).strip())
            reader.join(0.5)
        assert got, "no live event followed"
        assert got[0]["type"] == "container.created"
        assert got[0]["container"] in made  # a new one: the old create is not replayed
        assert follower.poll() is None  # still following
    finally:
        follower.kill()
        follower.wait()
