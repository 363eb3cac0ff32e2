"""Images end to end: a real registry, skopeo, overlay root filesystems, runc."""

from __future__ import annotations

import glob
import json
import os
import subprocess
from collections.abc import Mapping
from typing import Any

from engine import events as ev
from engine.images import overlay
from engine.images.store import ImageStore
from tests.e2e.conftest import Engine
from tests.helpers import wait_until
from tests.images.conftest import unmount_overlays
from tests.images.registry import Registry, build_layout, layer, push

CAT_MOTD = {"Cmd": ["/bin/cat", "/etc/motd"]}


def _publish(tmp: str, registry: Registry, repo: str, layers: list[bytes],
             config: Mapping[str, Any] | None = None, tag: str = "v1") -> str:
    ref = f"{registry.host}/{repo}:{tag}"
    push(build_layout(os.path.join(tmp, "src"), "img", layers, config), "img", ref)
    return ref


def _run(up: Engine, *args: str) -> subprocess.CompletedProcess[str]:
    return up.cli("run", "--rm", "--tls-verify=false", *args, timeout=120)


def _pull(up: Engine, ref: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return up.cli("pull", "--tls-verify=false", *extra, ref, timeout=120)


def test_pull_and_run_prints_the_images_output(iup: Engine, registry: Registry, repo: str,
                                               base_layer: bytes) -> None:
    ref = _publish(iup.root, registry, repo,
                   [base_layer, layer({"etc/motd": b"hello from an image\n"})], CAT_MOTD)
    pulled = _pull(iup, ref)
    assert pulled.returncode == 0, pulled.stderr
    done = _run(iup, "--pull", "never", ref)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hello from an image\n"
    with iup.store() as store:
        events = store.read_all()
    pulls = [r for r in events if r.type == ev.IMAGE_PULLED]
    assert len(pulls) == 1 and isinstance(pulls[0].event, ev.ImagePulled)
    image_id = pulls[0].event.image_id
    assert pulls[0].stream == f"image:{image_id}"
    assert pulls[0].event.reference == ref and pulls[0].event.size > 0
    created = [r.event for r in events if isinstance(r.event, ev.ContainerCreated)]
    assert created[0].spec.image == ref and created[0].spec.image_id == image_id
    assert created[0].spec.image_digest == pulls[0].event.digest
    # the container's overlay went with it
    assert ImageStore(iup.root).containers() == []


def test_whiteouts_and_opaque_directories_hide_lower_files(
        iup: Engine, registry: Registry, repo: str, base_layer: bytes) -> None:
    lower = layer({"data/": None, "data/a": b"a", "data/b": b"b", "etc/motd": b"old\n"})
    upper = layer({"data/c": b"c", "etc/motd": b"new\n"}, whiteouts=["bin/vi"],
                  opaque=["data"])
    ref = _publish(iup.root, registry, repo, [base_layer, lower, upper])
    done = _run(iup, ref, "sh", "-c",
                "ls /data; cat /etc/motd; test -e /bin/vi && echo vi || echo no-vi")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["c", "new", "no-vi"]


def test_the_image_config_is_honoured(iup: Engine, registry: Registry, repo: str,
                                      base_layer: bytes) -> None:
    config = {"Entrypoint": ["/bin/sh", "-c"], "Cmd": ['echo "$A $(pwd) $(id -u)"'],
              "Env": ["A=from-image", "PATH=/bin"], "WorkingDir": "/etc", "User": "nobody",
              "StopSignal": "SIGINT", "ExposedPorts": {"80/tcp": {}},
              "Labels": {"org.example": "yes"}}
    ref = _publish(iup.root, registry, repo, [base_layer], config)
    done = _run(iup, ref)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "from-image /etc 65534\n"
    # CMD on the command line replaces Cmd; the user's env overrides the image's
    done = _run(iup, "-e", "A=from-user", "-w", "/tmp", "-u", "0", ref, "echo $A $(pwd)")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "from-user /tmp\n"
    with iup.store() as store:
        spec = [r.event.spec for r in store.read_all()
                if isinstance(r.event, ev.ContainerCreated)][0]
    assert spec.stop_signal == 2 and spec.exposed_ports == ("80/tcp",)
    assert spec.labels == (("org.example", "yes"),)


def test_rmi_is_refused_while_a_container_uses_the_image(
        iup: Engine, registry: Registry, repo: str, base_layer: bytes) -> None:
    ref = _publish(iup.root, registry, repo, [base_layer], CAT_MOTD)
    created = iup.cli("create", "--tls-verify=false", "--name", f"user-{repo[-8:]}", ref,
                      "sleep", "60", timeout=120)
    assert created.returncode == 0, created.stderr
    refused = iup.cli("rmi", ref)
    assert refused.returncode != 0 and "used by container" in refused.stderr
    assert ref in iup.cli("images", "--format", "json").stdout
    started = iup.cli("start", created.stdout.strip())
    assert started.returncode == 0, started.stderr
    running = iup.cli("rmi", "-f", ref)  # -f: only when no user of it runs
    assert running.returncode != 0 and "running container" in running.stderr
    assert iup.cli("rm", "-f", created.stdout.strip()).returncode == 0
    removed = iup.cli("rmi", ref)
    assert removed.returncode == 0, removed.stderr
    assert ref not in iup.cli("images", "--format", "json").stdout
    store = ImageStore(iup.root)
    assert store.layout.all_blobs() == [] and os.listdir(store.layers_dir) == []
    with iup.store() as events:
        gone = [r for r in events.read_all() if r.type == ev.IMAGE_REMOVED]
    assert len(gone) == 1 and gone[0].event.reference == ref  # type: ignore[attr-defined]


def test_a_blob_with_the_wrong_content_is_refused_and_nothing_is_kept(
        iup: Engine, registry: Registry, repo: str, base_layer: bytes) -> None:
    bad = layer({"etc/motd": b"the real content\n"})
    ref = _publish(iup.root, registry, repo, [base_layer, bad], CAT_MOTD)
    # the registry's own storage now serves other bytes under the layer's digest
    import hashlib
    digest = hashlib.sha256(bad).hexdigest()
    (data,) = glob.glob(f"{registry.storage}/docker/registry/v2/blobs/sha256/{digest[:2]}/"
                        f"{digest}/data")
    with open(data, "wb") as f:
        f.write(layer({"etc/motd": b"a forgery of the same size\n"})[:len(bad)].ljust(
            len(bad), b"\0"))
    refused = _pull(iup, ref)
    assert refused.returncode != 0
    assert "digest" in refused.stderr.lower(), refused.stderr
    store = ImageStore(iup.root)
    assert store.layout.entries() == [] and store.layout.all_blobs() == []
    assert os.listdir(store.layers_dir) == [] and os.listdir(store.staging_dir) == []


def test_worker_start_removes_leftover_overlays_and_remounts_live_ones(
        engine: Engine, registry: Registry, repo: str, base_layer: bytes) -> None:
    engine.start_worker()
    try:
        ref = _publish(engine.root, registry, repo, [base_layer], CAT_MOTD)
        assert _pull(engine, ref).returncode == 0
        live = engine.cli("create", "--pull", "never", ref, "echo", "still here").stdout.strip()
        store = ImageStore(engine.root)
        live_root = os.path.join(store.container_dir(live), "merged")
        leftover = "f" * 64  # a container the log never recorded
        rootfs = store.mount(leftover, store.find(ref))
        assert overlay.is_mounted(rootfs.merged) and overlay.is_mounted(live_root)
        assert engine.worker is not None
        engine.worker.close()
        overlay.unmount(live_root)  # as a reboot would
        engine.start_worker()
        assert not overlay.is_mounted(rootfs.merged)
        assert not os.path.exists(os.path.dirname(rootfs.merged))
        assert overlay.is_mounted(live_root)
        started = engine.cli("start", "-a", live)
        assert started.returncode == 0 and started.stdout == "still here\n", started.stderr
    finally:
        unmount_overlays(engine.root)


def test_basic_auth_registry_needs_the_credentials_and_they_are_never_recorded(
        iup: Engine, auth_registry: Registry, repo: str, base_layer: bytes) -> None:
    ref = f"{auth_registry.host}/{repo}:v1"
    layout = build_layout(os.path.join(iup.root, "src"), "img", [base_layer], CAT_MOTD)
    push(layout, "img", ref, creds=auth_registry.creds)
    anonymous = _pull(iup, ref)
    assert anonymous.returncode != 0 and "unauthorized" in anonymous.stderr.lower()
    pulled = _pull(iup, ref, "--creds", auth_registry.creds)
    assert pulled.returncode == 0, pulled.stderr
    with open(os.path.join(iup.root, "berth.db"), "rb") as f:
        assert auth_registry.password.encode() not in f.read()
    with iup.store() as store:
        for r in store.read_all():
            assert auth_registry.password not in json.dumps(r.event.to_data(), default=str)


def test_a_multi_platform_index_resolves_to_linux_amd64(
        iup: Engine, registry: Registry, repo: str, base_layer: bytes) -> None:
    from engine.images import build
    from engine.images.layout import Layout

    layout = Layout(os.path.join(iup.root, "src")).init()
    manifests = [build.add_image(layout, "", [base_layer, layer({"arch": arch.encode()})],
                                 {"Cmd": ["/bin/cat", "/arch"]}, architecture=arch)
                 for arch in ("arm64", "amd64")]
    build.add_index(layout, "multi", manifests)
    ref = f"{registry.host}/{repo}:multi"
    push(layout, "multi", ref, all_images=True)
    done = _run(iup, "--pull", "missing", ref)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "amd64"


def test_import_save_and_load_round_trip(iup: Engine, busybox_rootfs: str) -> None:
    tarball = os.path.join(iup.root, "rootfs.tar")
    subprocess.run(["tar", "-C", busybox_rootfs, "-cf", tarball, "."], check=True)
    name = "localhost/imported:one"
    imported = iup.cli("image", "import", tarball, name, timeout=120)
    assert imported.returncode == 0, imported.stderr
    assert _run(iup, "--pull", "never", name, "echo", "imported").stdout == "imported\n"
    archive = os.path.join(iup.root, "saved.tar")
    saved = iup.cli("image", "save", "-o", archive, name, timeout=120)
    assert saved.returncode == 0, saved.stderr
    assert iup.cli("rmi", name).returncode == 0
    assert _run(iup, "--pull", "never", name, "true").returncode != 0
    loaded = iup.cli("image", "load", "-i", archive, timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    assert _run(iup, "--pull", "never", name, "echo", "loaded").stdout == "loaded\n"
    with iup.store() as store:
        kinds = [r.type for r in store.read_all() if r.type.startswith("image.")]
    assert kinds == [ev.IMAGE_LOADED, ev.IMAGE_REMOVED, ev.IMAGE_LOADED]


def test_push_copies_a_stored_image_to_a_registry(iup: Engine, registry: Registry, repo: str,
                                                  base_layer: bytes) -> None:
    ref = _publish(iup.root, registry, repo, [base_layer], CAT_MOTD)
    assert _pull(iup, ref).returncode == 0
    dest = f"{registry.host}/{repo}-copy:pushed"
    pushed = iup.cli("push", "--tls-verify=false", ref, dest, timeout=120)
    assert pushed.returncode == 0, pushed.stderr
    inspected = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--config",
                                f"docker://{dest}"], capture_output=True, text=True, check=True)
    assert json.loads(inspected.stdout)["config"]["Cmd"] == CAT_MOTD["Cmd"]


