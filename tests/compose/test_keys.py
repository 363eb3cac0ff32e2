"""Compose keys on a real stack (broker, worker, runc, an imported image): secrets and
configs are read-only files in the container, ``pull_policy`` decides whether the
image is pulled, ``down --rmi all`` removes the services' images."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import uuid

from tests.e2e.conftest import Engine
from tests.images.conftest import base_layer, iup  # noqa: F401 (fixtures)

FILE = """
services:
  app:
    image: {image}
    command: [sleep, '300']
    pull_policy: {policy}
    secrets: [db_password]
    configs: [{{source: app, target: /etc/app.conf}}]
secrets:
  db_password:
    file: ./secrets/pw.txt
configs:
  app:
    file: app.conf
"""


def _compose(engine: Engine, d: str, project: str, *args: str
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "berth", "compose", "-p", project, *args],
                          cwd=d, env=engine.env, capture_output=True, text=True, timeout=180,
                          check=False)


def _write(d: str, image: str, policy: str) -> None:
    with open(os.path.join(d, "compose.yaml"), "w") as f:
        f.write(FILE.format(image=image, policy=policy))


def test_secrets_configs_pull_policy_and_rmi_on_a_real_stack(
        iup: Engine, base_layer: bytes) -> None:  # noqa: F811
    project = "k" + uuid.uuid4().hex[:8]
    d = os.path.join(iup.root, project)
    os.makedirs(os.path.join(d, "secrets"))
    with open(os.path.join(d, "secrets", "pw.txt"), "w") as f:
        f.write("s3cret-value\n")
    with open(os.path.join(d, "app.conf"), "w") as f:
        f.write("mode=prod\n")
    tarball = os.path.join(d, "rootfs.tar")
    with open(tarball, "wb") as f:
        f.write(gzip.decompress(base_layer))
    image = f"localhost/{project}/box:1"
    imported = iup.cli("image", "import", tarball, image, timeout=120)
    assert imported.returncode == 0, imported.stderr
    app = f"{project}-app-1"
    # always: pulled before each up, and this image is in no registry: up fails, says so
    _write(d, image, "always")
    always = _compose(iup, d, project, "up", "-d")
    assert always.returncode != 0 and image in always.stderr, always.stderr
    assert "Traceback" not in always.stderr
    # never: not pulled, the image here is used as it is
    _write(d, image, "never")
    done = _compose(iup, d, project, "up", "-d")
    assert done.returncode == 0, done.stderr
    read = iup.cli("exec", app, "sh", "-c", "cat /run/secrets/db_password /etc/app.conf; "
                   "echo x > /run/secrets/db_password || echo read-only")
    assert read.stdout.splitlines() == ["s3cret-value", "mode=prod", "read-only"], read
    config = _compose(iup, d, project, "config")
    assert config.returncode == 0 and "s3cret-value" not in config.stdout
    down = _compose(iup, d, project, "down", "--rmi", "all")
    assert down.returncode == 0, down.stderr
    assert f"removed image {image}" in down.stderr
    listed = iup.cli("images")
    assert image.split(":")[0] not in listed.stdout, listed.stdout
    # never, with the image gone: refused, nothing pulled, nothing created
    gone = _compose(iup, d, project, "up", "-d")
    assert gone.returncode != 0 and "Traceback" not in gone.stderr, gone.stderr
    assert app not in iup.cli("ps", "-a").stdout
    _compose(iup, d, project, "down")
