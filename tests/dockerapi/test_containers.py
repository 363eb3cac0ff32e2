"""docker-py drives berth's Docker API for real: each call is a bus command recorded
with the caller (uid, pid, User-Agent) as its actor."""

from __future__ import annotations

import os
import time

import docker
import docker.errors
import pytest

from tests.dockerapi.conftest import Api


def _history(api: Api, name: str) -> str:
    done = api.engine.cli("history", "--all", name)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_negotiation_ping_and_version(api: Api) -> None:
    client = api.client(version="auto")
    assert client.api.api_version == "1.41"
    assert client.ping() is True
    version = client.version()
    assert version["ApiVersion"] == "1.41" and version["MinAPIVersion"] == "1.24"
    assert version["Os"] == "linux"
    info = client.info()
    assert info["Containers"] == 0 and info["OSType"] == "linux"
    # outside a swarm, as Docker's daemon answers: leaving with force is done
    assert client.api.leave_swarm(force=True) is True
    with pytest.raises(docker.errors.APIError) as joined:
        client.swarm.init()
    assert joined.value.status_code == 501


def test_run_detached_logs_wait_remove_and_the_actor_in_history(api: Api, busybox: str) -> None:
    client = api.client(version="1.41")
    client.images.pull(busybox)
    ctr = client.containers.run(busybox, ["sh", "-c", "echo out; echo err >&2; exit 3"],
                                detach=True, name="dpy-run", labels={"team": "a"},
                                environment={"GREETING": "hi"})
    assert ctr.wait(timeout=60) == {"StatusCode": 3, "Error": None}
    # the 8-byte multiplexed frames are split back into the two streams by docker-py
    assert ctr.logs(stdout=True, stderr=False) == b"out\n"
    assert ctr.logs(stdout=False, stderr=True) == b"err\n"
    assert ctr.logs(tail=1) == b"err\n"
    stamped = ctr.logs(timestamps=True).decode().splitlines()
    assert stamped[0].endswith(" out") and stamped[0][:4].isdigit()
    ctr.reload()
    assert ctr.status == "exited" and ctr.name == "dpy-run"
    attrs = ctr.attrs
    assert attrs["State"]["ExitCode"] == 3 and attrs["Name"] == "/dpy-run"
    assert attrs["Config"]["Labels"] == {"team": "a"}
    assert "GREETING=hi" in attrs["Config"]["Env"]
    assert attrs["Config"]["Cmd"] == ["sh", "-c", "echo out; echo err >&2; exit 3"]
    listed = client.containers.list(all=True, filters={"label": "team=a"})
    assert [c.id for c in listed] == [ctr.id]
    assert client.containers.list(all=True, filters={"label": "team=b"}) == []
    assert client.containers.list() == []  # not running
    ctr.remove()
    with pytest.raises(docker.errors.NotFound, match="No such container"):
        client.containers.get("dpy-run")
    history = _history(api, "dpy-run")
    actor = f"docker-api uid={os.getuid()} pid={os.getpid()} docker-sdk-python/"
    for event in ("container.created", "container.started", "container.removed"):
        line = next(x for x in history.splitlines() if event in x)
        assert actor in line and " via " in line, line


def test_stop_kill_restart_rename_and_conflicts(api: Api, busybox: str) -> None:
    client = api.client(version="1.41")
    client.images.pull(busybox)
    ctr = client.containers.run(busybox, ["sh", "-c", "trap 'exit 7' TERM; "
                                          "while true; do sleep 0.1; done"],
                                detach=True, name="dpy-life")
    ctr.reload()
    assert ctr.status == "running" and ctr.attrs["State"]["Pid"] > 0
    assert [c.id for c in client.containers.list()] == [ctr.id]
    # starting a running container is Docker's 304, stopping a stopped one too (below)
    start_url = client.api._url("/containers/{0}/start", ctr.id)
    assert client.api._post(start_url).status_code == 304
    # removing a running container without force is Docker's 409, and changes nothing
    with pytest.raises(docker.errors.APIError) as refused:
        ctr.remove()
    assert refused.value.status_code == 409
    ctr.reload()
    assert ctr.status == "running"
    # a second container with the same name: 409
    with pytest.raises(docker.errors.APIError) as clash:
        client.containers.create(busybox, ["true"], name="dpy-life")
    assert clash.value.status_code == 409
    ctr.rename("dpy-life2")
    ctr.reload()
    assert ctr.name == "dpy-life2"
    ctr.stop(timeout=5)
    ctr.reload()
    assert ctr.status == "exited" and ctr.attrs["State"]["ExitCode"] == 7
    assert client.api._post(client.api._url("/containers/{0}/stop", ctr.id)).status_code == 304
    with pytest.raises(docker.errors.APIError) as not_running:
        ctr.kill()
    assert not_running.value.status_code == 409
    ctr.restart(timeout=1)
    ctr.reload()
    assert ctr.status == "running"
    ctr.kill(signal="SIGKILL")
    assert ctr.wait(timeout=30)["StatusCode"] == 137
    ctr.remove(force=True)
    assert client.containers.list(all=True) == []


def test_follow_stream_ends_when_the_container_exits(api: Api, busybox: str) -> None:
    client = api.client(version="1.41")
    client.images.pull(busybox)
    ctr = client.containers.run(busybox, ["sh", "-c", "for i in 1 2 3; do echo $i; "
                                          "sleep 0.3; done"], detach=True)
    started = time.monotonic()
    got = b"".join(ctr.logs(stream=True, follow=True))
    assert got == b"1\n2\n3\n"
    assert time.monotonic() - started < 20
    ctr.remove()


def test_tty_logs_are_raw_and_top_lists_processes(api: Api, busybox: str) -> None:
    client = api.client(version="1.41")
    client.images.pull(busybox)
    ctr = client.containers.run(busybox, ["sh", "-c", "echo tty; sleep 30"], detach=True,
                                tty=True)
    deadline = time.monotonic() + 20
    while b"tty" not in ctr.logs() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ctr.logs().startswith(b"tty")  # no 8-byte header on a terminal's stream
    top = ctr.top()
    assert top["Titles"][0] == "PID" and any("sleep" in " ".join(p) for p in top["Processes"])
    ctr.remove(force=True)


def test_a_missing_image_is_404_so_docker_py_pulls_it(api: Api, busybox: str) -> None:
    client = api.client(version="1.41")
    with pytest.raises(docker.errors.ImageNotFound):
        client.containers.create(busybox, ["true"])
    assert client.containers.list(all=True) == []
    # containers.run pulls on that 404 and goes on
    out = client.containers.run(busybox, ["echo", "pulled"], remove=False, name="dpy-pull")
    assert out == b"pulled\n"
    client.containers.get("dpy-pull").remove()
