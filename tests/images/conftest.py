"""Images tests: real registries (plain and with basic auth) per session, the busybox
root filesystem as a layer, and an engine whose overlays are unmounted afterwards."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator

import pytest

from engine.images import overlay
from tests.e2e.conftest import Engine, default_network, engine, up  # noqa: F401 (fixtures)
from tests.helpers import mounts_under
from tests.images.registry import Registry, start_registry, tar_directory


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = start_registry(str(tmp_path_factory.mktemp("registry")))
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = start_registry(str(tmp_path_factory.mktemp("registry-auth")), user="berth",
                         password=f"pw-{uuid.uuid4().hex}")
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def base_layer(busybox_rootfs: str) -> bytes:
    return tar_directory(busybox_rootfs)


@pytest.fixture
def repo() -> str:
    """A repository name no other test uses."""
    return f"test/{uuid.uuid4().hex[:12]}"


def unmount_overlays(root: str) -> None:
    base = os.path.join(root, "overlay")
    for cid in os.listdir(base) if os.path.isdir(base) else ():
        overlay.unmount(os.path.join(base, cid, "merged"))


@pytest.fixture
def iup(up: Engine) -> Iterator[Engine]:  # noqa: F811
    """The engine with a worker. Afterwards the test's containers are removed through
    the engine (``rm -f``), which must leave no overlay mounted under its root: the
    fixture checks the engine's cleanup (and only unmounts what it left, so the host
    stays clean, before failing the test)."""
    yield up
    listed = up.cli("ps", "-a", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    for row in json.loads(listed.stdout):
        up.cli("rm", "-f", row["id"])
    left = mounts_under(os.path.join(up.root, "overlay"))
    if left:
        unmount_overlays(up.root)
    assert left == [], "removing the containers left their overlays mounted"
