"""Latencies a user feels with attached stdio, against ``berth up`` in its own process.

* first line of ``berth run``: from spawning ``berth run --rm ROOTFS echo hi`` to
  reading ``hi`` on its stdout (and to its exit);
* exec round trip: ``berth exec CTR true`` as a fresh process against
  ``runc exec CTR true`` on the same container (both processes, interleaved), with
  ``berth ps`` (the CLI's start-up and one round trip) and the client library's
  ``exec`` in-process to show where the time goes;
* ``logs -f``: a container prints a line every 100 ms; ``berth logs -f -t`` prints
  each with conmon's timestamp (taken when conmon read the line from the
  container); the latency is the moment the line is read here minus that stamp.

Each round runs every contender once, interleaved; the table gives medians.

    .venv/bin/python -m bench.stdio_bench [--rounds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench.lifecycle_bench import Berth  # noqa: E402
from engine.images.rootfs import build_busybox_rootfs  # noqa: E402
from engine.runtime import RuntimeConfig  # noqa: E402

BERTH = [sys.executable, "-m", "berth"]


def _readline(proc: subprocess.Popen[bytes], timeout: float = 30) -> bytes:
    assert proc.stdout is not None
    fd, line = proc.stdout.fileno(), b""
    deadline = time.monotonic() + timeout
    while not line.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise SystemExit(f"no line from {proc.args!r} in {timeout}s")
        byte = os.read(fd, 1)
        if not byte:
            raise SystemExit(f"{proc.args!r} ended before a line")
        line += byte
    return line


def first_line(env: dict[str, str], rootfs: str) -> tuple[float, float]:
    start = time.perf_counter()
    proc = subprocess.Popen([*BERTH, "run", "--rm", rootfs, "echo", "hi"], env=env,
                            stdout=subprocess.PIPE)
    assert _readline(proc) == b"hi\n"
    line = time.perf_counter() - start
    proc.wait(30)
    return line, time.perf_counter() - start


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def logs_follow(env: dict[str, str], name: str, lines: int) -> list[float]:
    proc = subprocess.Popen([*BERTH, "logs", "-f", "-t", "--tail", "0", name], env=env,
                            stdout=subprocess.PIPE)
    out = []
    try:
        for _ in range(lines):
            line = _readline(proc)
            now = time.time()
            stamp = datetime.fromisoformat(line.split(b" ", 1)[0].decode()).timestamp()
            out.append(now - stamp)
    finally:
        proc.kill()
        proc.wait()
    return out


def ms(values: list[float]) -> str:
    p90 = sorted(values)[max(0, int(len(values) * 0.9) - 1)]
    return f"{statistics.median(values) * 1000:7.1f} ms (p90 {p90 * 1000:.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    opts = parser.parse_args()
    base = tempfile.mkdtemp(prefix="berth-stdio-bench-")
    try:
        rootfs = build_busybox_rootfs(os.path.join(base, "rootfs"))
        berth = Berth(base)
        env = berth.env
        runc_root = RuntimeConfig(state_dir=f"{base}/root", tmp_dir=f"{base}/run/runtime").runc_root
        runc = shutil.which("runc") or "/usr/bin/runc"
        try:
            subprocess.run([*BERTH, "run", "-d", "--name", "bench-exec", rootfs, "sleep", "3600"],
                           env=env, check=True, stdout=subprocess.DEVNULL)
            subprocess.run([*BERTH, "run", "-d", "--name", "bench-logs", rootfs, "sh", "-c",
                            "while :; do echo line; sleep 0.1; done"], env=env, check=True,
                           stdout=subprocess.DEVNULL)
            shown = subprocess.run([*BERTH, "inspect", "bench-exec"], env=env, check=True,
                                   capture_output=True, text=True).stdout
            ctr = json.loads(shown)[0]["id"]  # inspect prints one array, as podman
            first, whole, berth_exec, runc_exec, ps, library = [], [], [], [], [], []
            client = berth.client()
            for _ in range(opts.rounds):
                ps.append(timed([*BERTH, "ps"], env))
                start = time.perf_counter()
                client.exec("bench-exec", ["true"])
                library.append(time.perf_counter() - start)
                line, total = first_line(env, rootfs)
                first.append(line)
                whole.append(total)
                berth_exec.append(timed([*BERTH, "exec", "bench-exec", "true"], env))
                runc_exec.append(timed([runc, "--root", runc_root, "exec", ctr, "true"], env))
            client.close()
            follow = logs_follow(env, "bench-logs", opts.rounds * 2)
        finally:
            berth.close()
            listed = subprocess.run([runc, "--root", runc_root, "list", "-q"], check=False,
                                    capture_output=True, text=True).stdout.split()
            for leftover in listed:
                subprocess.run([runc, "--root", runc_root, "delete", "-f", leftover], check=False)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"rounds: {opts.rounds} (medians; one run, interleaved)")
    print(f"berth run --rm ROOTFS echo hi: first line  {ms(first)}")
    print(f"berth run --rm ROOTFS echo hi: exit        {ms(whole)}")
    print(f"berth exec CTR true (CLI process)          {ms(berth_exec)}")
    print(f"runc exec CTR true (process)               {ms(runc_exec)}")
    print(f"  ratio berth/runc: {statistics.median(berth_exec) / statistics.median(runc_exec):.2f}")
    print(f"berth ps (CLI start-up + one round trip)   {ms(ps)}")
    print(f"Client.exec(CTR, ['true']) in-process      {ms(library)}")
    print(f"logs -f: line stamped by conmon -> printed {ms(follow)}")


if __name__ == "__main__":
    main()
