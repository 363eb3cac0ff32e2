"""``berth compose`` verbs on a service's containers: ``exec``, ``run``, ``start``,
``kill``, ``rm``, ``logs``, ``ps``, ``top``, ``images``, ``port``, ``pull``,
``version``. Each finds the project's containers by their names
(``PROJECT-SERVICE-N``) and does what ``berth``'s own verb does on each, through
the same code (the verb's parser and function), so a compose verb behaves as the
container verb it stands for."""

from __future__ import annotations

import argparse
import sys
import uuid
from typing import TYPE_CHECKING, Any

from berth.cli.table import print_table
from berth.compose.lines import Lines, write_lines
from berth.compose.reconciler import observe
from bus.client import Client
from engine.errors import InvalidArgument, NotFound

if TYPE_CHECKING:
    from engine.compose.plan import Observed


def _berth(client: Client, argv: list[str]) -> int:
    """``berth ARGV`` in this process, on this client."""
    from berth.cli import build_parser

    parsed = build_parser(argv[0]).parse_args(argv)
    return int(parsed.fn(parsed, client))


def containers(client: Client, stack: dict[str, Any], services: list[str] | None = None,
               ) -> list[tuple[str, int, Observed]]:
    """The project's containers (service, number, observed), by service then number,
    only those of ``services`` when given (each must be a service of the file)."""
    project: str = stack["name"]
    for service in services or ():
        if service not in stack["services"]:
            raise InvalidArgument(f"no service {service!r} in the project")
    found = []
    for o in observe(client, project):
        parsed = o.replica
        if parsed and (not services or parsed[0] in services):
            found.append((parsed[0], parsed[1], o))
    return sorted(found, key=lambda f: (f[0], f[1]))


def _one(client: Client, stack: dict[str, Any], service: str, index: int) -> Observed:
    for _svc, number, o in containers(client, stack, [service]):
        if number == index:
            return o
    raise NotFound(f"service {service!r} has no container number {index}")


def cmd_exec(args: argparse.Namespace, client: Client, stack: dict[str, Any]) -> int:
    o = _one(client, stack, args.service, args.index)
    # docker compose exec always passes stdin on (a pipe, a file: ``-T`` leaves out only
    # the terminal), and gives a terminal when it has one unless -T.
    argv = ["exec", "-i"]
    if not args.no_tty and sys.stdin.isatty():
        argv += ["-t"]
    for e in args.env:
        argv += ["-e", e]
    if args.user:
        argv += ["-u", args.user]
    if args.workdir:
        argv += ["-w", args.workdir]
    if not args.command:
        raise InvalidArgument("exec needs a command: compose exec SERVICE CMD [ARG...]")
    return _berth(client, [*argv, o.name, *args.command])


def cmd_run(args: argparse.Namespace, client: Client, stack: dict[str, Any]) -> int:
    """A one-off container of the service: its options, the command given, named
    ``PROJECT-SERVICE-run-HEX`` (not a replica's name: the reconciler leaves it
    alone). The project's networks and volumes are made if missing, and the services it
    depends on are brought up first, as ``up`` would (and waited for, by their
    conditions), unless ``--no-deps``: as docker compose runs one."""
    from berth.cli import attach, build_parser
    from berth.compose.reconciler import Reconciler, record, with_dependencies
    from engine import command_types as t
    from engine.compose.model import run_options
    from engine.compose.plan import parse_name
    from engine.containers.spec import spec_from_user

    if args.service not in stack["services"]:
        raise InvalidArgument(f"no service {args.service!r} in the project")
    rec = Reconciler(client, stack)
    deps = list(stack["services"][args.service]["depends_on"])
    if deps and not args.no_deps:
        record(client, stack, t.STACK_APPLY)  # as up: the stack the replicas belong to
        rec.only = with_dependencies(stack, deps)
        rec.converge()
    else:
        rec.volumes()
        rec.networks()
    opts = run_options(stack, args.service, 1)
    opts.pop("ports", None)  # as docker compose run: no published ports (--service-ports)
    if args.command:
        opts["args"] = list(args.command)
        if args.entrypoint is not None:
            opts["entrypoint"] = [args.entrypoint]
    env = [e for e in opts.get("env", []) if e.split("=", 1)[0] not in
           {x.split("=", 1)[0] for x in args.env}]
    opts["env"] = [*env, *args.env]
    if args.user:
        opts["user"] = args.user
    if args.workdir:
        opts["cwd"] = args.workdir
    opts["auto_remove"] = bool(args.rm)
    labels = dict(opts.get("labels") or {})
    labels["com.docker.compose.oneoff"] = "True"
    labels.pop("com.docker.compose.container-number", None)
    opts["labels"] = labels
    name = args.name
    while name is None or parse_name(stack["name"], name) is not None:
        name = f"{stack['name']}-{args.service}-run-{uuid.uuid4().hex[:12]}"
    opts["terminal"] = bool(not args.no_tty and sys.stdin.isatty() and not args.detach)
    spec = spec_from_user(opts)
    rec.pull(args.service, spec)
    if args.detach:
        reply = client.create(name=name, **spec)
        cid = str(reply.result["id"])
        client.start(cid, node=str(reply.result["node"]))
        print(cid)
        return 0
    run_argv = ["run", "--name", name]
    if opts["terminal"]:
        run_argv += ["-i", "-t"]
    parsed = build_parser("run").parse_args([*run_argv, "/", "true"])
    parsed.rm = bool(args.rm)
    return attach.run_attached(parsed, client, spec)


