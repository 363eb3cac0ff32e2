"""Start latency from an image: ``berth run --rm IMAGE /bin/true`` from a 10-layer,
~100 MB image against ``berth run --rm ROOTFS /bin/true`` from a directory.

A container from an image gets an overlay mount of the image's layers (unpacked once,
when the image entered the store) and a private upper directory: nothing is copied,
so the two should cost about the same (goal: ratio <= 1.15). Both run against one
``berth up``, interleaved round by round (the order flipped every round), through the
CLI (a fresh process each, as a user runs it) and through the client library (create,
start, wait, remove: less noise). The table gives medians and the ratio, measured in
this one run.

    .venv/bin/python -m bench.image_bench [--rounds 30] [--layers 10] [--mb 100]
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
from engine.rootfs import build_busybox_rootfs  # noqa: E402

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


def _timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--mb", type=int, default=100)
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
