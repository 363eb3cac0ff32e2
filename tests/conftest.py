"""Fixtures shared by every test folder: a real busybox rootfs built once per session."""

from __future__ import annotations

import os
import shutil

import pytest

from engine.rootfs import build_busybox_rootfs


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> str:
    if shutil.which("runc") is None or shutil.which("conmon") is None:
        pytest.fail("runc and conmon are required: run scripts/install.sh")
    return build_busybox_rootfs(str(tmp_path_factory.mktemp("rootfs") / "busybox"))


@pytest.fixture
def short_tmp(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A short per-test directory: unix socket paths are limited to 108 bytes."""
    import tempfile

    path = tempfile.mkdtemp(prefix="berth-t-", dir="/tmp")
    yield path  # type: ignore[misc]
    shutil.rmtree(path, ignore_errors=True)


def pytest_report_header(config: pytest.Config) -> str:
    return f"berth tests as uid {os.getuid()}"