def cmd_start(args: argparse.Namespace, client: Client, stack: dict[str, Any]) -> int:
    from engine.compose.model import order

    rank = {s: i for i, s in enumerate(order(stack))}
    found = containers(client, stack, args.services)
    for _service, _n, o in sorted(found, key=lambda f: (rank.get(f[0], -1), f[1])):
        if o.state in ("created", "exited"):
            client.start(o.id)
            print(f"started {o.name}", file=sys.stderr)
    return 0


def cmd_kill(args: argparse.Namespace, client: Client, stack: dict[str, Any]) -> int:
    from engine.signals import parse_signal

    parse_signal(args.signal)  # a bad signal is refused before any is sent
    for _s, _n, o in containers(client, stack, args.services):
        if o.state in ("running", "paused"):
            client.kill(o.id, args.signal)
            print(f"killed {o.name}", file=sys.stderr)
    return 0


def cmd_rm(args: argparse.Namespace, client: Client, stack: dict[str, Any]) -> int:
    """Stopped containers removed (``-s``: the running ones stopped first, as
    ``compose stop`` does); ``-f`` is accepted: nothing here asks before removing."""
    if args.stop:
        from berth.compose.reconciler import stop_gracefully

        only = {**stack, "services": {s: v for s, v in stack["services"].items()
                                      if not args.services or s in args.services}}
        stop_gracefully(client, only, None)
    for _s, _n, o in containers(client, stack, args.services):
        if o.state in ("created", "exited"):
            client.remove(o.id)
            print(f"removed {o.name}", file=sys.stderr)
    return 0


def cmd_ps(args: argparse.Namespace, client: Client, stack: dict[str, Any]) -> int:
    table = [["NAME", "SERVICE", "STATE", "ID"]]
    for service, _n, o in sorted(containers(client, stack, args.services),
                                 key=lambda f: f[2].name):
        if args.all or o.state in ("running", "paused"):
            table.append([o.name, service, o.state, o.id[:12]])
    print_table(table)
    return 0


def cmd_top(args: argparse.Namespace, client: Client, stack: dict[str, Any]) -> int:
    for _s, _n, o in containers(client, stack, args.services):
        if o.state == "running":
            print(o.name)
            _berth(client, ["top", o.id])
            print()
    return 0


def cmd_images(args: argparse.Namespace, client: Client, stack: dict[str, Any]) -> int:
    table = [["CONTAINER", "IMAGE"]]
    for _s, _n, o in containers(client, stack, args.services):
        spec = client.inspect(o.id).get("spec") or {}
        table.append([o.name, str(spec.get("image") or spec.get("rootfs") or "")])
    print_table(table)
    return 0


def cmd_port(args: argparse.Namespace, client: Client, stack: dict[str, Any]) -> int:
    o = _one(client, stack, args.service, args.index)
    return _berth(client, ["port", o.id, f"{args.port}/{args.protocol}"])


def cmd_pull(args: argparse.Namespace, client: Client, stack: dict[str, Any]) -> int:
    from engine import command_types as t

    for service in args.services or sorted(stack["services"]):
        if service not in stack["services"]:
            raise InvalidArgument(f"no service {service!r} in the project")
        image = stack["services"][service]["options"].get("image")
        if image:
            client.request(client.command(t.IMAGE_PULL, None, None,
                                          {"reference": image, "missing_only": False}),
                           reply_timeout=max(client.timeout, 600.0))
            print(f"pulled {image} for {service}", file=sys.stderr)
    return 0


def cmd_logs(args: argparse.Namespace, client: Client, stack: dict[str, Any]) -> int:
    if args.tail is not None and args.tail < 0:
        raise InvalidArgument(f"invalid --tail {args.tail}: give a number of lines >= 0")
    found = containers(client, stack, args.services)
    follow_logs(client, [(o.id, o.name) for _s, _n, o in found], follow=args.follow,
                tail=args.tail)
    return 0


def follow_logs(client: Client, found: list[tuple[str, str]], *, follow: bool,
                tail: int | None = None) -> None:
    """Every container's log lines, whole, prefixed with its name; ``tail``: each
    container's last lines only; ``follow``: until all have exited (or Ctrl-C)."""
    from collections import deque

    offsets = {cid: (name, 0) for cid, name in found}
    joiner = Lines()
    if tail is not None:  # each container's last lines, then on from its end
        for cid, (name, _offset) in list(offsets.items()):
            last: deque[tuple[str, str]] = deque(maxlen=tail)
            offset = 0
            while True:
                chunk = client.logs(cid, offset=offset, wait_ms=0)
                prefix = f"{name} | "
                last.extend(joiner.feed(cid, prefix, chunk.get("lines", [])))
                if int(chunk["offset"]) == offset or not chunk.get("lines"):
                    break
                offset = int(chunk["offset"])
            write_lines(list(last))
            offsets[cid] = (name, offset)
    while offsets:
        for cid, (name, offset) in list(offsets.items()):
            prefix = f"{name} | "
            chunk = client.logs(cid, offset=offset, wait_ms=200 if follow else 0)
            lines = chunk.get("lines", [])
            write_lines(joiner.feed(cid, prefix, lines))
            offsets[cid] = (name, int(chunk["offset"]))
            if not lines and (not follow or chunk["state"] in ("exited", "removed")):
                write_lines(joiner.rest(cid, prefix))
                del offsets[cid]


