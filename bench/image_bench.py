"""Start latency from an image: ``berth run --rm IMAGE /bin/true`` from a 10-layer,
~100 MB image against ``berth run --rm ROOTFS /bin/true`` from a directory.

A container from an image gets an overlay mount of the image's layers (unpacked once,
when the image entered the store) and a private upper directory: nothing is copied,
so the two should cost about the same (goal: ratio <= 1.15). Both run against one
``berth up``, interleaved round by round (the order flipped every round), through the
CLI (a fresh process each, as a user runs it) and through the client library (create,
start, wait, remove: less noise). The table gives medians and the ratio, measured in
this one run.

Then pull: a ~100 MB, 5-layer image from a local registry (Debian's docker-registry
on loopback), ``berth pull`` against ``podman pull`` of the same reference (a private
podman storage), interleaved, each starting from an empty store every round.

    .venv/bin/python -m bench.image_bench [--rounds 30] [--layers 10] [--mb 100] \
        [--pull-rounds 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench.lifecycle_bench import Berth, client_lifecycle  # noqa: E402
from bus.client import Client  # noqa: E402
from engine.images import build  # noqa: E402
from engine.images.layout import Layout  # noqa: E402
from engine.images.rootfs import build_busybox_rootfs  # noqa: E402

IMAGE = "localhost/bench/layered:10"


def image_archive(base: str, rootfs: str, layers: int, megabytes: int) -> str:
    """An oci-archive of busybox plus ``layers - 1`` layers of incompressible data."""
    from tests.images.registry import tar_directory

    layout = Layout(os.path.join(base, "layout")).init()
    per_layer = megabytes * 1024 * 1024 // max(layers - 1, 1)
    blobs = [tar_directory(rootfs)]
    for n in range(1, layers):
        blobs.append(build.tar_of({f"data/{n}": None, f"data/{n}/blob": os.urandom(per_layer)},
                                  gzipped=True))
    build.add_image(layout, IMAGE, blobs)
    archive = os.path.join(base, "layered.tar")
    subprocess.run(["skopeo", "copy", "--quiet", f"oci:{layout.root}:{IMAGE}",
                    f"oci-archive:{archive}:{IMAGE}"], check=True)
    shutil.rmtree(layout.root)
    return archive


def pull_bench(base: str, rootfs: str, env: dict[str, str], rounds: int,
               megabytes: int) -> None:
    from tests.images.registry import push, start_registry, tar_directory

    registry = start_registry(os.path.join(base, "registry"))
    try:
        layout = Layout(os.path.join(base, "pull-layout")).init()
        per_layer = megabytes * 1024 * 1024 // 4
        blobs = [tar_directory(rootfs)] + [
            build.tar_of({f"p{n}/": None, f"p{n}/blob": os.urandom(per_layer)})
            for n in range(4)]
        build.add_image(layout, "pull", blobs)
        ref = f"{registry.host}/bench/pull:5"
        push(layout, "pull", ref)
        cli = [sys.executable, "-m", "berth"]
        podman = ["podman", "--root", os.path.join(base, "podman-root"), "--runroot",
                  os.path.join(base, "podman-run"), "--storage-driver", "overlay"]

        def berth_pull() -> None:
            subprocess.run([*cli, "pull", "--tls-verify=false", ref], env=env, check=True,
                           capture_output=True, cwd=REPO)

        def berth_clear() -> None:
            subprocess.run([*cli, "rmi", ref], env=env, check=True, capture_output=True,
                           cwd=REPO)

        def podman_pull() -> None:
            subprocess.run([*podman, "pull", "--quiet", "--tls-verify=false", ref],
                           check=True, capture_output=True)

        def podman_clear() -> None:
            subprocess.run([*podman, "rmi", "--all", "--force"], check=True,
                           capture_output=True)

        contenders = {"berth pull": (berth_pull, berth_clear)}
        try:
            podman_pull()
            podman_clear()
            contenders["podman pull"] = (podman_pull, podman_clear)
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"podman pull skipped: {exc}")
        times: dict[str, list[float]] = {}
        names = list(contenders)
        for n in range(rounds):
            for name in names if n % 2 == 0 else names[::-1]:
                pull, clear = contenders[name]
                times.setdefault(name, []).append(_timed(pull))
                clear()
        print(f"pull: 5 layers, {megabytes} MB of layer data, {rounds} rounds, interleaved")
        for name in names:
            print(f"  {name:<12} {statistics.median(times[name]):>7.2f} s")
        if len(names) == 2:
            ratio = statistics.median(times[names[0]]) / statistics.median(times[names[1]])
            print(f"  ratio berth/podman {ratio:.3f}")
        if "podman pull" in contenders:
            # Not ``podman system reset``: even with a private --root it deletes the
            # host's podman networks (/etc/containers/networks), other users' too.
            podman_clear()
            subprocess.run(["umount", os.path.join(base, "podman-root", "overlay")],
                           capture_output=True, check=False)
    finally:
        registry.stop()


def _timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--pull-rounds", type=int, default=5, help="0: no pull comparison")
    opts = parser.parse_args()
    base = tempfile.mkdtemp(prefix="berth-ib-", dir="/tmp")
    berth = None
    try:
        rootfs = build_busybox_rootfs(os.path.join(base, "busybox"))
        archive = image_archive(base, rootfs, opts.layers, opts.mb)
        berth = Berth(base)
        env = dict(berth.env, BERTH_BUS=berth.endpoint)
        cli = [sys.executable, "-m", "berth"]
        t0 = time.perf_counter()
        subprocess.run([*cli, "image", "load", "-i", archive], env=env, check=True,
                       capture_output=True, cwd=REPO)
        load_s = time.perf_counter() - t0
        argv = {"image": [*cli, "run", "--rm", "--pull", "never", IMAGE, "/bin/true"],
                "directory": [*cli, "run", "--rm", rootfs, "/bin/true"]}

        def run_cli(which: str) -> None:
            subprocess.run(argv[which], env=env, check=True, capture_output=True, cwd=REPO)

        client = Client(berth.endpoint, timeout=60)

        def run_client(which: str) -> None:
            if which == "image":
                reply = client.create(rootfs="", image=IMAGE, args=["/bin/true"])
                cid, node = str(reply.result["id"]), str(reply.result["node"])
                client.start(cid, node=node)
                client.wait(cid, node=node)
                client.remove(cid, node=node)
            else:
                client_lifecycle(client, rootfs, ["/bin/true"])

        for which in ("image", "directory"):  # warm-up, untimed
            run_cli(which)
            run_client(which)
        times: dict[tuple[str, str], list[float]] = {}
        for n in range(opts.rounds):
            order = ("image", "directory") if n % 2 == 0 else ("directory", "image")
            for path, fn in (("cli", run_cli), ("client", run_client)):
                for which in order:
                    times.setdefault((path, which), []).append(
                        _timed(lambda fn=fn, which=which: fn(which)))
        client.close()
        print(f"image: {opts.layers} layers, {opts.mb} MB of layer data; load took "
              f"{load_s:.1f}s; {opts.rounds} rounds, interleaved")
        print(f"{'path':<8} {'image ms':>10} {'directory ms':>13} {'ratio':>7}")
        for path in ("cli", "client"):
            img = statistics.median(times[(path, "image")]) * 1000
            dirs = statistics.median(times[(path, "directory")]) * 1000
            print(f"{path:<8} {img:>10.1f} {dirs:>13.1f} {img / dirs:>7.3f}")
        if opts.pull_rounds > 0:
            pull_bench(base, rootfs, env, opts.pull_rounds, opts.mb)
        return 0
    finally:
        if berth is not None:
            berth.close()
        overlays = os.path.join(base, "root", "overlay")
        for cid in os.listdir(overlays) if os.path.isdir(overlays) else ():
            subprocess.run(["umount", "-l", os.path.join(overlays, cid, "merged")],
                           capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
