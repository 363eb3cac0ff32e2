"""A 50-container stack converged from nothing and torn down: ``berth compose`` against
``podman-compose`` and ``podman run -d`` one container at a time, interleaved in one run.

Every round runs each contender once (the order flipped every round, after one untimed
warm-up round each), so machine noise hits them alike; the table gives the medians and
the worst round of ``up`` (nothing to 50 running containers) and ``down`` (50 running
containers to nothing), and berth's time as a fraction of each anchor's.

What makes it fair:

* one image for all: a busybox root filesystem made into an OCI archive once, loaded
  into berth's store (``berth image load``) and podman's (``podman load``); both run
  a container from an overlay of its layer, nothing copied;
* one stack: ``--containers`` services ``s01``... of one replica each, ``command:
  sleep 600``, ``stop_signal: SIGKILL`` (a ``sleep`` as pid 1 ignores SIGTERM: down
  would otherwise wait out podman's 10 s grace per container; berth's down kills
  anyway). Services rather than ``deploy.replicas``: podman-compose 1.6 honours
  replicas only with ``deploy.mode: replicated`` and its ``down`` forgets replicas
  given by ``--scale``;
* one network mode: by default every container joins a bridge network of its project
  (the file's top-level ``networks:`` with an ipam subnet, which podman-compose and
  berth compose both create in ``up`` and remove in ``down``; ``podman run`` gets
  ``podman network create``/``rm`` inside its timed steps). With ``--network none``
  no container has a network (``network_mode: none`` in both files: without it each
  would make its project's default network);
* one runtime: runc for podman too (a private CONTAINERS_CONF; it also sets the
  ulimits bench.lifecycle_bench gives podman, which crun cannot set here), conmon for
  both; each step is a fresh CLI process, as a user types it;
* each contender's work checked after every step, untimed: 50 running after ``up``,
  none left after ``down``.

berth's project names change every round: its compose derives command ids from the
stack, and a stack brought up again under the same name after a ``down`` would be
answered from the first ``up``'s recorded outcome.

podman-compose is installed from PyPI into a private virtualenv under /var/tmp the
first time (never into the project's environment); ``--podman-compose PATH`` uses
another.

    .venv/bin/python -m bench.compose_bench [--rounds 3] [--containers 50] \\
        [--network project|none] [--no-peers]
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

from bench.lifecycle_bench import Berth  # noqa: E402
from engine.images import build  # noqa: E402
from engine.images.layout import Layout  # noqa: E402
from engine.images.rootfs import build_busybox_rootfs  # noqa: E402

IMAGE = "localhost/berth-bench/busybox:1"
VENV = "/var/tmp/berth-bench-podman-compose"
SUBNETS = {"berth": "10.93.1.0/24", "podman-compose": "10.93.2.0/24", "podman": "10.93.3.0/24"}
"""Each contender's project network: its own /24, reused round after round."""
CONTAINERS_CONF = """[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
[engine]
runtime = "runc"
"""
BERTH = "berth compose"
PODMAN_COMPOSE = "podman-compose"
PODMAN_RUN = "podman run -d, one by one"


def image_archive(base: str, rootfs: str) -> str:
    """An oci-archive of the busybox root filesystem, one layer, for both stores."""
    from tests.images.registry import tar_directory

    layout = Layout(os.path.join(base, "layout")).init()
    build.add_image(layout, IMAGE, [tar_directory(rootfs)])
    archive = os.path.join(base, "busybox.tar")
    subprocess.run(["skopeo", "copy", "--quiet", f"oci:{layout.root}:{IMAGE}",
                    f"oci-archive:{archive}:{IMAGE}"], check=True)
    shutil.rmtree(layout.root)
    return archive


GRACEFUL = 'trap "exit 0" TERM; sleep 600 & wait'
"""``--graceful``'s command: ends on SIGTERM at once (``wait`` is cut short by the
trap), so a ``down`` that sends the stop signal first must not wait its grace period."""


def compose_file(count: int, network: str, subnet: str, *, mode_none: bool,
                 graceful: bool = False) -> str:
    """The stack's YAML: ``count`` services of one ``sleep 600`` each, on a project
    network of ``subnet`` (network "project") or with ``network_mode: none`` (network
    "none"; ``mode_none`` is kept for callers: both compose tools now read the key)."""
    lines = ["services:"]
    for n in range(1, count + 1):
        lines += [f"  s{n:02d}:", f"    image: {IMAGE}"]
        lines += ([f"    command: [sh, -c, '{GRACEFUL}']"] if graceful
                  else ["    command: sleep 600", "    stop_signal: SIGKILL"])
        if network == "project":
            lines.append("    networks: [net]")
        else:
            lines.append("    network_mode: none")
    if network == "project":
        lines += ["networks:", "  net:", "    ipam:", "      config:",
                  f"        - subnet: {subnet}"]
    return "\n".join(lines) + "\n"


