"""A worker killed -9 in the middle of a pull: nothing half-made stays in the image
store, and the pull the broker hands to the next worker lands once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from engine import events as ev
from engine.images import build
from engine.images.store import ImageStore
from tests.e2e.conftest import Engine
from tests.helpers import wait_until
from tests.images.registry import Registry, build_layout, layer, push


def test_a_pull_cut_short_leaves_nothing_and_the_handed_on_pull_lands_once(
        engine: Engine, registry: Registry, repo: str, base_layer: bytes) -> None:
    ref = f"{registry.host}/{repo}:v1"
    push(build_layout(engine.root + "-src", "img",
                      [base_layer, layer({"etc/motd": b"two layers\n"})]), "img", ref)
    worker = engine.start_armed_worker("image.adopt.unpacked")
    pull = subprocess.Popen([sys.executable, "-m", "berth", "pull", "--tls-verify=false", ref],
                            env=engine.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: worker.poll() is not None, 120, what="the worker's crash point")
        assert worker.returncode == -signal.SIGKILL
        store = ImageStore(engine.root)
        half = sorted(os.listdir(store.layers_dir))
        assert len(half) == 2, "the crash should come with both layers unpacked"
        assert os.listdir(store.staging_dir), "the copy's staging layout should be left"
        assert store.present(ref) is None

        fresh = engine.start_worker_process()  # reconciles, then takes the held pull
        out, err = pull.communicate(timeout=120)
        assert pull.returncode == 0, err
    finally:
        if pull.poll() is None:
            pull.kill()
            pull.wait()
    image = store.find(ref)
    assert os.listdir(store.staging_dir) == []
    assert sorted(os.listdir(store.layers_dir)) == sorted(
        os.path.basename(store.layer_path(d)) for d, _s, _t in image.layers)
    assert [e for e in store.layout.entries()
            if (e.get("annotations") or {}).get(build.REF_NAME) == ref]
    with engine.store() as log:
        pulls = [r for r in log.read_all() if r.type == ev.IMAGE_PULLED]
    assert len(pulls) == 1
    fresh.terminate()
    _, worker_log = fresh.communicate(timeout=30)
    # What the dead pull unpacked was removed at start (not merely reused by the
    # second pull): the reconciliation says so.
    assert b"removed 0 blob(s) and 2 layer(s) no image or container needs" in worker_log
