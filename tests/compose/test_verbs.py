"""A Compose file as people write them, on a real engine: anchors and ``x-`` fields,
``extends`` from another file, a profile, long-form ports, variables from ``.env``;
then the verbs: ``exec`` and ``run --rm`` into a service, ``ps -a``, ``logs SERVICE
--tail`` with whole lines only, ``kill -s``, ``start``, ``rm -s``, ``port``,
``images``, ``top``, ``up -d SERVICE``, ``version``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid

from tests.e2e.conftest import Engine
from tests.helpers import wait_until
from tests.networks.conftest import claimed_subnet

FILE = """
x-common: &common
  image: ${{ROOTFS}}
  environment:
    ROLE: ${{ROLE:-fallback}}
services:
  web:
    <<: *common
    extends: {{file: base.yaml, service: httpd}}
    networks: [back]
    ports:
      - {{target: 80, published: "${{WEBPORT}}", host_ip: 127.0.0.1, protocol: tcp}}
  chatty:
    <<: *common
    command: [sh, -c, 'printf "one\\ntwo-"; sleep 0.5; printf "half\\nthree\\n"; sleep 300']
    networks: [back]
    stop_grace_period: 1s
  tools:
    <<: *common
    command: [sleep, '300']
    profiles: [debug]
    networks: [back]
networks:
  back:
    ipam: {{config: [{{subnet: {subnet}}}]}}
"""
BASE = """
services:
  httpd:
    command:
      - sh
      - -c
      - mkdir -p /tmp/w && echo "$$ROLE" > /tmp/w/index.html && exec httpd -f -p 80 -h /tmp/w
    stop_grace_period: 1s
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int) -> str:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        return data.decode(errors="replace")
    except OSError:
        return ""


def test_a_real_file_runs_and_the_verbs_act_on_its_services(up: Engine) -> None:
    project = "v" + uuid.uuid4().hex[:8]
    d = os.path.join(up.root, project)
    os.makedirs(d)
    port = _free_port()

    def compose(*args: str, env: dict[str, str] | None = None
                ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "berth", "compose", "-p", project, *args],
                              cwd=d, env={**up.env, **(env or {})}, capture_output=True,
                              text=True, timeout=120, check=False)

    def ok(*args: str, env: dict[str, str] | None = None) -> str:
        done = compose(*args, env=env)
        assert done.returncode == 0, (args, done.stderr)
        return done.stdout

    with claimed_subnet("10.95") as subnet:
        with open(os.path.join(d, "compose.yml"), "w") as f:
            f.write(FILE.format(subnet=subnet))
        with open(os.path.join(d, "base.yaml"), "w") as f:
            f.write(BASE)
        with open(os.path.join(d, ".env"), "w") as f:
            f.write(f"ROOTFS={up.rootfs}\nWEBPORT={port}\nROLE=from-dotenv\n")
        ok("up", "-d")
        try:
            # anchors, extends from base.yaml, .env and long-form ports together
            answer = wait_until(lambda: _get(port), 30, interval=0.1, what="web's port")
            assert answer.rstrip().endswith("from-dotenv")
            ps = ok("ps", "-a")
            assert f"{project}-web-1" in ps and f"{project}-chatty-1" in ps
            assert "tools" not in ps  # its profile is not active
            # exec and run --rm into a service
            assert ok("exec", "-T", "-e", "X=1", "web", "sh", "-c",
                      "echo $ROLE $X").strip() == "from-dotenv 1"
            assert ok("run", "--rm", "-T", "web", "sh", "-c", "echo one-off $ROLE"
                      ).strip() == "one-off from-dotenv"
            with up.client() as c:
                names = [str(r["name"]) for r in c.ps(all=True)
                         if str(r["name"]).startswith(project) and r["state"] != "removed"]
            assert sorted(names) == [f"{project}-chatty-1", f"{project}-web-1"]
            # logs of one service: whole lines, the partial "two-" joined to its rest
            logs = wait_until(lambda: ok("logs", "chatty") if "three" in ok("logs", "chatty")
                              else "", 20, what="chatty's lines")
            prefix = f"{project}-chatty-1 | "
            assert logs.splitlines() == [f"{prefix}one", f"{prefix}two-half",
                                         f"{prefix}three"]
            assert ok("logs", "--tail", "1", "chatty").splitlines() == [f"{prefix}three"]
            # port, images, top, version
            assert ok("port", "web", "80").strip() == f"127.0.0.1:{port}"
            assert up.rootfs in ok("images", "web")
            assert "httpd" in ok("top", "web")
            assert "berth compose version" in ok("version")
            # kill -s, start, rm -s
            bad = compose("kill", "-s", "NOPE", "chatty")
            assert bad.returncode == 125 and len(bad.stderr.strip().splitlines()) == 1
            ok("kill", "-s", "KILL", "chatty")
            wait_until(lambda: "exited" in ok("ps", "-a", "chatty"), 10, what="chatty killed")
            assert f"{project}-chatty-1" not in ok("ps")  # -a only shows it
            ok("start", "chatty")
            assert "running" in ok("ps", "chatty")
            ok("rm", "-s", "-f", "chatty")
            assert "chatty" not in ok("ps", "-a")
            # up -d SERVICE: only that one (and what it needs); the profile by --profile
            ok("--profile", "debug", "up", "-d", "tools")
            ps = ok("ps", "-a")
            assert f"{project}-tools-1" in ps and f"{project}-chatty-1" not in ps
        finally:
            ok("down", "-t", "0")


