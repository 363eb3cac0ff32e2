"""podman's verbs that take several containers, restart, rename and port: the real
CLI against a real engine."""

from __future__ import annotations

import json
import subprocess

from tests.e2e.conftest import Engine

LOOP = "trap 'exit 0' TERM; while true; do sleep 0.1; done"


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def _states(up: Engine) -> dict[str, str]:
    return {c["name"]: c["state"] for c in json.loads(_ok(up.cli("ps", "-a", "--format", "json")))}


def test_several_containers_each_reported(up: Engine) -> None:
    for name in ("a", "b", "c"):
        _ok(up.cli("run", "-d", "--name", name, up.rootfs, "sh", "-c", LOOP))
    assert _ok(up.cli("pause", "a", "b")).split() == ["a", "b"]
    assert _states(up) == {"a": "paused", "b": "paused", "c": "running"}
    assert _ok(up.cli("unpause", "a", "b")).split() == ["a", "b"]
    # One failure among successes: the others are still done, an error line for the
    # failure, exit 125.
    mixed = up.cli("stop", "-t", "5", "a", "nope", "b")
    assert mixed.returncode == 125
    assert mixed.stdout.split() == ["a", "b"]
    assert mixed.stderr.count("berth: ") == 1 and "nope" in mixed.stderr
    assert _states(up) == {"a": "exited", "b": "exited", "c": "running"}
    assert _ok(up.cli("wait", "a", "b")).split() == ["0", "0"]
    assert _ok(up.cli("start", "a", "b")).split() == ["a", "b"]
    assert _ok(up.cli("kill", "-s", "KILL", "a", "b")).split() == ["a", "b"]
    assert _ok(up.cli("wait", "a", "b")).split() == ["137", "137"]
    inspected = json.loads(_ok(up.cli("inspect", "a", "c")))
    assert [(i["name"], i["state"]) for i in inspected] == [("a", "exited"), ("c", "running")]
    shown = _ok(up.cli("inspect", "--format", "{{.Name}} {{.State.Status}}", "a", "c"))
    assert shown.splitlines() == ["a exited", "c running"]
    missing = up.cli("inspect", "a", "nope")
    assert missing.returncode == 125 and len(json.loads(missing.stdout)) == 1
    # rm without -f refuses the running one and removes the others; -f kills it first.
    # podman's rm exits 2 when a container is running (1 when one does not exist).
    refused = up.cli("rm", "a", "c", "b")
    assert refused.returncode == 2 and refused.stdout.split() == ["a", "b"]
    assert "running" in refused.stderr
    assert _ok(up.cli("rm", "-f", "c")).split() == ["c"]
    assert _states(up) == {}


def test_restart_runs_the_container_again(up: Engine) -> None:
    _ok(up.cli("run", "-d", "--name", "r1", up.rootfs, "sh", "-c", LOOP))
    _ok(up.cli("run", "-d", "--name", "r2", up.rootfs, "true"))
    _ok(up.cli("wait", "r2"))
    first = json.loads(_ok(up.cli("inspect", "r1")))[0]
    assert _ok(up.cli("restart", "-t", "5", "r1", "r2")).split() == ["r1", "r2"]
    again = json.loads(_ok(up.cli("inspect", "r1")))[0]
    assert again["state"] == "running" and again["pid"] != first["pid"]
    assert again["restart_count"] == first["restart_count"] + 1


def test_rename_is_an_event_and_follows_in_ps_and_history(up: Engine) -> None:
    cid = _ok(up.cli("run", "-d", "--name", "old", up.rootfs, "sh", "-c", LOOP)).strip()
    _ok(up.cli("run", "-d", "--name", "taken", up.rootfs, "sh", "-c", LOOP))
    assert _ok(up.cli("rename", "old", "new")) == ""
    assert _states(up) == {"new": "running", "taken": "running"}
    assert json.loads(_ok(up.cli("inspect", cid[:10])))[0]["name"] == "new"
    assert up.cli("inspect", "old").returncode == 125
    history = _ok(up.cli("history", "--format", "json", "new")).splitlines()
    renamed = [json.loads(e) for e in history if '"container.renamed"' in e]
    assert [e["data"] for e in renamed] == [{"name": "new"}]
    lines = _ok(up.cli("events", "--filter", "container=new", "--format",
                       "{{.Type}} {{.Status}} {{.Name}} {{.Data.name}}")).splitlines()
    assert lines[0] == "container created old old"  # names learnt as the log goes
    assert "container renamed new new" in lines
    clash = up.cli("rename", "new", "taken")
    assert clash.returncode == 125 and "already in use" in clash.stderr
    bad = up.cli("rename", "new", "no:colons")
    assert bad.returncode == 125 and "invalid container name" in bad.stderr
    # the old name is free again; the read model rebuilt from the log agrees
    _ok(up.cli("run", "-d", "--name", "old", up.rootfs, "sh", "-c", LOOP))
    assert "verified" in _ok(up.cli("projection", "rebuild", "--verify"))
    assert _states(up) == {"new": "running", "taken": "running", "old": "running"}


