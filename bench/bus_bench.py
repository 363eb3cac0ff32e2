"""No-op round trip over the bus: client -> broker -> worker (replies ok) -> client.

Runs the broker and the worker in their own processes on ipc sockets in a private
directory (as ``berth broker`` / ``berth worker`` would), then times sequential
round trips from this process with a real ``bus.client.Client``, and a pipelined
burst from a bare DEALER for throughput. Prints a table; target p50 < 1 ms.

``--curve`` runs the same over loopback tcp with CURVE (real keys in the private
directory, as ``berth broker`` on tcp requires); ``--compare`` runs both in one
run and prints the CURVE/ipc ratios. The broker's rate limit is off: the bench
is one peer sending as fast as it can.

    .venv/bin/python bench/bus_bench.py [--count 5000] [--curve | --compare]
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

from bus import keys
from bus.broker import Broker
from bus.client import Client
from bus.endpoints import Endpoints, from_run_dir
from bus.protocol import Reply, decode, encode
from bus.security import BrokerSecurity
from bus.worker_link import WorkerLink


def _endpoints(run_dir: str, curve: bool) -> Endpoints:
    if not curve:
        return from_run_dir(run_dir)
    return Endpoints(*Path(run_dir, "endpoints").read_text().split())


def _keys_dir(run_dir: str) -> Path:
    return Path(run_dir) / "keys"


def _client_keys(run_dir: str, name: str) -> keys.ClientKeys:
    k = _keys_dir(run_dir)
    return keys.client_keys(k / f"{name}.key_secret", k / "broker.key")


def prepare_curve(run_dir: str) -> None:
    """Keys for the broker, the worker (named for its node, "bench") and the client,
    and three free loopback ports."""
    k = _keys_dir(run_dir)
    keys.generate("broker", k)
    for name, role in (("bench", keys.WORKERS), ("client", keys.PUBLISHERS)):
        public, _ = keys.generate(name, k)
        keys.authorize(public, role, directory=k / "authorized" / role)
    ports = []
    probe: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.ROUTER)
    for _ in range(3):
        ports.append(probe.bind_to_random_port("tcp://127.0.0.1"))
    probe.close(linger=0)
    Path(run_dir, "endpoints").write_text(" ".join(f"tcp://127.0.0.1:{p}" for p in ports))


def serve(role: str, run_dir: str, curve: bool) -> None:
    """Child process: run the broker or a worker until SIGTERM."""
    ep = _endpoints(run_dir, curve)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if role == "broker":
        k = _keys_dir(run_dir)
        security = (BrokerSecurity.load(k / "broker.key_secret", k / "authorized" / keys.WORKERS,
                                        k / "authorized" / keys.PUBLISHERS) if curve else None)
        broker = Broker(ep.frontend, ep.backend, ep.events, security=security, rate_limit=None)
        print("up", flush=True)
        broker.run(stop)
        broker.close()
    else:
        link = WorkerLink(ep.backend, "bench", lambda c: Reply(c.id, True), concurrency=4,
                          curve=_client_keys(run_dir, "bench") if curve else None)
        print("up", flush=True)
        link.run(stop)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


Row = tuple[str, list[float], float]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--serve", choices=["broker", "worker"])
    parser.add_argument("--run-dir")
    parser.add_argument("--curve", action="store_true", help="loopback tcp with CURVE")
    parser.add_argument("--compare", action="store_true", help="ipc, then tcp+CURVE, and ratios")
    opts = parser.parse_args()
    if opts.serve:
        serve(opts.serve, opts.run_dir, opts.curve)
        return
    cases = [False, True] if opts.compare else [opts.curve]
    results = {curve: run_case(curve, opts.count) for curve in cases}
    for curve, rows in results.items():
        label = "tcp + CURVE" if curve else "ipc"
        print(f"\nbus round trips over {label}, {opts.count} commands (client, broker, worker "
              "in 3 processes)")
        print(f"{'case':<28}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'mean ms':>9}{'cmd/s':>10}")
        for name, values, rate in rows:
            if values:
                print(f"{name:<28}{percentile(values, .5):>9.3f}{percentile(values, .9):>9.3f}"
                      f"{percentile(values, .99):>9.3f}{statistics.fmean(values):>9.3f}"
                      f"{rate:>10.0f}")
            else:
                print(f"{name:<28}{'':>9}{'':>9}{'':>9}{'':>9}{rate:>10.0f}")
        target = percentile(rows[0][1], .5) < 1.0
        print(f"\np50 < 1 ms: {'yes' if target else 'NO'}")
    if opts.compare:
        print("\nCURVE / ipc ratios (same run)")
        print(f"{'case':<28}{'p50 ratio':>11}{'rate ratio':>12}")
        for (name, plain, plain_rate), (_, curved, curved_rate) in zip(
                results[False], results[True], strict=True):
            p50 = (percentile(curved, .5) / percentile(plain, .5)) if plain else float("nan")
            print(f"{name:<28}{p50:>11.2f}{curved_rate / plain_rate:>12.2f}")


def run_case(curve: bool, count: int) -> list[Row]:
    """Start a broker and a worker process, time the round trips, stop them."""
    run_dir = tempfile.mkdtemp(prefix="bbench", dir="/tmp")
    if curve:
        prepare_curve(run_dir)
    extra = ["--curve"] if curve else []
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    procs = [subprocess.Popen([sys.executable, __file__, "--serve", role, "--run-dir", run_dir,
                               *extra], stdout=subprocess.PIPE, text=True, env=env)
             for role in ("broker", "worker")]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
        ep = _endpoints(run_dir, curve)
        curve_keys = _client_keys(run_dir, "client") if curve else None
        client = Client(ep.frontend, events_endpoint=ep.events, timeout=5, retries=0,
                        curve=curve_keys)
        deadline = time.monotonic() + 10
        while not client.ping()["workers"]:
            if time.monotonic() > deadline:
                raise SystemExit("worker never registered")
            time.sleep(0.01)
        for _ in range(500):  # warm-up
            client.send("query.ps")

        latencies = []
        started = time.perf_counter()
        for _ in range(count):
            t0 = time.perf_counter()
            client.send("query.ps")
            latencies.append((time.perf_counter() - t0) * 1000)
        sequential = count / (time.perf_counter() - started)

        ping = []
        for _ in range(1000):
            t0 = time.perf_counter()
            client.ping()
            ping.append((time.perf_counter() - t0) * 1000)

        frames = [encode(client.command("query.ps")) for _ in range(count)]
        sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if curve_keys is not None:
            keys.apply_client(sock, curve_keys)
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

        return [
            ("no-op command round trip", latencies, sequential),
            ("query.ping (broker only)", ping, len(ping) / (sum(ping) / 1000)),
            ("pipelined (window 64)", [], pipelined),
        ]
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
