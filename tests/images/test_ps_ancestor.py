"""``ps`` of containers made from images: ``--filter ancestor=`` matches the image by its
reference (with or without its tag), its id or an id prefix, as podman's; ``ps``'s
``{{.Image}}`` and ``inspect``'s ``{{.ImageName}}`` print the image's reference and
``inspect``'s ``{{.Image}}`` its id, as podman's, never the overlay directory the worker
mounted."""

from __future__ import annotations

import json
import os
import subprocess

from tests.e2e.conftest import Engine
from tests.images.registry import Registry, build_layout, push


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def test_ancestor_filter_and_image_column_for_image_containers(
        iup: Engine, registry: Registry, repo: str, base_layer: bytes) -> None:
    ref = f"{registry.host}/{repo}:v1"
    push(build_layout(os.path.join(iup.root, "src"), "img", [base_layer], None), "img", ref)
    _ok(iup.cli("pull", "--tls-verify=false", ref, timeout=120))
    _ok(iup.cli("create", "--name", "fromimg", ref, "true"))
    _ok(iup.cli("create", "--name", "fromdir", iup.rootfs, "true"))
    image_id = json.loads(_ok(iup.cli("inspect", "fromimg")))[0]["spec"]["image_id"]

    def names(value: str) -> list[str]:
        return sorted(_ok(iup.cli("ps", "-a", "--format", "{{.Names}}", "--filter",
                                  f"ancestor={value}")).split())

    bare = image_id.removeprefix("sha256:")
    for value in (ref, f"{registry.host}/{repo}", image_id, bare[:12]):
        assert names(value) == ["fromimg"], value
    assert names(f"{registry.host}/{repo}:v2") == []
    assert names(iup.rootfs) == ["fromdir"]
    assert names("nosuchimage") == []
    shown = _ok(iup.cli("ps", "-a", "--format", "{{.Names}} {{.Image}}")).splitlines()
    assert sorted(shown) == sorted([f"fromimg {ref}", f"fromdir {iup.rootfs}"])
    assert _ok(iup.cli("inspect", "--format", "{{.ImageName}}", "fromimg")) == ref + "\n"
    assert _ok(iup.cli("inspect", "--format", "{{.Image}}", "fromimg")) == bare + "\n"
