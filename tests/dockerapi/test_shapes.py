"""The pure translations between Docker's shapes and berth's (no engine)."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import docker
import pytest

from berth.dockerapi import bind_path, shapes, socket_path
from berth.dockerapi.server import Caller, HttpError, clean_agent, frames
from engine.containers.spec import spec_from_user
from engine.errors import InvalidArgument


def _docker_py_body(**kw: object) -> dict[str, object]:
    """The create body docker-py itself builds (its ContainerConfig/HostConfig)."""
    api = docker.APIClient(base_url="unix:///nonexistent", version="1.41")
    host_kw = kw.pop("host_config", {})
    host = api.create_host_config(**host_kw)  # type: ignore[arg-type]
    return dict(docker.types.ContainerConfig("1.41", host_config=host, **kw))  # type: ignore[arg-type]


def test_a_docker_py_body_maps_to_a_spec_the_engine_accepts() -> None:
    body = _docker_py_body(
        image="busybox:1", command=["sh", "-c", "echo hi"], environment={"A": "1"},
        working_dir="/srv", user="1000:1000", labels={"k": "v"}, tty=True, stdin_open=True,
        ports=[80, (53, "udp")], stop_signal="SIGINT", entrypoint=["/bin/env"],
        host_config={"binds": ["/tmp:/data:ro"], "port_bindings": {80: 8080, "53/udp": None},
                     "restart_policy": {"Name": "on-failure", "MaximumRetryCount": 3},
                     "mem_limit": "64m", "nano_cpus": 500_000_000, "cap_add": ["NET_ADMIN"],
                     "cap_drop": ["MKNOD"], "init": True, "network_mode": "bridge",
                     "pids_limit": 50, "tmpfs": {"/run": "size=1m"},
                     "security_opt": ["seccomp=unconfined"]})
    spec = shapes.create_spec(body)
    assert spec["image"] == "busybox:1" and spec["rootfs"] == ""
    assert spec["args"] == ["sh", "-c", "echo hi"] and spec["entrypoint"] == ["/bin/env"]
    assert spec["env"] == ["A=1"] and spec["cwd"] == "/srv" and spec["user"] == "1000:1000"
    assert spec["labels"] == {"k": "v"} and spec["terminal"] and spec["stdin"]
    assert spec["expose"] == ["53/udp", "80/tcp"] and spec["stop_signal"] == "SIGINT"
    assert spec["volumes"] == ["/tmp:/data:ro"]
    assert sorted(spec["ports"]) == [["", 0, 53, "udp"], ["", 8080, 80, "tcp"]]
    assert spec["restart"] == "on-failure:3" and spec["memory"] == 64 * 1024 * 1024
    assert spec["cpus"] == 0.5 and spec["cap_add"] == ["NET_ADMIN"] and spec["init"] is True
    assert spec["network"] == "" and spec["pids_limit"] == 50
    assert spec["tmpfs"] == ["/run:size=1m"] and spec["seccomp"] == "unconfined"
    spec_from_user(dict(spec))  # the engine's own rules accept it


def test_zero_values_of_unmapped_fields_pass_and_real_ones_are_refused() -> None:
    body = _docker_py_body(image="busybox", command=None, host_config={})
    body["HostConfig"] = {**body["HostConfig"], "Privileged": False,  # type: ignore[dict-item]
                          "Devices": [], "OomKillDisable": None}
    body["StopTimeout"] = None
    shapes.create_spec(body)
    for where, key, value in (("HostConfig", "Privileged", True), (None, "StopTimeout", 5),
                              (None, "Volumes", {"/data": {}}),
                              ("HostConfig", "VolumesFrom", ["x"])):
        bad = dict(body)
        if where:
            bad[where] = {**body[where], key: value}  # type: ignore[dict-item]
        else:
            bad[key] = value
        with pytest.raises(HttpError, match=f"{key} is not supported") as refused:
            shapes.create_spec(bad)
        assert refused.value.status == 400


@pytest.mark.parametrize(("body", "words"), [
    ({}, "Config.Image is required"),
    ({"Image": ""}, "must not be empty"),
    ({"Image": "b", "Cmd": [1]}, "Config.Cmd[0]: expected a string"),
    ({"Image": "b", "Env": ["NOEQUALS"]}, "KEY=VALUE"),
    ({"Image": "b", "Labels": {"k": 1}}, "Config.Labels[k]"),
    ({"Image": "b", "HostConfig": {"Memory": True}}, "HostConfig.Memory: expected an integer"),
    ({"Image": "b", "HostConfig": {"Memory": -5}}, "out of range"),
    ({"Image": "b", "HostConfig": {"NetworkMode": "container:x"}}, "container:NAME"),
    ({"Image": "b", "HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": "99999"}]}}},
     "HostPort"),
    ({"Image": "b", "HostConfig": {"Mounts": [{"Type": "npipe", "Target": "/x"}]}},
     "bind, volume or tmpfs"),
    ({"Image": "b", "HostConfig": {"SecurityOpt": ["apparmor=x"]}}, "seccomp=unconfined"),
    ({"Image": "b", "Cmd": ["x"] * 5000}, "more than"),
    ("just a string", "body: expected an object"),
])
def test_bad_bodies_are_one_sentence(body: object, words: str) -> None:
    with pytest.raises(HttpError, match=None) as refused:
        shapes.create_spec(body)
    assert refused.value.status == 400 and words in refused.value.message


def test_names_policies_and_ports() -> None:
    assert shapes.container_name("/web") == "web" and shapes.container_name(None) is None
    for bad in ("-x", "a b", "a/b", "x" * 300):
        with pytest.raises(HttpError):
            shapes.container_name(bad)
    assert shapes.restart_policy({"Name": ""}) == "no"
    assert shapes.restart_policy({"Name": "always", "MaximumRetryCount": 0}) == "always"
    assert shapes.port_bindings({"80": [{"HostIp": "127.0.0.1", "HostPort": 8080}]}) == \
        [["127.0.0.1", 8080, 80, "tcp"]]


def test_inspect_and_list_shapes() -> None:
    detail = {"id": "a" * 64, "name": "web", "node": "local", "state": "running", "pid": 42,
              "exit_code": None, "created_at": "2026-12-07T10:00:00+00:00",
              "started_at": "2026-12-07T10:00:01+00:00", "finished_at": None,
              "command": ["sh", "-c", "x"], "restart_count": 0,
              "spec": {"image": "busybox", "image_id": "sha256:" + "b" * 64,
                       "args": ["-c", "x"], "entrypoint": ["sh"], "terminal": False,
                       "ports": [["", 8080, 80, "tcp"]], "restart": "on-failure:2",
                       "labels": [["k", "v"]], "stop_signal": 15, "network": ""}}
    shown = shapes.container_inspect(detail)
    assert shown["Name"] == "/web" and shown["State"]["Status"] == "running"
    assert shown["State"]["Pid"] == 42 and shown["State"]["Running"] is True
    assert shown["State"]["FinishedAt"] == "0001-01-01T00:00:00Z"
    assert shown["State"]["StartedAt"] == "2026-12-07T10:00:01Z"
    assert shown["Path"] == "sh" and shown["Args"] == ["-c", "x"]
    assert shown["Config"]["Labels"] == {"k": "v"} and shown["Config"]["StopSignal"] == "SIGTERM"
    assert shown["HostConfig"]["RestartPolicy"] == {"Name": "on-failure",
                                                    "MaximumRetryCount": 2}
    assert shown["NetworkSettings"]["Ports"] == {"80/tcp": [{"HostIp": "0.0.0.0",
                                                             "HostPort": "8080"}]}
    now = datetime(2026, 12, 7, 10, 5, 1, tzinfo=UTC)
    listed = shapes.container_summary({**detail, "image": "busybox", "labels": {"k": "v"},
                                       "ports": [["", 8080, 80, "tcp"]]}, now)
    assert listed["Names"] == ["/web"] and listed["Status"] == "Up 5 minutes"
    assert listed["Ports"] == [{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080,
                                "Type": "tcp"}]
    exited = {**detail, "state": "exited", "exit_code": 3,
              "finished_at": "2026-12-07T10:05:00+00:00"}
    assert shapes.status_text(exited, now) == "Exited (3) 1 seconds ago"


def test_frames_callers_and_socket_paths() -> None:
    assert list(frames([(1, b"hi\n"), (2, b""), (2, b"e")])) == [
        struct.pack(">BxxxL", 1, 3) + b"hi\n", b"\x02\x00\x00\x00\x00\x00\x00\x01e"]
    assert clean_agent(b"docker-sdk-python/7.2.0 extra") == "docker-sdk-python/7.2.0"
    assert clean_agent(b"evil\x00\x1b[31m" + b"x" * 500) == "evil__[31m" + "x" * 86
    assert Caller(0, 42, "curl/8").actor == "docker-api uid=0 pid=42 curl/8"
    assert Caller(5, 7, "").actor == "docker-api uid=5 pid=7"
    assert socket_path("/run/b", "") == "/run/b/docker.sock"
    assert socket_path("/run/b", "0") is None
    assert socket_path("/run/b", "unix:///srv/d.sock") == "/srv/d.sock"
    for bad in ("tcp://0.0.0.0:2375", "relative.sock", "/" + "x" * 200):
        with pytest.raises(InvalidArgument):
            bind_path(bad)


def test_healthchecks_map_both_ways() -> None:
    spec = shapes.create_spec({"Image": "b", "Healthcheck": {
        "Test": ["CMD-SHELL", "test -f /ok"], "Interval": 2_000_000_000,
        "Timeout": 500_000_000, "Retries": 4, "StartPeriod": 0}})
    assert spec["health_cmd"] == ["/bin/sh", "-c", "test -f /ok"]
    assert (spec["health_interval"], spec["health_timeout"], spec["health_retries"]) == \
        (2.0, 0.5, 4)
    spec_from_user(dict(spec))
    assert shapes.create_spec({"Image": "b", "Healthcheck": {"Test": ["CMD", "true"]}})[
        "health_cmd"] == ["true"]
    assert shapes.create_spec({"Image": "b", "Healthcheck": {"Test": ["NONE"]}}) == {
        "rootfs": "", "image": "b", "no_healthcheck": True}
    for bad in ({"Test": ["SHELL", "x"]}, {"Test": ["CMD-SHELL"]}, {"Test": "x"},
                {"Test": ["CMD", "x"], "Interval": 5}):
        with pytest.raises(HttpError) as refused:
            shapes.create_spec({"Image": "b", "Healthcheck": bad})
        assert refused.value.status == 400
    shown = shapes.container_inspect({"id": "c" * 64, "state": "created", "spec": {
        "health_cmd": ["true"], "health_interval": 2.0, "health_retries": 3}})
    assert shown["Config"]["Healthcheck"] == {"Test": ["CMD", "true"], "Interval": 2_000_000_000,
                                              "Timeout": 0, "StartPeriod": 0, "Retries": 3}


def test_health_state_and_log_size() -> None:
    spec = {"health_cmd": ["true"]}
    starting = shapes.container_inspect({"id": "c" * 64, "state": "running", "spec": spec})
    assert starting["State"]["Health"] == {"Status": "starting", "FailingStreak": 0, "Log": []}
    healthy = shapes.container_inspect({
        "id": "c" * 64, "state": "running", "spec": spec, "health": "healthy",
        "health_log": {"failing_streak": 0, "log": [{
            "exit_code": 0, "output": "ok", "started_at": "2026-12-07T10:00:00+00:00",
            "ended_at": "2026-12-07T10:00:01+00:00"}]}})
    assert healthy["State"]["Health"]["Status"] == "healthy"
    assert healthy["State"]["Health"]["Log"][0]["ExitCode"] == 0
    none = shapes.container_inspect({"id": "c" * 64, "state": "running", "spec": {}})
    assert "Health" not in none["State"]
    sized = shapes.create_spec({"Image": "b", "HostConfig": {"LogConfig": {
        "Type": "json-file", "Config": {"max-size": "10m"}}}})
    assert sized["log_size_max"] == 10_000_000
    for bad in ({"Type": "syslog"}, {"Type": "json-file", "Config": {"max-file": "3"}},
                {"Type": "json-file", "Config": {"max-size": "lots"}}):
        with pytest.raises(HttpError) as refused:
            shapes.create_spec({"Image": "b", "HostConfig": {"LogConfig": bad}})
        assert refused.value.status == 400
