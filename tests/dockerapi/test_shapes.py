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
                              (None, "Shell", ["/bin/bash", "-c"]),
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
    shell = shapes.container_inspect({"id": "c" * 64, "state": "created", "spec": spec})
    assert shell["Config"]["Healthcheck"]["Test"] == ["CMD-SHELL", "test -f /ok"]
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


def test_archives_stat_and_split() -> None:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as archive:
        for name, kind in (("./", tarfile.DIRTYPE), ("./d", tarfile.DIRTYPE),
                           ("./d/f", tarfile.REGTYPE), ("./top", tarfile.REGTYPE)):
            info = tarfile.TarInfo(name)
            info.type, info.size, info.mode = kind, 3 if kind == tarfile.REGTYPE else 0, 0o755
            archive.addfile(info, io.BytesIO(b"abc") if kind == tarfile.REGTYPE else None)
    parts = shapes.split_archive(buf.getvalue())
    names = []
    for part in parts:
        with tarfile.open(fileobj=io.BytesIO(part)) as archive:
            names.append([m.name for m in archive])
    assert names == [["d", "d/f"], ["top"]]
    stat = shapes.path_stat(parts[0], "/some/where/d/")
    assert stat["name"] == "d" and stat["mode"] == (1 << 31) | 0o755
    assert shapes.path_stat(parts[1], "/top")["size"] == 3
    with pytest.raises(HttpError, match="not a tar"):
        shapes.split_archive(b"\x01" * 1024)


def test_stats_update_creds_and_filters() -> None:
    from berth.dockerapi.app import registry_creds

    now = datetime(2026, 1, 1, tzinfo=UTC)
    info = {"id": "c" * 64, "name": "web"}
    usage = {"cpu_ns": 5, "memory": 10, "memory_limit": None, "pids": 2, "block_read": 1,
             "block_write": 2, "net_rx": 3, "net_tx": 4}
    first = shapes.stats(info, usage, 1000, 2, None, now)
    assert first["cpu_stats"]["cpu_usage"]["total_usage"] == 5
    assert first["pids_stats"] == {"current": 2} and first["name"] == "/web"
    second = shapes.stats(info, usage, 2000, 2, first, now)
    assert second["precpu_stats"] == first["cpu_stats"] and second["preread"] == first["read"]
    stopped = shapes.stats(info, None, 2000, 2, None, now)
    assert stopped["cpu_stats"]["online_cpus"] == 0 and stopped["memory_stats"] == {}
    assert shapes.update_spec({"Memory": 1 << 20, "CpuShares": 0, "RestartPolicy": {
        "Name": "always"}}) == {"memory": 1 << 20, "restart": "always"}
    with pytest.raises(HttpError, match="CpuShares cannot be updated"):
        shapes.update_spec({"CpuShares": 512})
    with pytest.raises(HttpError):
        shapes.update_spec({"Memory": float("nan")})
    import base64
    import json

    def header(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    assert registry_creds(header({"username": "u", "password": "p w"})) == "u:p w"
    assert registry_creds(header({"identitytoken": "x"})) is None
    assert registry_creds(None) is None
    for bad in ("%%%", header([1]), header({"username": "a:b", "password": "p"}),
                header({"username": "u", "password": 3})):
        with pytest.raises(HttpError) as e:
            registry_creds(bad)
        assert "p w" not in e.value.message and e.value.status == 400
    vol = {"Name": "data1", "Driver": "local", "Labels": {"a": "1"}}
    assert shapes.object_matches(vol, {"name": ["ata"], "label": ["a=1"]})
    assert not shapes.object_matches(vol, {"label": ["a=2"]})
    assert not shapes.object_matches(vol, {"name": ["zzz"]})


def test_anonymous_volumes_and_mounts() -> None:
    spec = shapes.create_spec({"Image": "x", "Volumes": {"/data": {}, "/b": {}},
                               "HostConfig": {"Binds": ["/h:/b"]}})
    assert len(spec["mount"]) == 1
    kind, source, target = spec["mount"][0].split(",")
    assert kind == "type=volume" and target == "target=/data"
    assert shapes.ANONYMOUS_RE.match(source.partition("=")[2])
    spec_from_user(spec)  # the engine takes it
    for bad in ({"rel": {}}, {"/a,b": {}}, {"/x": {"opt": 1}}, ["/x"]):
        with pytest.raises(HttpError):
            shapes.create_spec({"Image": "x", "Volumes": bad})
    got = shapes.mounts({"mounts": [
        {"type": "volume", "source": "v", "target": "/v", "readonly": True},
        {"type": "tmpfs", "source": "", "target": "/t", "readonly": False}]}, {"v": "/r/v/_data"})
    assert got[0] == {"Type": "volume", "Name": "v", "Source": "/r/v/_data", "Destination": "/v",
                      "Driver": "local", "Mode": "ro", "RW": False, "Propagation": ""}
    assert got[1]["Type"] == "tmpfs" and got[1]["RW"] is True


def test_network_settings_and_log_driver_sentence() -> None:
    at = {"network": "front", "ip": "10.1.2.3", "gateway": "10.1.2.1", "prefix": 24,
          "aliases": ["web"]}
    got = shapes.network_settings({"network": "front"}, at, {})
    assert got["Networks"]["front"]["IPAddress"] == "10.1.2.3"
    assert got["Networks"]["front"]["Aliases"] == ["web"] and got["IPAddress"] == ""
    # the worker's default network: named by the address it holds, else not at all
    default = dict(at, network=shapes.DEFAULT_NETWORK)
    assert shapes.network_settings({"network": ""}, default, {})["IPAddress"] == "10.1.2.3"
    assert shapes.network_settings({"network": ""}, None, {})["Networks"] == {}
    assert shapes.network_settings({"network": "none"}, None, {})["Networks"] == {}
    assert shapes.network_settings({"network": "front"}, None, {})["Networks"]["front"][
        "IPAddress"] == ""
    with pytest.raises(HttpError, match="no log driver named 'asdf' is registered"):
        shapes.create_spec({"Image": "b", "HostConfig": {"LogConfig": {"Type": "asdf"}}})


def test_familiar_references() -> None:
    assert shapes.familiar("docker.io/library/alpine:latest") == "alpine"
    assert shapes.familiar("docker.io/library/alpine:3.10") == "alpine:3.10"
    assert shapes.familiar("docker.io/me/app:latest") == "me/app"
    assert shapes.familiar("127.0.0.1:5000/x/y:latest") == "127.0.0.1:5000/x/y"
    assert shapes.familiar("docker.io/library/a@sha256:" + "0" * 64) == "a@sha256:" + "0" * 64
    assert shapes.familiar("") == ""
