"""Compose stacks converged on a real engine (broker, worker, runc, SQLite) by the
``berth compose`` CLI in its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from typing import Any

from engine.faults import ARMED_ENV, POINTS_ENV, arming_text
from tests.e2e.conftest import Engine
from tests.helpers import wait_until

STACK = """
services:
  db:
    image: {rootfs}
    command: ["sleep", "300"]
    environment: {{ROLE: db}}
    deploy: {{resources: {{limits: {{memory: 32m, pids: 20}}}}}}
  web:
    x-berth-rootfs: {rootfs}
    command: sleep 300
    labels: {{tier: front}}
    depends_on: {{db: {{condition: service_started}}}}
    deploy: {{replicas: {replicas}}}
"""


def _write(engine: Engine, replicas: int) -> str:
    path = os.path.join(engine.root, "compose.yaml")
    os.makedirs(engine.root, exist_ok=True)
    with open(path, "w") as f:
        f.write(STACK.format(rootfs=engine.rootfs, replicas=replicas))
    return path


def _compose(engine: Engine, path: str, project: str, *args: str,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "berth", "compose", "-f", path, "-p", project,
                           *args], env=env or engine.env, capture_output=True, text=True,
                          timeout=120, check=False)


def _live(engine: Engine, project: str) -> dict[str, str]:
    with engine.client() as c:
        return {str(r["name"]): str(r["state"]) for r in c.ps(all=True)
                if str(r["name"]).startswith(project + "-") and r["state"] != "removed"}


def _events(engine: Engine) -> list[Any]:
    found: list[Any] = []
    with engine.client() as c:
        while True:
            page, head = c.events(after=found[-1].position if found else 0, limit=500)
            found += page
            if not page or found[-1].position >= head:
                return found


def _created(engine: Engine, project: str) -> Counter[str]:
    return Counter(str(e.data["name"]) for e in _events(engine)
                   if e.type == "container.created" and str(e.data["name"]).startswith(project))


def _stack_events(engine: Engine, project: str) -> list[str]:
    return [e.type for e in _events(engine) if e.stream == f"stack:{project}"]


def _want(project: str, web: int) -> dict[str, str]:
    names = [f"{project}-db-1"] + [f"{project}-web-{n}" for n in range(1, web + 1)]
    return dict.fromkeys(names, "running")


def test_up_scale_up_again_and_down(up: Engine) -> None:
    project = "p" + uuid.uuid4().hex[:8]
    path = _write(up, 3)
    done = _compose(up, path, project, "up", "-d")
    assert done.returncode == 0, done.stderr
    assert _live(up, project) == _want(project, 3)
    with up.client() as c:
        spec = c.inspect(f"{project}-web-2")["spec"]
        assert len(spec["labels"].pop("com.docker.compose.config-hash")) == 64
        assert spec["labels"] == {
            "com.docker.compose.container-number": "2", "com.docker.compose.project": project,
            "com.docker.compose.service": "web", "tier": "front"}
        db = c.inspect(f"{project}-db-1")["spec"]
        assert db["memory"] == 32 * 1024 * 1024 and db["pids_limit"] == 20
        assert "ROLE=db" in db["env"]
    # depends_on service_started: db was started before any web container was created
    events = _events(up)
    ids = {str(e.data["name"]): e.stream for e in events if e.type == "container.created"}
    db_id = ids[f"{project}-db-1"]
    started = min(e.position for e in events if e.type == "container.started"
                  and e.stream == db_id)
    first_web = min(e.position for e in events if e.type == "container.created"
                    and str(e.data["name"]).startswith(f"{project}-web-"))
    assert started < first_web

    again = _compose(up, path, project, "up", "-d")  # converged: nothing sent
    assert again.returncode == 0, again.stderr
    assert again.stderr == ""
    assert _created(up, project) == Counter(list(_want(project, 3)))
    assert _stack_events(up, project) == ["stack.applied"]
    applied = [e for e in _events(up) if e.type == "stack.applied"][-1]
    assert applied.data["config"]["services"]["web"]["replicas"] == 3
    assert str(applied.data["digest"]).startswith("sha256:")

    path = _write(up, 1)  # scale down: the extras removed, the rest untouched
    assert _compose(up, path, project, "up", "-d").returncode == 0
    assert _live(up, project) == _want(project, 1)
    path = _write(up, 2)  # and up again: web-2 is a new container, not a replayed one
    done = _compose(up, path, project, "up", "-d")
    assert done.returncode == 0, done.stderr
    assert _live(up, project) == _want(project, 2)

    ps = _compose(up, path, project, "ps")
    assert ps.returncode == 0 and f"{project}-web-2  web" in ps.stdout

    down = _compose(up, path, project, "down")
    assert down.returncode == 0, down.stderr
    assert _live(up, project) == {}
    assert _stack_events(up, project) == ["stack.applied"] * 3 + ["stack.removed"]
    assert _compose(up, path, project, "down").returncode == 0  # nothing left: no event
    assert _stack_events(up, project) == ["stack.applied"] * 3 + ["stack.removed"]


def test_reconciler_killed_mid_up_converges_without_doubling(up: Engine) -> None:
    project = "k" + uuid.uuid4().hex[:8]
    path = _write(up, 3)
    arming = os.path.join(up.root, "armed")
    with open(arming, "w") as f:
        f.write(arming_text("compose.sent.3"))
    os.chmod(arming, 0o600)
    killed = _compose(up, path, project, "up", "-d",
                      env={**up.env, POINTS_ENV: "compose.sent.3", ARMED_ENV: arming})
    assert killed.returncode == -9, killed.stderr
    partial = _live(up, project)
    # Cut short: db and part of web (creates sent in parallel may finish after the kill).
    assert partial and partial != _want(project, 3)
    done = _compose(up, path, project, "up", "-d")
    assert done.returncode == 0, done.stderr
    assert _live(up, project) == _want(project, 3)
    assert _created(up, project) == Counter(list(_want(project, 3)))  # none created twice
    assert _stack_events(up, project) == ["stack.applied"]
    assert _compose(up, path, project, "down").returncode == 0
    assert _live(up, project) == {}


def test_named_volume_config_and_unsupported_keys(up: Engine) -> None:
    project = "v" + uuid.uuid4().hex[:8]
    path = os.path.join(up.root, "vol.yaml")
    os.makedirs(up.root, exist_ok=True)
    with open(path, "w") as f:
        f.write(f"services:\n  a:\n    image: {up.rootfs}\n"
                "    command: [sh, -c, 'echo hello > /var/x; sleep 300']\n"
                "    volumes: ['store:/var']\nvolumes:\n  store: {}\n")
    config = _compose(up, path, project, "config")
    assert config.returncode == 0 and f"{project}_store:/var" in config.stdout
    assert _compose(up, path, project, "up", "-d").returncode == 0
    with up.client() as c:
        assert f"{project}_store" in {v["name"] for v in c.volumes()}
    down = _compose(up, path, project, "down", "-v")
    assert down.returncode == 0, down.stderr
    with up.client() as c:
        assert f"{project}_store" not in {v["name"] for v in c.volumes()}
    assert _live(up, project) == {}

    with open(path, "w") as f:
        f.write(f"services:\n  a:\n    image: {up.rootfs}\n    command: [x]\n"
                "    privileged: true\n    cap_drop: [ALL]\n")
    bad = _compose(up, path, project, "up", "-d")
    assert bad.returncode == 125
    assert bad.stderr.splitlines() == ["berth: services.a.cap_drop: not supported",
                                       "services.a.privileged: not supported"]
    assert _live(up, project) == {}


def test_logs_restart_and_completed_dependency(up: Engine) -> None:
    """A one-shot service others wait to complete successfully; its output and the
    other's are in ``compose logs``, prefixed with the container; ``restart`` starts a
    new process (the container's start count goes up)."""
    project = "l" + uuid.uuid4().hex[:8]
    path = os.path.join(up.root, "logs.yaml")
    os.makedirs(up.root, exist_ok=True)
    with open(path, "w") as f:
        f.write(f"services:\n  init:\n    image: {up.rootfs}\n    command: [echo, ready]\n"
                f"  app:\n    image: {up.rootfs}\n    command: [sh, -c, 'echo up; sleep 300']\n"
                "    depends_on: {init: {condition: service_completed_successfully}}\n")
    done = _compose(up, path, project, "up", "-d")
    assert done.returncode == 0, done.stderr
    assert _live(up, project) == {f"{project}-init-1": "exited", f"{project}-app-1": "running"}
    events = _events(up)
    ids = {str(e.data["name"]): e.stream for e in events if e.type == "container.created"}
    init_exit = min(e.position for e in events
                    if e.type == "container.exited" and e.stream == ids[f"{project}-init-1"])
    assert init_exit < min(e.position for e in events if e.stream == ids[f"{project}-app-1"])
    again = _compose(up, path, project, "up", "-d")  # the one-shot is not run again
    assert again.returncode == 0 and again.stderr == ""
    logs = _compose(up, path, project, "logs")
    assert logs.returncode == 0, logs.stderr
    assert f"{project}-init-1 | ready" in logs.stdout.splitlines()
    assert f"{project}-app-1 | up" in logs.stdout.splitlines()
    with up.client() as c:
        before = c.inspect(f"{project}-app-1")["started_at"]
    restarted = _compose(up, path, project, "restart")
    assert restarted.returncode == 0, restarted.stderr
    with up.client() as c:
        state = c.inspect(f"{project}-app-1")
    assert state["state"] == "running" and state["started_at"] != before
    assert _compose(up, path, project, "down").returncode == 0
    assert _live(up, project) == {}


def test_up_attached_follows_until_exit_and_bad_files_write_nothing(up: Engine) -> None:
    project = "a" + uuid.uuid4().hex[:8]
    path = os.path.join(up.root, "once.yaml")
    os.makedirs(up.root, exist_ok=True)
    with open(path, "w") as f:
        f.write(f"services:\n  a:\n    image: {up.rootfs}\n    command: [echo, hi]\n")
    done = _compose(up, path, project, "up")
    assert done.returncode == 0, done.stderr
    assert f"{project}-a-1 | hi" in done.stdout.splitlines()
    assert _compose(up, path, project, "down").returncode == 0
    head = len(_events(up))
    with open(path, "wb") as f:
        f.write(b"services:\n  a:\0\n")
    bad = _compose(up, path, project, "up", "-d")
    assert (bad.returncode, bad.stderr) == (125, f"berth: {path}: compose file holds a NUL "
                                                 "byte\n")
    missing = _compose(up, path + ".none", project, "up", "-d")
    assert missing.returncode == 125 and missing.stderr.startswith("berth: cannot read")
    assert len(_events(up)) == head  # nothing written


def test_service_healthy_dependency_waits_for_the_health_check(up: Engine) -> None:
    """The issue's stack: a database healthy once a file exists, a web service of 3
    replicas that depends on it being healthy: no web container exists before the
    database's health_status says healthy."""
    project = "h" + uuid.uuid4().hex[:8]
    path = os.path.join(up.root, "health.yaml")
    os.makedirs(up.root, exist_ok=True)
    with open(path, "w") as f:
        f.write(f"services:\n  db:\n    image: {up.rootfs}\n"
                "    command: [sh, -c, 'sleep 1; touch /var/ready; sleep 300']\n"
                "    volumes: ['flag:/var']\n"
                "    healthcheck: {test: [CMD, test, -f, /var/ready], interval: 200ms,"
                " timeout: 1s, retries: 1}\n"
                f"  web:\n    image: {up.rootfs}\n    command: [sleep, '300']\n"
                "    depends_on: {db: {condition: service_healthy}}\n"
                "    deploy: {replicas: 3}\nvolumes:\n  flag:\n")
    done = _compose(up, path, project, "up", "-d")
    assert done.returncode == 0, done.stderr
    assert _live(up, project) == _want(project, 3)
    events = _events(up)
    ids = {str(e.data["name"]): e.stream for e in events if e.type == "container.created"}
    healthy = min(e.position for e in events if e.type == "container.health_status"
                  and e.stream == ids[f"{project}-db-1"] and e.data["status"] == "healthy")
    first_web = min(e.position for e in events if e.type == "container.created"
                    and str(e.data["name"]).startswith(f"{project}-web-"))
    assert healthy < first_web
    assert _compose(up, path, project, "down", "-v").returncode == 0
    assert _live(up, project) == {}


def test_a_service_on_a_project_network(up: Engine) -> None:
    project = "n" + uuid.uuid4().hex[:8]
    subnet = f"10.91.{int(project[1:3], 16) % 200 + 20}"  # per test; 10.91/16 is compose's
    path = os.path.join(up.root, "net.yaml")
    os.makedirs(up.root, exist_ok=True)
    with open(path, "w") as f:
        f.write(f"services:\n  a:\n    image: {up.rootfs}\n"
                "    command: [sh, -c, 'ip -4 addr show eth0; sleep 300']\n"
                f"    networks: [back]\nnetworks:\n  back:\n"
                f"    ipam: {{config: [{{subnet: {subnet}.0/24}}]}}\n")
    done = _compose(up, path, project, "up", "-d")
    assert done.returncode == 0, done.stderr
    with up.client() as c:
        assert c.inspect(f"{project}-a-1")["spec"]["network"] == f"{project}_back"
        assert f"{project}_back" in {n["name"] for n in c.networks()}
    wait_until(lambda: f"inet {subnet}." in _compose(up, path, project, "logs").stdout, 10,
               what="the container's address on the project's network")
    assert _compose(up, path, project, "down").returncode == 0
    with up.client() as c:
        assert f"{project}_back" not in {n["name"] for n in c.networks()}


def test_a_failure_among_containers_sent_at_once_is_reported_and_stops_dependants(
        up: Engine) -> None:
    """Services without dependencies between them are created in parallel: one whose
    creates fail does not stop the others already under way, ``up`` fails with its
    error, and nothing that depends on it is created."""
    project = "f" + uuid.uuid4().hex[:8]
    path = os.path.join(up.root, "fail.yaml")
    os.makedirs(os.path.join(up.root, "empty-rootfs"), exist_ok=True)
    with open(path, "w") as f:
        # valid as the engine checks a create; its runtime has no such program
        f.write(f"services:\n  bad:\n    image: {up.root}/empty-rootfs\n    command: [x]\n"
                "    deploy: {replicas: 2}\n"
                f"  alpha:\n    image: {up.rootfs}\n    command: [sleep, '300']\n"
                "    deploy: {replicas: 2}\n"
                f"  zafter:\n    image: {up.rootfs}\n    command: [sleep, '300']\n"
                "    depends_on: [bad]\n")
    failed = _compose(up, path, project, "up", "-d")
    assert failed.returncode != 0
    assert "executable file not found" in failed.stderr, failed.stderr
    assert _live(up, project) == {f"{project}-alpha-1": "running",
                                  f"{project}-alpha-2": "running"}
    assert _compose(up, path, project, "down").returncode == 0
    assert _live(up, project) == {}


HASH = "$6$Zq0cWs1l$3kQ9vJ2mX8pL7rT4yU6iO0aS5dF1gH2jK3lZ4xC5vB6nM7qW8eR9tY0uI1oP2aS3dF4"
"""A password hash, as /etc/shadow holds it."""


def test_a_refused_stack_records_nothing_sends_nothing_and_quotes_nothing(up: Engine) -> None:
    """The issue's stack: an env_file that is a shadow-like file. Its lines are not
    variables: ``up`` and ``config`` refuse with one sentence naming the line number,
    exit non-zero, and nothing is in the log (no ``stack.applied`` holding the hash) and
    no container was made. So is a stack whose second service the engine would refuse
    (its first is valid: before, it was created), a 100k-deep file, a FIFO env_file."""
    project = "r" + uuid.uuid4().hex[:8]
    os.makedirs(up.root, exist_ok=True)
    shadow = os.path.join(up.root, "shadow")
    with open(shadow, "w") as f:
        f.write(f"root:{HASH}:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n")
    fifo = os.path.join(up.root, "env.fifo")
    if not os.path.exists(fifo):
        os.mkfifo(fifo)
    head = len(_events(up))
    cases = {
        "shadow.yaml": (f"services:\n  a:\n    image: {up.rootfs}\n    command: [sleep, '300']\n"
                        f"    env_file: {shadow}\n",
                        f"berth: services.a.env_file: invalid line 1 in env file {shadow}: use "
                        "KEY=VALUE with KEY a variable name\n"),
        "second.yaml": (f"services:\n  a:\n    image: {up.rootfs}\n    command: [sleep, '300']\n"
                        f"  b:\n    image: {up.rootfs}\n    command: [sleep, '300']\n"
                        "    hostname: 'not a hostname'\n    depends_on: [a]\n",
                        "berth: services.b: invalid hostname 'not a hostname'\n"),
        "deep.yaml": ("services: " + "[" * 100_000 + "]" * 100_000 + "\n",
                      f"berth: {up.root}/deep.yaml: compose file nests deeper than 64 levels\n"),
        "fifo.yaml": (f"services:\n  a:\n    image: {up.rootfs}\n    command: [sleep, '300']\n"
                      f"    env_file: {fifo}\n",
                      f"berth: services.a.env_file: env file {fifo} is not a regular file\n"),
    }
    for name, (text, refusal) in cases.items():
        path = os.path.join(up.root, name)
        with open(path, "w") as f:
            f.write(text)
        for action in (["up", "-d"], ["up"], ["config"]):
            done = _compose(up, path, project, *action)
            assert (done.returncode, done.stderr, done.stdout) == (125, refusal, ""), name
            assert HASH not in done.stderr and "$6$" not in done.stderr
    events = _events(up)
    assert len(events) == head, [e.type for e in events[head:]]
    assert _stack_events(up, project) == [] and _live(up, project) == {}
    assert not any(HASH in json.dumps(e.data) for e in events)
