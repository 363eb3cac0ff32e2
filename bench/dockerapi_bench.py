"""The Docker API's cost: one container lifecycle through docker-py and berth's
Docker API socket against the same lifecycle through berth's own client library,
one ``berth up`` (which serves both), interleaved round by round.

* berth client library: ``create`` (an image), ``start``, ``wait``, ``remove``;
* docker-py: ``containers.run(IMAGE, ["/bin/true"], detach=True)``, ``.wait()``,
  ``.remove()``: create, start, an inspect (docker-py builds its Container object
  from one), wait, remove, each an HTTP request on the socket, each becoming the
  same bus commands (the inspect a query).

The image is the busybox root filesystem imported once (``image.import``). The goal
(issue 23): docker-py through berth at most 1.3 times the client library.

    .venv/bin/python -m bench.dockerapi_bench [--rounds 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import docker  # noqa: E402

from bench.lifecycle_bench import Berth  # noqa: E402
from bus.client import Client  # noqa: E402
from engine import command_types as t  # noqa: E402
from engine.images.rootfs import build_busybox_rootfs  # noqa: E402

IMAGE = "localhost/bench/busybox:latest"


def _import(client: Client, base: str) -> None:
    rootfs = build_busybox_rootfs(f"{base}/rootfs")
    tarball = f"{base}/busybox.tar"
    with tarfile.open(tarball, "w") as tar:
        for name in sorted(os.listdir(rootfs)):
            tar.add(os.path.join(rootfs, name), arcname=name)
    command = client.command(t.IMAGE_IMPORT, None, None,
                             {"path": tarball, "reference": IMAGE})
    client.request_patiently(command, time.monotonic() + 300)


def _client_lifecycle(c: Client) -> None:
    reply = c.create(rootfs="", image=IMAGE, args=["/bin/true"])
    cid, node = str(reply.result["id"]), str(reply.result["node"])
    c.start(cid, node=node)
    c.wait(cid, node=node)
    c.remove(cid, node=node)


def _docker_py_lifecycle(d: docker.DockerClient) -> None:
    ctr = d.containers.run(IMAGE, ["/bin/true"], detach=True)
    ctr.wait()
    ctr.remove()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="berth-dapi-bench-", dir="/tmp")
    berth = Berth(base)
    try:
        client = berth.client()
        _import(client, base)
        sock = f"{base}/run/docker.sock"
        deadline = time.monotonic() + 30
        while not os.path.exists(sock) and time.monotonic() < deadline:
            time.sleep(0.05)
        dpy = docker.DockerClient(base_url=f"unix://{sock}", version="1.41")
        contenders: dict[str, Callable[[], None]] = {
            "berth client library": lambda: _client_lifecycle(client),
            "docker-py via docker.sock": lambda: _docker_py_lifecycle(dpy),
        }
        for fn in contenders.values():  # warm-up, untimed
            fn()
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for i in range(args.rounds):
            order = list(contenders) if i % 2 == 0 else list(reversed(contenders))
            for name in order:
                started = time.perf_counter()
                contenders[name]()
                times[name].append(time.perf_counter() - started)
        floor = statistics.median(times["berth client library"])
        print(f"{'contender':<28} {'median ms':>10} {'p90 ms':>8} {'ratio':>6}")
        for name, samples in times.items():
            med = statistics.median(samples)
            p90 = sorted(samples)[int(0.9 * (len(samples) - 1))]
            print(f"{name:<28} {med * 1000:>10.1f} {p90 * 1000:>8.1f} {med / floor:>6.2f}")
        client.close()
        dpy.close()
    finally:
        berth.close()
        subprocess.run(["rm", "-rf", base], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