def podman_compose(explicit: str | None) -> str:
    """podman-compose's path: ``explicit``, else the private virtualenv's (made and
    filled from PyPI the first time)."""
    if explicit:
        return explicit
    path = os.path.join(VENV, "bin", "podman-compose")
    if not os.path.exists(path):
        print(f"installing podman-compose into {VENV} (for this benchmark only)",
              file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([os.path.join(VENV, "bin", "pip"), "install", "--quiet",
                        "podman-compose"], check=True)
    return path


def run(argv: list[str], env: dict[str, str] | None = None) -> None:
    done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:6])}... failed: "
                         f"{done.stderr.decode(errors='replace')[-2000:]}")


class Contender:
    """One way of bringing the stack up and down; ``check`` says how many of its
    containers run (untimed)."""

    name = ""

    def up(self, project: str) -> None:
        raise NotImplementedError

    def down(self, project: str) -> None:
        raise NotImplementedError

    def running(self, project: str) -> int:
        raise NotImplementedError


class BerthCompose(Contender):
    name = BERTH

    def __init__(self, berth: Berth, path: str) -> None:
        self.berth, self.env = berth, dict(berth.env, BERTH_BUS=berth.endpoint)
        self.cli = [sys.executable, "-m", "berth"]
        self.path = path

    def up(self, project: str) -> None:
        run([*self.cli, "compose", "-f", self.path, "-p", project, "up", "-d"], self.env)

    def down(self, project: str) -> None:
        run([*self.cli, "compose", "-f", self.path, "-p", project, "down"], self.env)

    def running(self, project: str) -> int:
        with self.berth.client() as c:
            return sum(1 for r in c.ps() if str(r["name"]).startswith(f"{project}-")
                       and r["state"] == "running")


class PodmanCompose(Contender):
    name = PODMAN_COMPOSE

    def __init__(self, exe: str, path: str, env: dict[str, str]) -> None:
        self.exe, self.path, self.env = exe, path, env

    def up(self, project: str) -> None:
        run([self.exe, "-p", project, "-f", self.path, "up", "-d"], self.env)

    def down(self, project: str) -> None:
        run([self.exe, "-p", project, "-f", self.path, "down", "-t", "0"], self.env)

    def running(self, project: str) -> int:
        return podman_running(project, self.env)


class PodmanRun(Contender):
    """``podman run -d`` of each container in turn (after ``podman network create``),
    ``podman rm -f`` of each in turn (then ``podman network rm``)."""

    name = PODMAN_RUN

    def __init__(self, count: int, network: str, env: dict[str, str],
                 graceful: bool = False) -> None:
        self.count, self.network, self.env = count, network, env
        self.graceful = graceful

    def _names(self, project: str) -> list[str]:
        return [f"{project}_s{n:02d}_1" for n in range(1, self.count + 1)]

    def up(self, project: str) -> None:
        net = ["--network", "none"]
        if self.network == "project":
            run(["podman", "network", "create", "--subnet", SUBNETS["podman"],
                 f"{project}_net"], self.env)
            net = ["--network", f"{project}_net"]
        for name in self._names(project):
            command = (["--stop-signal", "SIGTERM", IMAGE, "sh", "-c", GRACEFUL]
                       if self.graceful else ["--stop-signal", "SIGKILL", IMAGE, "sleep", "600"])
            run(["podman", "run", "-d", "--name", name, *net, *command], self.env)

    def down(self, project: str) -> None:
        for name in self._names(project):
            run(["podman", "rm", "-f", "-t", "10" if self.graceful else "0", name], self.env)
        if self.network == "project":
            run(["podman", "network", "rm", f"{project}_net"], self.env)

    def running(self, project: str) -> int:
        return podman_running(project, self.env)


def podman_running(project: str, env: dict[str, str]) -> int:
    out = subprocess.run(["podman", "ps", "--filter", "status=running", "--format",
                          "{{.Names}}"], env=env, capture_output=True, text=True,
                         check=True).stdout
    return sum(1 for name in out.split() if name.startswith(f"{project}_"))


def podman_leftovers(env: dict[str, str], prefix: str) -> None:
    """Remove whatever a failed run left in podman: containers and networks whose
    names start with ``prefix``."""
    out = subprocess.run(["podman", "ps", "-a", "--format", "{{.Names}}"], env=env,
                         capture_output=True, text=True, check=False).stdout
    names = [n for n in out.split() if n.startswith(prefix)]
    if names:
        subprocess.run(["podman", "rm", "-f", "-t", "0", *names], env=env,
                       capture_output=True, check=False)
    nets = subprocess.run(["podman", "network", "ls", "--format", "{{.Name}}"], env=env,
                          capture_output=True, text=True, check=False).stdout
    for net in (n for n in nets.split() if n.startswith(prefix)):
        subprocess.run(["podman", "network", "rm", "-f", net], env=env,
                       capture_output=True, check=False)


