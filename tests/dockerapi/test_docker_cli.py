"""The docker CLI (Debian's, client only, put in a private prefix by
scripts/install.sh) against berth's socket; each command's effect then read back in
berth's own history."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.dockerapi.conftest import Api

DOCKER = os.path.join(os.environ.get("BERTH_DOCKER_CLI_PREFIX", "/opt/berth/docker"),
                      "bin", "docker")

pytestmark = pytest.mark.skipif(
    not os.access(DOCKER, os.X_OK) and shutil.which("docker") is None,
    reason=f"no docker CLI at {DOCKER}: scripts/install.sh puts it there")


def _docker(api: Api, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    binary = DOCKER if os.access(DOCKER, os.X_OK) else str(shutil.which("docker"))
    env = {"PATH": os.environ.get("PATH", ""), "HOME": api.engine.root,
           "DOCKER_HOST": f"unix://{api.socket}", "DOCKER_CONFIG": api.engine.root}
    return subprocess.run([binary, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_docker_run_ps_inspect_logs_exec_rm(api: Api, busybox: str) -> None:
    pulled = _docker(api, "pull", busybox, timeout=120)
    assert pulled.returncode == 0, pulled.stderr
    version = _docker(api, "version", "--format", "{{.Server.APIVersion}}")
    assert version.stdout.strip() == "1.41", version.stderr
    # attached run: output, exit code, --rm
    ran = _docker(api, "run", "--rm", "--name", "cli-once", busybox, "sh", "-c",
                  "echo hi; echo oops >&2; exit 3")
    assert (ran.returncode, ran.stdout, ran.stderr) == (3, "hi\n", "oops\n"), ran
    assert _docker(api, "ps", "-aq").stdout == ""
    started = _docker(api, "run", "-d", "--name", "cli-web", "--label", "tier=web",
                      busybox, "sh", "-c", "echo up; sleep 300")
    assert started.returncode == 0, started.stderr
    cid = started.stdout.strip()
    listed = _docker(api, "ps", "--filter", "label=tier=web", "--format",
                     "{{.Names}} {{.Status}}")
    assert listed.stdout.startswith("cli-web Up"), listed
    state = _docker(api, "inspect", "-f", "{{.State.Status}} {{.Name}} {{.Config.Image}}",
                    "cli-web")
    assert state.stdout.strip() == f"running /cli-web {busybox}", state
    logs = _docker(api, "logs", "--tail", "1", "cli-web")
    assert logs.stdout == "up\n", logs
    execd = _docker(api, "exec", "cli-web", "sh", "-c", "echo in; exit 5")
    assert (execd.returncode, execd.stdout) == (5, "in\n"), execd
    removed = _docker(api, "rm", "-f", "cli-web")
    assert removed.returncode == 0 and removed.stdout.strip() == "cli-web", removed
    gone = _docker(api, "inspect", "cli-web")
    assert gone.returncode == 1 and "No such" in gone.stderr
    history = api.engine.cli("history", "--all", "cli-web").stdout
    created = next(x for x in history.splitlines() if "container.created" in x)
    assert "docker-api uid=" in created and "Docker-Client/20.10" in created, history
    assert cid
