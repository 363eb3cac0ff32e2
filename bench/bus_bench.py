"""No-op round trip over the bus: client -> broker -> worker (replies ok) -> client.

Runs the broker and the worker in their own processes on ipc sockets in a private
directory (as ``berth broker`` / ``berth worker`` would), then times sequential
round trips from this process with a real ``bus.client.Client``, and a pipelined
burst from a bare DEALER for throughput. Prints a table; target p50 < 1 ms.

    .venv/bin/python bench/bus_bench.py [--count 5000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import zmq

from bus.broker import Broker
from bus.client import Client
from bus.endpoints import from_run_dir
from bus.protocol import Reply, decode, encode
from bus.worker_link import WorkerLink


def serve(role: str, run_dir: str) -> None:
    """Child process: run the broker or a worker until SIGTERM."""
    ep = from_run_dir(run_dir)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if role == "broker":
        broker = Broker(ep.frontend, ep.backend, ep.events)
        print("up", flush=True)
        broker.run(stop)
        broker.close()
    else:
        link = WorkerLink(ep.backend, "bench", lambda c: Reply(c.id, True), concurrency=4)
        print("up", flush=True)
        link.run(stop)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--serve", choices=["broker", "worker"])
    parser.add_argument("--run-dir")
    opts = parser.parse_args()
    if opts.serve:
        serve(opts.serve, opts.run_dir)
        return

    run_dir = tempfile.mkdtemp(prefix="bbench", dir="/tmp")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    procs = [subprocess.Popen([sys.executable, __file__, "--serve", role, "--run-dir", run_dir],
                              stdout=subprocess.PIPE, text=True, env=env)
             for role in ("broker", "worker")]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
        ep = from_run_dir(run_dir)
        client = Client(ep.frontend, timeout=5, retries=0)
        deadline = time.monotonic() + 10
        while not client.ping()["workers"]:
            if time.monotonic() > deadline:
                raise SystemExit("worker never registered")
            time.sleep(0.01)
        for _ in range(500):  # warm-up
            client.send("query.ps")

        latencies = []
        started = time.perf_counter()
        for _ in range(opts.count):
            t0 = time.perf_counter()
            client.send("query.ps")
            latencies.append((time.perf_counter() - t0) * 1000)
        sequential = opts.count / (time.perf_counter() - started)

        ping = []
        for _ in range(1000):
            t0 = time.perf_counter()
            client.ping()
            ping.append((time.perf_counter() - t0) * 1000)

        frames = [encode(client.command("query.ps")) for _ in range(opts.count)]
        sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(ep.frontend)
        started = time.perf_counter()
        window, sent, got = 64, 0, 0
        while got < len(frames):
            while sent < len(frames) and sent - got < window:
                sock.send(frames[sent])
                sent += 1
            msg = decode(sock.recv())
            assert isinstance(msg, Reply) and msg.ok
            got += 1
        pipelined = len(frames) / (time.perf_counter() - started)
        sock.close(linger=0)
        client.close()

        rows = [
            ("no-op command round trip", latencies, sequential),
            ("query.ping (broker only)", ping, len(ping) / (sum(ping) / 1000)),
        ]
        print(f"\nbus round trips over ipc, {opts.count} commands (client, broker, worker "
              "in 3 processes)")
        print(f"{'case':<28}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'mean ms':>9}{'cmd/s':>10}")
        for name, values, rate in rows:
            print(f"{name:<28}{percentile(values, .5):>9.3f}{percentile(values, .9):>9.3f}"
                  f"{percentile(values, .99):>9.3f}{statistics.fmean(values):>9.3f}{rate:>10.0f}")
        print(f"{'pipelined (window 64)':<28}{'':>9}{'':>9}{'':>9}{'':>9}{pipelined:>10.0f}")
        target = percentile(latencies, .5) < 1.0
        print(f"\np50 < 1 ms: {'yes' if target else 'NO'}")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