def test_a_missing_image_with_pull_never_is_one_sentence_and_nothing_is_written(
        iup: Engine) -> None:
    refused = _run(iup, "--pull", "never", "localhost/nowhere:1", "true")
    assert refused.returncode != 0
    assert "is not in this node's store" in refused.stderr
    assert refused.stderr.count("\n") == 1
    with iup.store() as store:
        assert store.read_all() == []
    assert ImageStore(iup.root).containers() == []


def test_prune_removes_what_a_moved_tag_left_behind(iup: Engine, registry: Registry,
                                                    repo: str, base_layer: bytes) -> None:
    first = _publish(os.path.join(iup.root, "a"), registry, repo,
                     [base_layer, layer({"v": b"1"})])
    assert _pull(iup, first).returncode == 0
    store = ImageStore(iup.root)
    old = store.find(first)
    second = _publish(os.path.join(iup.root, "b"), registry, repo,
                      [base_layer, layer({"v": b"2"})])
    assert second == first
    assert _pull(iup, second).returncode == 0
    new = store.find(first)
    assert new.id != old.id and store.layout.has_blob(old.config_digest)
    pruned = iup.cli("image", "prune")
    assert pruned.returncode == 0, pruned.stderr
    assert "removed 3 blobs and 1 layers" in pruned.stderr  # manifest, config, top layer
    assert not store.layout.has_blob(old.config_digest)
    done = _run(iup, "--pull", "never", first, "cat", "/v")
    assert done.stdout == "2"


