"""Container commands: ``run``, ``create``, ``start``, ``stop``, ``kill``, ``pause``,
``unpause``, ``rm``, ``wait``, ``logs``, ``inspect``, ``ps``, ``exec``, ``checkpoint``,
``restore``. Each one is a few calls of :class:`bus.client.Client`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from berth.cli import format as fmt
from berth.cli import images, orchestration
from bus.client import Client
from engine.errors import Unavailable

if TYPE_CHECKING:
    from berth.cli import AddCommand

Handler = Callable[[argparse.Namespace, Client], int]

COMMANDS = (
    "run", "create", "start", "stop", "kill", "pause", "unpause", "rm", "wait", "logs",
    "inspect", "ps", "exec", "checkpoint", "restore",
)


def _spec_args(args: argparse.Namespace) -> dict[str, Any]:
    rootfs = os.path.abspath(args.rootfs) if not os.path.isabs(args.rootfs) else args.rootfs
    ports = [fmt.parse_port(p) for p in args.publish]
    spec: dict[str, Any] = {
        "rootfs": rootfs,
        "args": [args.command, *args.args] if args.command is not None else [],
        "env": list(args.env),
        "cwd": args.workdir,
        "user": args.user,
        "hostname": args.hostname or "",
        "terminal": bool(args.tty),
        "read_only": bool(args.read_only),
        "auto_remove": bool(getattr(args, "rm", False)),
        "ports": ports,
        "volumes": list(args.volume), "mount": list(args.mount), "tmpfs": list(args.tmpfs),
        "network": args.network or "",  # networks (issue 11)
        "expose": list(args.expose),
        "publish_all": bool(args.publish_all),
    }
    if args.stop_signal is not None:
        spec["stop_signal"] = args.stop_signal
    if args.memory is not None:
        spec["memory"] = fmt.parse_size(args.memory)
    if args.pids_limit is not None:
        spec["pids_limit"] = args.pids_limit
    images.image_spec(args.rootfs, spec)  # images: not a directory -> an image reference
    spec.update(orchestration.spec_options(args))  # --restart, --health-*
    return spec


def cmd_create(args: argparse.Namespace, client: Client) -> int:
    spec = _spec_args(args)
    images.pull_for_run(client, spec, args)
    reply = client.create(name=args.name, node=args.node, **spec)
    print(reply.result["id"])
    return 0


def cmd_run(args: argparse.Namespace, client: Client) -> int:
    spec = _spec_args(args)
    images.pull_for_run(client, spec, args)
    if args.detach:
        reply = client.create(name=args.name, node=args.node, **spec)
        cid = str(reply.result["id"])
        client.start(cid, node=str(reply.result["node"]))
        print(cid)
        return 0
    # Attached --rm is done here, as podman does: the worker removing the container
    # would race this client for the last lines of its log.
    spec["auto_remove"] = False
    reply = client.create(name=args.name, node=args.node, **spec)
    cid, node = str(reply.result["id"]), str(reply.result["node"])
    try:
        client.start(cid, node=node)
        code = _follow_until_exit(client, cid, node)
    except Unavailable as exc:
        # The engine stopped under us; the container goes on (stopping the engine
        # never stops one), so it cannot be removed now: say so, do not pretend.
        if args.rm:
            raise Unavailable(f"{exc}; container {cid[:12]} keeps running and was not "
                              f"removed: remove it with 'berth rm -f {cid[:12]}' once the "
                              "engine is back") from None
        raise
    except BaseException:
        if args.rm:
            client.remove(cid, force=True, node=node)
        raise
    if args.rm:
        client.remove(cid, force=True, node=node)
    return code


def _follow_until_exit(client: Client, cid: str, node: str) -> int:
    """Stream the container's output until it has exited; return its exit code."""
    offset = 0
    while True:
        chunk = client.logs(cid, node=node, offset=offset, wait_ms=1000)
        lines = chunk.get("lines", [])
        fmt.write_log_lines(lines)
        offset = int(chunk["offset"])
        if chunk["state"] in ("exited", "removed") and not lines:
            code = chunk.get("exit_code")
            return int(code) if code is not None and int(code) >= 0 else 125


def cmd_start(args: argparse.Namespace, client: Client) -> int:
    resolved = client.resolve(args.container)
    client.start(resolved.id, node=resolved.node)
    if args.attach:
        return _follow_until_exit(client, resolved.id, resolved.node)
    print(args.container)
    return 0


def _simple(method: str, **extra: Callable[[argparse.Namespace], Any]) -> Handler:
    def run(args: argparse.Namespace, client: Client) -> int:
        kwargs = {k: f(args) for k, f in extra.items()}
        with fmt.Progress(f"{method} {args.container}"):
            getattr(client, method)(args.container, **kwargs)
        print(args.container)
        return 0

    return run


def cmd_wait(args: argparse.Namespace, client: Client) -> int:
    if args.condition != "exited":  # running, healthy: print the condition reached
        with fmt.Progress(f"waiting for {args.container} to be {args.condition}"):
            client.wait(args.container, condition=args.condition)
        print(args.condition)
        return 0
    with fmt.Progress(f"waiting for {args.container} to exit"):
        reply = client.wait(args.container)
    print(reply.result["exit_code"])
    return 0