def cmd_version(args: argparse.Namespace, client: Client, stack: dict[str, Any]) -> int:
    from berth.cli.system import berth_version

    print(f"berth compose version {berth_version()}")
    return 0


VERBS = {"exec": cmd_exec, "run": cmd_run, "start": cmd_start, "kill": cmd_kill,
         "rm": cmd_rm, "ps": cmd_ps, "top": cmd_top, "images": cmd_images,
         "port": cmd_port, "pull": cmd_pull, "logs": cmd_logs}


def add_verbs(actions: Any) -> None:
    """The verbs' parsers, under ``berth compose``."""
    q = actions.add_parser("exec", help="run a command in a service's running container")
    q.add_argument("-T", dest="no_tty", action="store_true", help="no terminal")
    q.add_argument("-d", "--detach", action="store_true", help="accepted (not supported)")
    q.add_argument("-e", "--env", action="append", default=[], metavar="K=V",
                   help="a variable of the process (repeatable)")
    q.add_argument("-u", "--user", metavar="USER", help="the user it runs as")
    q.add_argument("-w", "--workdir", metavar="DIR", help="its working directory")
    q.add_argument("--index", type=int, default=1, metavar="N",
                   help="which replica (default 1)")
    q.add_argument("service", metavar="SERVICE", help="a service of the file")
    q.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD",
                   help="the command and its arguments")
    q = actions.add_parser("run", help="a one-off container of a service")
    q.add_argument("--rm", action="store_true", help="remove it when it exits")
    q.add_argument("-d", "--detach", action="store_true", help="do not wait for it")
    q.add_argument("-T", dest="no_tty", action="store_true", help="no terminal")
    q.add_argument("-e", "--env", action="append", default=[], metavar="K=V",
                   help="a variable of the process (repeatable)")
    q.add_argument("-u", "--user", metavar="USER", help="the user it runs as")
    q.add_argument("-w", "--workdir", metavar="DIR", help="its working directory")
    q.add_argument("--name", metavar="NAME", help="the one-off container's name")
    q.add_argument("--entrypoint", metavar="CMD", help="its entrypoint instead")
    q.add_argument("--no-deps", action="store_true",
                   help="do not start the services it depends on")
    q.add_argument("service", metavar="SERVICE", help="a service of the file")
    q.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD",
                   help="the command and its arguments")
    for verb, what in (("start", "start the services' stopped containers"),
                       ("top", "the processes of the services' containers"),
                       ("images", "the images of the services' containers"),
                       ("pull", "pull the services' images")):
        q = actions.add_parser(verb, help=what)
        q.add_argument("services", nargs="*", metavar="SERVICE",
                   help="only these services (default: all)")
    q = actions.add_parser("kill", help="send a signal to the services' containers")
    q.add_argument("-s", "--signal", default="KILL", metavar="SIGNAL",
                   help="the signal (default KILL)")
    q.add_argument("services", nargs="*", metavar="SERVICE",
                   help="only these services (default: all)")
    q = actions.add_parser("rm", help="remove the services' stopped containers")
    q.add_argument("-f", "--force", action="store_true", help="accepted: never asks")
    q.add_argument("-s", "--stop", action="store_true", help="stop them first")
    q.add_argument("services", nargs="*", metavar="SERVICE",
                   help="only these services (default: all)")
    q = actions.add_parser("ps", help="the stack's containers")
    q.add_argument("-a", "--all", action="store_true", help="stopped ones too")
    q.add_argument("services", nargs="*", metavar="SERVICE",
                   help="only these services (default: all)")
    q = actions.add_parser("logs", help="the services' logs, whole lines, prefixed")
    q.add_argument("-f", "--follow", action="store_true", help="keep printing until they exit")
    q.add_argument("--tail", type=int, metavar="N", help="each container's last N lines")
    q.add_argument("services", nargs="*", metavar="SERVICE",
                   help="only these services (default: all)")
    q = actions.add_parser("port", help="the host address of a service's container port")
    q.add_argument("--protocol", default="tcp", choices=("tcp", "udp"),
                   help="the port's protocol (default tcp)")
    q.add_argument("--index", type=int, default=1, metavar="N",
                   help="which replica (default 1)")
    q.add_argument("service", metavar="SERVICE", help="a service of the file")
    q.add_argument("port", type=int, metavar="PORT", help="the container port")
    actions.add_parser("version", help="berth's version")