def _kinds(engine: Engine, cid: str) -> list[str]:
    with engine.store() as store:
        return [r.type for r in store.read_stream(cid)]


def test_a_restart_policy_mounts_the_images_overlay_again(
        iup: Engine, registry: Registry, repo: str, base_layer: bytes) -> None:
    """The restarter starts a container again through the container service, as
    ``berth start`` does, so an image's overlay unmounted meanwhile (an operator's
    umount) is mounted again first; it drove conmon and runc itself, which then got
    the empty mount point, and the restart failed."""
    ref = _publish(iup.root, registry, repo, [base_layer])
    run = iup.cli("run", "-d", "--tls-verify=false", "--restart", "on-failure:1", ref, "sh",
                  "-c", "if [ -e /ran ]; then exec sleep 600; fi; touch /ran; sleep 2; exit 3",
                  timeout=120)
    assert run.returncode == 0, run.stderr
    cid = run.stdout.strip()
    merged = os.path.join(ImageStore(iup.root).container_dir(cid), "merged")
    try:
        wait_until(lambda: ev.CONTAINER_STARTED in _kinds(iup, cid), 30, what="the first run")
        overlay.unmount(merged)  # the container keeps its own mount; the host's is gone
        assert not overlay.is_mounted(merged)
        wait_until(lambda: _kinds(iup, cid).count(ev.CONTAINER_STARTED) == 2
                   or ev.COMMAND_FAILED in _kinds(iup, cid), 30, what="the restart")
        kinds = _kinds(iup, cid)
        assert ev.COMMAND_FAILED not in kinds, kinds
        assert kinds.count(ev.CONTAINER_RESTARTING) == 1 and overlay.is_mounted(merged)
        # the same upper layer: the second run found the file the first one wrote
        assert iup.cli("exec", cid, "test", "-e", "/ran").returncode == 0
    finally:
        iup.cli("rm", "-f", cid)