def cmd_logs(args: argparse.Namespace, client: Client) -> int:
    resolved = client.resolve(args.container)
    offset = 0
    while True:
        chunk = client.logs(resolved.id, node=resolved.node, offset=offset,
                            wait_ms=1000 if args.follow else 0)
        fmt.write_log_lines(chunk.get("lines", []))
        new = int(chunk["offset"])
        done = not args.follow or chunk["state"] in ("exited", "removed")
        if new == offset and done:
            return 0
        offset = new


def cmd_inspect(args: argparse.Namespace, client: Client) -> int:
    print(json.dumps(client.inspect(args.container), indent=2, sort_keys=True))
    return 0


def cmd_ps(args: argparse.Namespace, client: Client) -> int:
    fmt.print_rows(client.ps(all=args.all), args.format == "json")
    return 0


def cmd_exec(args: argparse.Namespace, client: Client) -> int:
    reply = client.exec(
        args.container, [args.command, *args.args], env=list(args.env), cwd=args.workdir or "",
        user=args.user or "", tty=bool(args.tty), reply_timeout=None,
    )
    sys.stdout.write(str(reply.result.get("output", "")))
    sys.stdout.flush()
    return int(reply.result["exit_code"])


def cmd_checkpoint(args: argparse.Namespace, client: Client) -> int:
    with fmt.Progress(f"checkpointing {args.container}"):
        client.checkpoint(args.container, leave_running=args.leave_running,
                          tcp_established=args.tcp_established)
    print(args.container)
    return 0


def cmd_restore(args: argparse.Namespace, client: Client) -> int:
    with fmt.Progress(f"restoring {args.container}"):
        client.restore(args.container, tcp_established=args.tcp_established)
    print(args.container)
    return 0


def _spec_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name")
    p.add_argument("-e", "--env", action="append", default=[], metavar="K=V")
    p.add_argument("-w", "--workdir", default="/")
    p.add_argument("-u", "--user", default="0:0", metavar="UID[:GID]")
    p.add_argument("--hostname")
    p.add_argument("--stop-signal")
    p.add_argument("-p", "--publish", action="append", default=[],
                   metavar="[IP:]HOST:CTR[/PROTO]")
    p.add_argument("--memory", metavar="BYTES")
    p.add_argument("--pids-limit", type=int)
    p.add_argument("--read-only", action="store_true")
    p.add_argument("-v", "--volume", action="append", default=[],
                   metavar="HOST_PATH|NAME:CTR_PATH[:ro|rw]")
    p.add_argument("--mount", action="append", default=[],
                   metavar="type=bind|volume|tmpfs,source=...,target=...[,readonly]")
    p.add_argument("--tmpfs", action="append", default=[], metavar="PATH[:size=N,mode=OCTAL]")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("--node")
    images.add_run_options(p)
    orchestration.add_spec_options(p)
    p.add_argument("--network", metavar="NAME",
                   help="a network's name, none or host (default: the node's default)")
    p.add_argument("--expose", action="append", default=[], metavar="PORT[/PROTO]",
                   help="a container port -P publishes (repeatable)")
    p.add_argument("-P", "--publish-all", action="store_true",
                   help="publish every exposed port on a free host port")
    p.add_argument("rootfs", metavar="IMAGE|ROOTFS")
    p.add_argument("command", metavar="CMD", nargs="?")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARG")


def add_commands(add: AddCommand) -> None:
    for name, fn, helptext in (("run", cmd_run, "create and start a container"),
                               ("create", cmd_create, "create a container")):
        p = add(name, fn, helptext)
        if name == "run":
            p.add_argument("-d", "--detach", action="store_true")
            p.add_argument("--rm", action="store_true")
        _spec_options(p)
    p = add("start", cmd_start, "start a container")
    p.add_argument("-a", "--attach", action="store_true")
    p.add_argument("container", metavar="CTR")
    p = add("stop", _simple("stop", timeout=lambda a: a.time), "stop a container")
    p.add_argument("-t", "--time", type=float, default=10.0)
    p.add_argument("container", metavar="CTR")
    p = add("kill", _simple("kill", signal=lambda a: a.signal), "send a signal")
    p.add_argument("-s", "--signal", default="KILL")
    p.add_argument("container", metavar="CTR")
    for name in ("pause", "unpause"):
        p = add(name, _simple(name), f"{name} a container")
        p.add_argument("container", metavar="CTR")
    p = add("rm", _simple("remove", force=lambda a: a.force), "remove a container")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("container", metavar="CTR")
    p = add("wait", cmd_wait, "wait for a container to exit; print its exit code")
    p.add_argument("--condition", choices=["exited", "running", "healthy"], default="exited")
    p.add_argument("container", metavar="CTR")
    p = add("logs", cmd_logs, "print a container's output")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("container", metavar="CTR")
    p = add("inspect", cmd_inspect, "a container as JSON")
    p.add_argument("container", metavar="CTR")
    p = add("ps", cmd_ps, "list containers")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p = add("exec", cmd_exec, "run a command in a running container")
    p.add_argument("-e", "--env", action="append", default=[], metavar="K=V")
    p.add_argument("-w", "--workdir")
    p.add_argument("-u", "--user")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("container", metavar="CTR")
    p.add_argument("command", metavar="CMD")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARG")
    p = add("checkpoint", cmd_checkpoint, "checkpoint a running container (CRIU)")
    p.add_argument("--leave-running", action="store_true")
    p.add_argument("--tcp-established", action="store_true")
    p.add_argument("container", metavar="CTR")
    p = add("restore", cmd_restore, "restore a checkpointed container")
    p.add_argument("--tcp-established", action="store_true")
    p.add_argument("container", metavar="CTR")
