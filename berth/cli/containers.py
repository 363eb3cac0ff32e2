"""Container commands: ``run``, ``create``, ``start``, ``logs``, ``exec``, ``checkpoint``,
``restore``. Each one is a few calls of :class:`bus.client.Client`. The verbs that take
several containers are in :mod:`berth.cli.several`, ``ps`` in :mod:`berth.cli.listing`."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from berth.cli import attach, images, orchestration
from berth.cli import format as fmt
from berth.cli.runflags import add_run_flags, run_flag_spec
from berth.cli.several import each
from bus.client import Client
from engine.errors import InvalidArgument

if TYPE_CHECKING:
    from berth.cli import AddCommand

Handler = Callable[[argparse.Namespace, Client], int]

COMMANDS = ("run", "create", "start", "logs", "exec", "checkpoint", "restore",
            *attach.COMMANDS)


def _spec_args(args: argparse.Namespace) -> dict[str, Any]:
    rootfs = os.path.abspath(args.rootfs) if not os.path.isabs(args.rootfs) else args.rootfs
    ports = [fmt.parse_port(p) for p in args.publish]
    spec: dict[str, Any] = {
        "rootfs": rootfs,
        "args": [args.command, *args.args] if args.command is not None else [],
        "env": [_env_item(e) for e in args.env],
        "cwd": args.workdir,
        "user": args.user,
        "hostname": args.hostname or "",
        "terminal": bool(args.tty),
        "read_only": bool(args.read_only),
        "auto_remove": bool(getattr(args, "rm", False)),
        "ports": ports,
        "volumes": list(args.volume), "mount": list(args.mount), "tmpfs": list(args.tmpfs),
        "network": args.network or "",  # networks
        "expose": list(args.expose),
        "publish_all": bool(args.publish_all),
    }
    if args.network_alias:  # only when given: specs without stay as they were recorded
        spec["network_aliases"] = list(args.network_alias)
    if args.add_host:  # the same
        spec["add_hosts"] = list(args.add_host)
    if args.dns:  # the same
        spec["dns"] = list(args.dns)
    if args.domainname:  # the same
        spec["domainname"] = args.domainname
    if args.sysctl:  # the same
        spec["sysctls"] = list(args.sysctl)
    if args.stop_signal is not None:
        spec["stop_signal"] = args.stop_signal
    if args.memory is not None and fmt.parse_size(args.memory) != 0:  # 0: no limit
        spec["memory"] = fmt.parse_size(args.memory)
    if args.pids_limit is not None:
        spec["pids_limit"] = args.pids_limit
    if args.cpus is not None:
        spec["cpus"] = args.cpus
    if getattr(args, "interactive", False):
        spec["stdin"] = True
    images.image_spec(args.rootfs, spec)  # images: not a directory -> an image reference
    spec.update(orchestration.spec_options(args))  # --restart, --health-*
    spec.update(run_flag_spec(args, spec["env"]))
    return spec


def _cpus(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid --cpus {text!r}: give a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"invalid --cpus {text!r}: give a number > 0")
    return value


def _env_item(item: str) -> str:
    """``-e KEY=VALUE`` as given; ``-e KEY`` takes KEY's value from this process's
    environment and is left out when it is not set there, as podman's."""
    if "=" in item:
        return item
    if not item or "\0" in item:
        raise InvalidArgument(f"invalid environment variable {item!r}: use KEY=VALUE or KEY")
    value = os.environ.get(item)
    return "" if value is None else f"{item}={value}"


def _prepare(args: argparse.Namespace, client: Client) -> dict[str, Any]:
    """The spec, after the steps podman takes before it creates: ``--cidfile`` must
    not exist yet, ``--replace`` removes a container holding the name, the image is
    pulled."""
    spec = _spec_args(args)
    spec["env"] = [e for e in spec["env"] if e]
    if args.cidfile is not None and os.path.lexists(args.cidfile):
        raise InvalidArgument(f"container id file {args.cidfile} exists: remove it first")
    if args.replace:
        if not args.name:
            raise InvalidArgument("--replace needs --name: the container to replace")
        from berth.cli.exists import exists

        if exists(lambda: client.inspect(args.name)) == 0:
            client.remove(args.name, force=True)
    images.pull_for_run(client, spec, args)
    return spec


