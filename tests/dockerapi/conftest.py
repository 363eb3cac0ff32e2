"""The Docker API server against a real engine: a broker and a worker per test
(tests/e2e), ``berth api`` in its own process on a private socket, a real registry
holding a busybox image, and docker-py as the client."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import docker
import pytest

from tests.e2e.conftest import Engine, default_network, engine, up  # noqa: F401 (fixtures)
from tests.helpers import wait_until
from tests.images.conftest import base_layer, registry, unmount_overlays  # noqa: F401
from tests.images.registry import Registry, build_layout, layer, push


@dataclass
class Api:
    engine: Engine
    socket: str
    proc: subprocess.Popen[bytes]

    def client(self, **kw: object) -> docker.DockerClient:
        return docker.DockerClient(base_url=f"unix://{self.socket}", **kw)  # type: ignore[arg-type]

    def raw(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(30)
        s.connect(self.socket)
        return s


def _answers(path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(path)
            s.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
            return s.recv(100).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def start_api(eng: Engine, path: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "berth", "api", "--bind", f"unix://{path}"],
                            env=eng.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_until(lambda: _answers(path) or proc.poll() is not None, 30,
               what="the Docker API answering")
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
    return proc


@pytest.fixture
def default_network() -> str | None:  # noqa: F811
    """No CNI for these tests unless a test asks for a network itself."""
    return "none"


@pytest.fixture
def api(up: Engine) -> Iterator[Api]:  # noqa: F811
    path = os.path.join(up.run, "docker.sock")
    proc = start_api(up, path)
    try:
        yield Api(up, path, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        unmount_overlays(up.root)


@pytest.fixture
def busybox(registry: Registry, base_layer: bytes, tmp_path_factory: pytest.TempPathFactory,  # noqa: F811
            ) -> str:
    """A busybox image in the registry (pulled through the API by the tests)."""
    ref = f"{registry.host}/test/bb{uuid.uuid4().hex[:8]}:v1"
    tmp = str(tmp_path_factory.mktemp("busybox-image"))
    push(build_layout(os.path.join(tmp, "src"), "img", [base_layer, layer({})],
                      {"Cmd": ["sh"]}), "img", ref)
    return ref