DEPS = """
services:
  db:
    image: {rootfs}
    command: [sh, -c, 'mkdir -p /tmp/w && echo db-here > /tmp/w/index.html &&
              exec httpd -f -p 5432 -h /tmp/w']
  app:
    image: {rootfs}
    command: [sleep, '300']
    depends_on: [db]
"""


def test_run_brings_up_what_the_service_depends_on_unless_no_deps(up: Engine) -> None:
    """``compose run`` starts the dependencies first (db, on the project's network, so
    the one-off reaches it by name); ``--no-deps`` starts none; ``exec -T`` passes a
    piped stdin on."""
    project = "q" + uuid.uuid4().hex[:8]
    d = os.path.join(up.root, project)
    os.makedirs(d)
    with open(os.path.join(d, "compose.yaml"), "w") as f:
        f.write(DEPS.format(rootfs=up.rootfs))

    def compose(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "berth", "compose", "-p", project, *args],
                              cwd=d, env=up.env, capture_output=True, text=True, timeout=120,
                              check=False, input=stdin,
                              stdin=subprocess.DEVNULL if stdin is None else None)

    def names() -> list[str]:
        with up.client() as c:
            return sorted(str(r["name"]) for r in c.ps(all=True)
                          if str(r["name"]).startswith(project) and r["state"] != "removed")

    try:
        alone = compose("run", "--rm", "-T", "--no-deps", "app", "echo", "alone")
        assert alone.returncode == 0 and alone.stdout.strip() == "alone", alone.stderr
        assert names() == []  # no db: not asked for
        fetch = ("for i in $(seq 50); do r=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | "
                 "timeout 2 nc db 5432 | tail -n 1) && [ -n \"$r\" ] && echo $r && exit 0; "
                 "sleep 0.2; done; exit 1")
        done = compose("run", "--rm", "-T", "app", "sh", "-c", fetch)
        assert done.returncode == 0 and done.stdout.strip() == "db-here", done.stderr
        assert names() == [f"{project}-db-1"]  # db up, app's replica not made by run
        piped = compose("exec", "-T", "db", "sh", "-c", "tr a-z A-Z", stdin="from a pipe\n")
        assert piped.returncode == 0 and piped.stdout == "FROM A PIPE\n", piped.stderr
    finally:
        down = compose("down")
    assert down.returncode == 0, down.stderr
    assert names() == []