def _write_cidfile(args: argparse.Namespace, cid: str) -> None:
    """``--cidfile``: the full id, written once created (exclusively: a file made
    meanwhile is not overwritten)."""
    if args.cidfile is None:
        return
    try:
        fd = os.open(args.cidfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as exc:
        raise InvalidArgument(f"cannot write container id file {args.cidfile}: "
                              f"{exc.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(cid)


def cmd_create(args: argparse.Namespace, client: Client) -> int:
    spec = _prepare(args, client)
    reply = client.create(name=args.name, node=args.node, **spec)
    _write_cidfile(args, str(reply.result["id"]))
    print(reply.result["id"])
    return 0


def cmd_run(args: argparse.Namespace, client: Client) -> int:
    spec = _prepare(args, client)
    if args.detach:
        reply = client.create(name=args.name, node=args.node, **spec)
        cid = str(reply.result["id"])
        _write_cidfile(args, cid)
        client.start(cid, node=str(reply.result["node"]))
        print(cid)
        return 0
    if args.cidfile is not None:
        args.on_created = lambda cid: _write_cidfile(args, cid)
    return attach.run_attached(args, client, spec)


def cmd_start(args: argparse.Namespace, client: Client) -> int:
    if args.attach:  # attached before it starts, so none of its output is missed
        if len(args.containers) != 1:
            raise InvalidArgument("start --attach takes one container")
        resolved = client.resolve(args.containers[0])
        return attach.start_attached(client, resolved.id, resolved.node,
                                     stdin=bool(args.interactive))

    def start(ref: str) -> None:
        client.start(ref)

    if args.all:  # podman: every container not running, each printed by its full id
        if args.containers:
            raise InvalidArgument("give container names or --all, not both")
        return each([str(r["id"]) for r in client.ps(all=True)
                     if r["state"] in ("created", "exited")], start)
    if not args.containers:
        raise InvalidArgument("name at least one container (or --all)")
    return each(args.containers, start)


def cmd_logs(args: argparse.Namespace, client: Client) -> int:
    return attach.logs_streamed(args, client)


def cmd_exec(args: argparse.Namespace, client: Client) -> int:
    return attach.exec_streamed(args, client)


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
    p.add_argument("--name", help="the container's name (default berth-ID12)")
    p.add_argument("-e", "--env", action="append", default=[], metavar="K=V",
                   help="an environment variable (repeatable)")
    p.add_argument("-w", "--workdir", default="/", help="the working directory (default /)")
    p.add_argument("-u", "--user", default="0:0", metavar="USER[:GROUP]",
                   help="a name or number, looked up in the rootfs's /etc/passwd and "
                        "/etc/group (default 0:0)")
    # podman's -h is --hostname on run and create (their parsers have only --help)
    p.add_argument("--help", action="help", help="show this help message and exit")
    p.add_argument("-h", "--hostname", help="the container's host name (default: its short id)")
    p.add_argument("--stop-signal", help="the signal stop sends first (default TERM)")
    p.add_argument("-p", "--publish", action="append", default=[],
                   metavar="[IP:]HOST:CTR[/PROTO]",
                   help="publish a container port on the host (repeatable)")
    p.add_argument("-m", "--memory", metavar="SIZE",
                   help="a memory limit: bytes, or 64m, 1g (0: no limit)")
    p.add_argument("--cpus", type=_cpus, metavar="N",
                   help="CPUs' worth of time per period (e.g. 0.5): a CFS quota")
    p.add_argument("--pids-limit", type=int, help="at most this many processes")
    p.add_argument("--read-only", action="store_true", help="mount the root filesystem read-only")
    p.add_argument("-v", "--volume", action="append", default=[],
                   metavar="HOST_PATH|NAME:CTR_PATH[:ro|rw]",
                   help="bind a host path or a named volume (repeatable)")
    p.add_argument("--mount", action="append", default=[],
                   metavar="type=bind|volume|tmpfs,source=...,target=...[,readonly]",
                   help="a mount, docker's syntax (repeatable)")
    p.add_argument("--tmpfs", action="append", default=[], metavar="PATH[:size=N,mode=OCTAL]",
                   help="a tmpfs at PATH (repeatable)")
    p.add_argument("-t", "--tty", action="store_true", help="give the container a terminal")
    p.add_argument("--node", help="the node to run on (default: any worker)")
    add_run_flags(p)
    images.add_run_options(p)
    orchestration.add_spec_options(p)
    p.add_argument("--network", metavar="NAME",
                   help="a network's name, none or host (default: the node's default)")
    p.add_argument("--network-alias", action="append", default=[], metavar="NAME",
                   help="another name the network's members resolve it by (repeatable)")
    p.add_argument("--add-host", action="append", default=[], metavar="NAME:ADDRESS",
                   help="a line of its /etc/hosts (repeatable)")
    p.add_argument("--dns", action="append", default=[], metavar="ADDRESS",
                   help="a nameserver of its resolv.conf instead of the host's (repeatable)")
    p.add_argument("--domainname", metavar="NAME", help="its NIS domain name")
    p.add_argument("--sysctl", action="append", default=[], metavar="KEY=VALUE",
                   help="a sysctl of its own namespaces: net.*, kernel.shm*, kernel.msg*, "
                        "kernel.sem, fs.mqueue.* (repeatable)")
    p.add_argument("--expose", action="append", default=[], metavar="PORT[/PROTO]",
                   help="a container port -P publishes (repeatable)")
    p.add_argument("-P", "--publish-all", action="store_true",
                   help="publish every exposed port on a free host port")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress while the image is pulled (berth shows progress only "
                        "on a terminal)")
    p.add_argument("--cidfile", metavar="FILE",
                   help="write the container's id to FILE (which must not exist)")
    p.add_argument("--replace", action="store_true",
                   help="remove (forcibly) a container that holds --name first")
    p.add_argument("rootfs", metavar="IMAGE|ROOTFS",
                   help="an image, or a root filesystem directory (a path)")
    p.add_argument("command", metavar="CMD", nargs="?",
                   help="the command to run (default: the image's)")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARG", help="its arguments")


def add_commands(add: AddCommand) -> None:
    for name, fn, helptext in (("run", cmd_run, "create and start a container"),
                               ("create", cmd_create, "create a container")):
        p = add(name, fn, helptext, add_help=False)
        if name == "run":
            p.add_argument("-d", "--detach", action="store_true",
                           help="print the id and leave it running")
            p.add_argument("--rm", action="store_true", help="remove it once it exits")
            attach.attach_options(p)
        p.add_argument("-i", "--interactive", action="store_true",
                       help="keep stdin open and forward this process's stdin to it")
        _spec_options(p)
    p = add("start", cmd_start, "start one or more containers")
    p.add_argument("-a", "--attach", action="store_true",
                   help="follow its output and exit with its code (one container)")
    p.add_argument("-i", "--interactive", action="store_true",
                   help="with -a, forward stdin (the container must have been created with -i)")
    p.add_argument("--all", action="store_true",
                   help="start every container that is not running (created or exited)")
    p.add_argument("containers", nargs="*", metavar="CTR", help="name or id (prefix)")
    p = add("logs", cmd_logs, "print a container's output")
    p.add_argument("-f", "--follow", action="store_true",
                   help="follow until it exits (several: all at once, lines prefixed)")
    p.add_argument("--tail", type=int, metavar="N", help="only the last N lines")
    p.add_argument("--since", metavar="TIME", help="only lines since TIME (RFC 3339, "
                   "unix seconds, or a duration ago like 10m)")
    p.add_argument("--until", metavar="TIME", help="only lines until TIME")
    p.add_argument("-t", "--timestamps", action="store_true", help="show each line's time")
    p.add_argument("container", metavar="CTR", nargs="+", help="name or id (prefix)")
    p = add("exec", cmd_exec, "run a command in a running container")
    p.add_argument("-i", "--interactive", action="store_true", help="forward stdin")
    attach.attach_options(p, sig_proxy=False)
    p.add_argument("-e", "--env", action="append", default=[], metavar="K=V",
                   help="an environment variable (repeatable)")
    p.add_argument("-w", "--workdir", help="the working directory (default: the container's)")
    p.add_argument("-u", "--user", help="UID[:GID] (default: the container's)")
    p.add_argument("-t", "--tty", action="store_true", help="give the process a terminal")
    p.add_argument("container", metavar="CTR", help="name or id (prefix)")
    p.add_argument("command", metavar="CMD", help="the command to run")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARG", help="its arguments")
    p = add("checkpoint", cmd_checkpoint, "checkpoint a running container (CRIU)")
    p.add_argument("--leave-running", action="store_true",
                   help="keep it running after the checkpoint")
    p.add_argument("--tcp-established", action="store_true",
                   help="checkpoint open TCP connections too")
    p.add_argument("container", metavar="CTR", help="name or id (prefix)")
    p = add("restore", cmd_restore, "restore a checkpointed container")
    p.add_argument("--tcp-established", action="store_true",
                   help="restore open TCP connections too")
    p.add_argument("container", metavar="CTR", help="name or id (prefix)")
    attach.add_commands(add)
