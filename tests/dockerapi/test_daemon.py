"""``berth up`` serves the Docker API beside its engine: $BERTH_RUN/docker.sock,
0600, moved or turned off by BERTH_DOCKER_SOCKET, gone with ``berth down``."""

from __future__ import annotations

import os
import stat

import docker
import pytest

from tests.e2e.test_daemon import Place, place  # noqa: F401 (fixture)
from tests.helpers import wait_until


def _up(place: Place, **env: str) -> None:  # noqa: F811
    base = place.env
    place_env = {**base, **env}
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "berth", "up", "-d"], env=place_env,
                          capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr


def _answers(path: str) -> bool:
    try:
        return bool(docker.DockerClient(base_url=f"unix://{path}", version="1.41",
                                        timeout=5).ping())
    except Exception:
        return False


def test_up_serves_a_private_docker_socket_and_down_removes_it(place: Place) -> None:  # noqa: F811
    _up(place)
    path = os.path.join(place.run, "docker.sock")
    wait_until(lambda: _answers(path), 30, what="the Docker API of berth up")
    st = os.lstat(path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    client = docker.DockerClient(base_url=f"unix://{path}", version="auto")
    assert client.version()["ApiVersion"] == "1.41"
    assert client.containers.list(all=True) == []
    assert place.berth("down", timeout=60).returncode == 0
    wait_until(lambda: not os.path.exists(path), 10, what="the socket removed")


@pytest.mark.parametrize("setting", ["0", "moved"])
def test_the_socket_is_moved_or_turned_off(place: Place, short_tmp: str,  # noqa: F811
                                           setting: str) -> None:
    moved = os.path.join(short_tmp, "elsewhere.sock")
    _up(place, BERTH_DOCKER_SOCKET="0" if setting == "0" else f"unix://{moved}")
    default = os.path.join(place.run, "docker.sock")
    assert place.berth("ps").returncode == 0  # the engine is up
    if setting == "0":
        assert not os.path.exists(default) and not os.path.exists(moved)
    else:
        wait_until(lambda: _answers(moved), 30, what="the moved Docker API socket")
        assert not os.path.exists(default)


@pytest.mark.parametrize("setting", ["relative.sock", "tcp://0.0.0.0:2375", "/" + "x" * 120])
def test_a_bad_socket_setting_is_one_sentence_and_nothing_runs(place: Place,  # noqa: F811
                                                               setting: str) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "berth", "up"],
                          env={**place.env, "BERTH_DOCKER_SOCKET": setting},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 125
    assert done.stderr.startswith("berth: invalid Docker API socket") and \
        done.stderr.count("\n") == 1, done.stderr
    assert place.engine_pid() is None
    assert not os.path.exists(os.path.join(place.run, "bus.sock"))