def one_round(c: Contender, project: str, count: int) -> tuple[float, float]:
    """Seconds of ``up`` and of ``down``, each checked afterwards (untimed)."""
    start = time.perf_counter()
    c.up(project)
    up = time.perf_counter() - start
    if (n := c.running(project)) != count:
        raise SystemExit(f"{c.name} up: {n} of {count} containers running")
    start = time.perf_counter()
    c.down(project)
    down = time.perf_counter() - start
    if (n := c.running(project)) != 0:
        raise SystemExit(f"{c.name} down: {n} containers still running")
    return up, down


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--containers", type=int, default=50)
    parser.add_argument("--network", choices=("project", "none"), default="project",
                        help="containers on a bridge network of their project (default) "
                             "or with none")
    parser.add_argument("--no-peers", action="store_true", help="berth alone")
    parser.add_argument("--graceful", action="store_true",
                        help="containers that exit on SIGTERM, stopped with it (a 10 s "
                             "grace each) instead of SIGKILL")
    parser.add_argument("--podman-compose", metavar="PATH",
                        help="this podman-compose rather than the private virtualenv's")
    args = parser.parse_args()
    if not 0 < args.containers < 100:
        parser.error("--containers: 1 to 99 (services are named s01...)")
    base = tempfile.mkdtemp(prefix="berth-cb-", dir="/tmp")
    tag = f"cb{os.getpid()}"
    podman_env = dict(os.environ, CONTAINERS_CONF=os.path.join(base, "containers.conf"))
    with open(podman_env["CONTAINERS_CONF"], "w") as f:
        f.write(CONTAINERS_CONF)
    berth: Berth | None = None
    contenders: list[Contender] = []
    try:
        rootfs = build_busybox_rootfs(os.path.join(base, "busybox"))
        archive = image_archive(base, rootfs)
        berth = Berth(base)
        files = {}
        for who, mode_none in (("berth", False), ("podman-compose", True)):
            files[who] = os.path.join(base, f"{who}.yaml")
            with open(files[who], "w") as f:
                f.write(compose_file(args.containers, args.network, SUBNETS[who],
                                     mode_none=mode_none, graceful=args.graceful))
        mine = BerthCompose(berth, files["berth"])
        run([*mine.cli, "image", "load", "-i", archive], mine.env)
        contenders.append(mine)
        if not args.no_peers:
            run(["podman", "load", "-i", archive], podman_env)
            exe = podman_compose(args.podman_compose)
            version = subprocess.run([exe, "--version"], env=podman_env, capture_output=True,
                                     text=True, check=False).stdout.split("\n")[0]
            print(f"anchor: {version.strip()}, {shutil.which('podman')}", file=sys.stderr)
            contenders.append(PodmanCompose(exe, files["podman-compose"], podman_env))
            contenders.append(PodmanRun(args.containers, args.network, podman_env,
                                        args.graceful))
        ups: dict[str, list[float]] = {c.name: [] for c in contenders}
        downs: dict[str, list[float]] = {c.name: [] for c in contenders}
        for n in range(args.rounds + 1):  # round 0: the warm-up, untimed
            order = contenders if n % 2 == 0 else contenders[::-1]
            for i, c in enumerate(order):
                up, down = one_round(c, f"{tag}r{n}c{i}", args.containers)
                print(f"  round {n}{' (warm-up)' if n == 0 else ''}: {c.name}: up {up:.2f}s, "
                      f"down {down:.2f}s", file=sys.stderr, flush=True)
                if n > 0:
                    ups[c.name].append(up)
                    downs[c.name].append(down)
    finally:
        if berth is not None:
            berth.close()
        if not args.no_peers:
            podman_leftovers(podman_env, tag)
            subprocess.run(["podman", "rmi", "-f", IMAGE], env=podman_env,
                           capture_output=True, check=False)
        overlays = os.path.join(base, "root", "overlay")
        for cid in os.listdir(overlays) if os.path.isdir(overlays) else ():
            subprocess.run(["umount", "-l", os.path.join(overlays, cid, "merged")],
                           capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)
    network = ("each on a bridge network of its project" if args.network == "project"
               else "no network")
    what = ("a shell that exits on SIGTERM, stopped with it" if args.graceful
            else "'sleep 600'")
    print(f"\n{args.containers} containers of {what} from one busybox image, {network}; "
          f"{args.rounds} interleaved rounds after a warm-up")
    print(f"{'contender':<28} {'up median s':>11} {'up max s':>9} {'down median s':>13} "
          f"{'down max s':>10}")
    for c in contenders:
        print(f"{c.name:<28} {statistics.median(ups[c.name]):>11.2f} {max(ups[c.name]):>9.2f} "
              f"{statistics.median(downs[c.name]):>13.2f} {max(downs[c.name]):>10.2f}")
    mine_up, mine_down = statistics.median(ups[BERTH]), statistics.median(downs[BERTH])
    for anchor in (PODMAN_COMPOSE, PODMAN_RUN):
        if anchor in ups:
            print(f"berth / {anchor}: up {mine_up / statistics.median(ups[anchor]):.2f}x, "
                  f"down {mine_down / statistics.median(downs[anchor]):.2f}x (goal for up: "
                  "<= 0.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