def test_port_lists_the_published_ports(up: Engine) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    _ok(up.cli("run", "-d", "--name", "pp", "-p", f"127.0.0.1:{free}:80", up.rootfs,
               "sh", "-c", LOOP))
    assert _ok(up.cli("port", "pp")) == f"80/tcp -> 127.0.0.1:{free}\n"
    assert _ok(up.cli("port", "pp", "80/tcp")) == f"127.0.0.1:{free}\n"


def test_prune_removes_the_stopped_containers_only(up: Engine) -> None:
    _ok(up.cli("run", "-d", "--name", "live", up.rootfs, "sh", "-c", LOOP))
    done = _ok(up.cli("run", "-d", "--name", "done", up.rootfs, "true")).strip()
    made = _ok(up.cli("create", "--name", "made", up.rootfs, "true")).strip()
    _ok(up.cli("wait", "done"))
    df = _ok(up.cli("system", "df")).splitlines()
    assert df[1].split() == ["Containers", "3", "1", "2"]
    asked = up.cli("container", "prune", input=b"n\n")
    assert asked.returncode == 0 and "Are you sure" in asked.stdout
    assert set(_states(up)) == {"live", "done", "made"}
    assert set(_ok(up.cli("container", "prune", "-f")).split()) == {done, made}
    assert _states(up) == {"live": "running"}
    _ok(up.cli("stop", "-t", "5", "live"))
    pruned = _ok(up.cli("system", "prune", "--force")).splitlines()
    assert pruned[0] == "Deleted Containers" and len(pruned) == 2
    assert _states(up) == {}
    assert "container.removed" in _ok(up.cli("history", "live"))


def test_info_names_the_versions_the_store_and_the_nodes(up: Engine) -> None:
    _ok(up.cli("run", "--rm", up.rootfs, "true"))
    info = json.loads(_ok(up.cli("info", "--format", "json")))
    assert [w["node"] for w in info["broker"]["workers"]] == ["local"]
    node = info["nodes"]["local"]
    assert node["binaries"]["runtime"]["version"].startswith("runc version")
    assert node["binaries"]["conmon"]["version"].startswith("conmon version")
    assert "criu" in node["binaries"]
    assert node["store"]["url"] == up.db_url and node["store"]["position"] >= 5
    assert info["client"]["berth"] == node["berth"]
    text = _ok(up.cli("info"))
    assert "runc version" in text and "position:" in text and "local" in text


def test_all_acts_on_the_containers_each_verb_applies_to(up: Engine) -> None:
    """With --all, podman prints the full id of each container acted on."""
    ids = {name: _ok(up.cli("run", "-d", "--name", name, up.rootfs, "sh", "-c", LOOP)).strip()
           for name in ("x1", "x2")}
    ids["x3"] = _ok(up.cli("create", "--name", "x3", up.rootfs, "true")).strip()
    running = sorted([ids["x1"], ids["x2"]])
    assert sorted(_ok(up.cli("pause", "--all")).split()) == running
    assert sorted(_ok(up.cli("unpause", "-a")).split()) == running
    assert sorted(_ok(up.cli("kill", "-a", "-s", "TERM")).split()) == running
    assert _ok(up.cli("wait", "x1", "x2")).split() == ["0", "0"]
    both = up.cli("rm", "-a", "x1")
    assert both.returncode == 125 and "not both" in both.stderr
    assert sorted(_ok(up.cli("rm", "-a")).split()) == sorted(ids.values())
    assert _states(up) == {}
