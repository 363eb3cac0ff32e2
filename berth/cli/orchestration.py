"""Restart-policy and health-check options of ``run``/``create``, and ``healthcheck``.

The options become run-spec keys (checked again at the client's edge by
``engine.containers.spec.spec_from_user`` and by the worker); durations keep their units here,
the spec's rules turn them into seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from berth.cli.table import print_table
from bus.client import Client
from engine.errors import BerthError

if TYPE_CHECKING:
    from berth.cli import AddCommand

COMMANDS = ("stats", "top", "update", "healthcheck")
STATS_INTERVAL_S = 1.0
"""Between two samples of ``stats`` (a CPU percentage needs two)."""


def add_spec_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--restart", metavar="POLICY",
                   help="no, on-failure[:MAX], always or unless-stopped (default no)")
    p.add_argument("--health-cmd", metavar="CMD", help="a command run by /bin/sh -c in the "
                   "container; exit 0 means healthy")
    p.add_argument("--health-interval", metavar="DURATION", help="between probes (30s)")
    p.add_argument("--health-timeout", metavar="DURATION", help="a probe's limit (30s)")
    p.add_argument("--health-retries", type=int, metavar="N",
                   help="failures in a row that make it unhealthy (3)")
    p.add_argument("--health-start-period", metavar="DURATION",
                   help="failures in this time after a start do not count (0s)")
    p.add_argument("--health-on-failure", choices=["none", "kill", "restart", "stop"],
                   help="what to do when it turns unhealthy (none)")
    p.add_argument("--no-healthcheck", action="store_true", help="no health check")


def spec_options(args: argparse.Namespace) -> dict[str, Any]:
    """The run-spec keys the options above give (only those given)."""
    keys = {"restart": args.restart, "health_cmd": args.health_cmd,
            "health_interval": args.health_interval, "health_timeout": args.health_timeout,
            "health_retries": args.health_retries,
            "health_start_period": args.health_start_period,
            "health_on_failure": args.health_on_failure}
    spec = {k: v for k, v in keys.items() if v is not None}
    if args.no_healthcheck:
        spec["no_healthcheck"] = True
    return spec


def cmd_healthcheck_run(args: argparse.Namespace, client: Client) -> int:
    """Run one probe now: print its output; exit 0 if healthy, 1 if not (podman's)."""
    reply = client.healthcheck(args.container)
    output = str(reply.result.get("output", ""))
    if output:
        print(output.rstrip("\n"))
    print(reply.result["status"])
    return 0 if reply.result["exit_code"] == 0 else 1


def cmd_update(args: argparse.Namespace, client: Client) -> int:
    changes: dict[str, Any] = {k: v for k, v in (
        ("memory", args.memory), ("pids_limit", args.pids_limit), ("cpus", args.cpus),
        ("restart", args.restart)) if v is not None}
    reply = client.update(args.container, **changes)
    print(args.container)
    changed = reply.result.get("changed") or []
    if not changed:
        print("nothing changed", file=sys.stderr)
    return 0


def cmd_top(args: argparse.Namespace, client: Client) -> int:
    rows = client.top(args.container)["processes"]
    table = [["PID", "USER", "TIME", "COMMAND"]] + [
        [str(r["pid"]), str(r["user"]), str(r["time"]), str(r["command"])] for r in rows]
    print_table(table)
    return 0




def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.4g}{unit}"
        n /= 1024
    return f"{n:.4g}TiB"


def _sample(client: Client, refs: list[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for ref in refs:
        try:
            out[ref] = client.stats(ref)
        except BerthError as exc:  # stopped or removed between two samples: left out
            print(f"berth: {ref}: {exc}", file=sys.stderr)
    return out


def cmd_stats(args: argparse.Namespace, client: Client) -> int:
    from engine.runtime.usage import cpu_percent

    refs = list(args.containers) or [r["id"] for r in client.ps() if r["state"] == "running"]
    before = _sample(client, refs)
    while True:
        time.sleep(STATS_INTERVAL_S)  # the sampling interval, not a synchronisation
        after = _sample(client, list(before))
        rows = []
        for ref, now in after.items():
            u, cpu = now["usage"], cpu_percent(before[ref]["usage"], now["usage"])
            rows.append({"id": now["id"], "name": now["name"], "cpu_percent": round(cpu, 2),
                         "memory": u["memory"], "memory_limit": u["memory_limit"],
                         "pids": u["pids"], "net_rx": u["net_rx"], "net_tx": u["net_tx"],
                         "block_read": u["block_read"], "block_write": u["block_write"]})
        if args.format == "json":
            for row in rows:
                print(json.dumps(row, sort_keys=True))
        else:
            print_table([["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "PIDS",
                           "NET I/O", "BLOCK I/O"]] + [[
                r["id"][:12], r["name"], f"{r['cpu_percent']:.2f}%",
                f"{_size(r['memory'])} / "
                f"{_size(r['memory_limit']) if r['memory_limit'] else 'unlimited'}",
                str(r["pids"]), f"{_size(r['net_rx'])} / {_size(r['net_tx'])}",
                f"{_size(r['block_read'])} / {_size(r['block_write'])}"] for r in rows])
        sys.stdout.flush()
        if args.no_stream or not after:
            return 0
        before = after


def add_commands(add: AddCommand) -> None:
    p = add("stats", cmd_stats, "live resource use of running containers (cgroup counters)")
    p.add_argument("--no-stream", action="store_true", help="print one sample and exit")
    p.add_argument("--format", choices=["table", "json"], default="table",
                   help="table (default) or one JSON array")
    p.add_argument("containers", nargs="*", metavar="CTR",
                   help="containers (default: every running one)")
    p = add("top", cmd_top, "the processes of a running container")
    p.add_argument("container", metavar="CTR", help="name or id (prefix)")
    p = add("update", cmd_update, "change a container's resource limits or restart policy")
    p.add_argument("--memory", metavar="BYTES", help="bytes, or a number with k, m or g")
    p.add_argument("--pids-limit", type=int, metavar="N", help="at most this many processes")
    p.add_argument("--cpus", type=float, metavar="N", help="CPUs' worth of time (e.g. 0.5)")
    p.add_argument("--restart", metavar="POLICY",
                   help="no, on-failure[:MAX], always or unless-stopped")
    p.add_argument("container", metavar="CTR", help="name or id (prefix)")
    p = add("healthcheck", cmd_healthcheck_run, "run a container's health check now")
    sub = p.add_subparsers(dest="health_action", required=True, metavar="ACTION")
    run = sub.add_parser("run", help="run one probe now")
    run.add_argument("container", metavar="CTR", help="name or id (prefix)")
