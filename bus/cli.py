"""The ``berth`` command line, podman-like.

Import discipline: this module and everything it imports at the top stay on the
client path (``bus.client``, zmq, msgpack), so ``berth ps`` starts cheaply. The
engine's store and runtime are imported only inside the commands that run
servers (``up``, ``worker``, ``db``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from bus import cli_format as fmt
from bus.client import Client
from engine.errors import BerthError, Unavailable

Handler = Callable[[argparse.Namespace, Client], int]


def _client(args: argparse.Namespace) -> Client:
    curve = None
    if args.client_key or args.client_server_key:
        from bus.keys import client_keys_from_env

        curve = client_keys_from_env(key_file=args.client_key,
                                     server_key_file=args.client_server_key)
    return Client(timeout=args.timeout, curve=curve)


# -- servers ---------------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> int:
    from workers.embedded import run_embedded, start_detached

    if args.detach:
        return start_detached(node=args.node)
    return run_embedded(node=args.node)


def cmd_down(args: argparse.Namespace) -> int:
    from workers.embedded import stop_embedded

    return stop_embedded()


def cmd_broker(args: argparse.Namespace) -> int:
    import logging

    from bus.broker import Broker
    from bus.endpoints import default_endpoints
    from bus.keys import needs_curve
    from bus.security import BrokerSecurity, RateLimit

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    defaults = default_endpoints()
    endpoints = (args.bind or defaults.frontend, args.workers_bind or defaults.backend,
                 args.events_bind or defaults.events)
    security = None
    if any(needs_curve(e) for e in endpoints):
        security = BrokerSecurity.load(args.broker_key, args.authorized_workers,
                                       args.authorized_publishers)
    rate = None if args.rate_limit <= 0 else RateLimit(args.rate_limit, args.burst)
    broker = Broker(*endpoints, security=security, rate_limit=rate)
    broker.serve_forever()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from workers.worker import Worker, WorkerConfig

    config = WorkerConfig(node=args.node, backend=args.connect)
    config.key_file = args.worker_key or config.key_file
    config.server_key_file = args.worker_server_key or config.server_key_file
    Worker(config).serve_forever()
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from bus import keys

    if args.action == "generate":
        public, secret = keys.generate(args.name, args.dir, force=args.force)
        print(f"public key: {public}\nsecret key: {secret} (mode 0600: keep it on this host)")
        return 0
    dest = keys.authorize(args.file, args.role + "s", name=args.name, directory=args.dir)
    print(f"authorised {args.role} key {dest.name[: -len(keys.PUBLIC_SUFFIX)]!r}: {dest}")
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from migrations.runner import current_revision, upgrade
    from workers.worker import WorkerConfig

    url = WorkerConfig().database
    upgrade(url)
    print(f"database at revision {current_revision(url)}")
    return 0


# -- containers -------------------------------------------------------------------------


def _spec_args(args: argparse.Namespace) -> dict[str, Any]:
    rootfs = os.path.abspath(args.rootfs) if not os.path.isabs(args.rootfs) else args.rootfs
    ports = [fmt.parse_port(p) for p in args.publish]
    spec: dict[str, Any] = {
        "rootfs": rootfs,
        "args": [args.command, *args.args],
        "env": list(args.env),
        "cwd": args.workdir,
        "user": args.user,
        "hostname": args.hostname or "",
        "terminal": bool(args.tty),
        "read_only": bool(args.read_only),
        "auto_remove": bool(getattr(args, "rm", False)),
        "ports": ports,
    }
    if args.stop_signal is not None:
        spec["stop_signal"] = args.stop_signal
    if args.memory is not None:
        spec["memory"] = fmt.parse_size(args.memory)
    if args.pids_limit is not None:
        spec["pids_limit"] = args.pids_limit
    return spec


def cmd_create(args: argparse.Namespace, client: Client) -> int:
    reply = client.create(name=args.name, node=args.node, **_spec_args(args))
    print(reply.result["id"])
    return 0


def cmd_run(args: argparse.Namespace, client: Client) -> int:
    if args.detach:
        reply = client.create(name=args.name, node=args.node, **_spec_args(args))
        cid = str(reply.result["id"])
        client.start(cid, node=str(reply.result["node"]))
        print(cid)
        return 0
    # Attached --rm is done here, as podman does: the worker removing the container
    # would race this client for the last lines of its log.
    spec = _spec_args(args)
    spec["auto_remove"] = False
    reply = client.create(name=args.name, node=args.node, **spec)
    cid, node = str(reply.result["id"]), str(reply.result["node"])
    try:
        client.start(cid, node=node)
        return _follow_until_exit(client, cid, node)
    finally:
        if args.rm:
            client.remove(cid, force=True, node=node)


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
    if reply.result.get("interrupted"):
        print("berth: the exec session had started when its worker stopped; its exit code is unknown",
              file=sys.stderr)
        return 125
    sys.stdout.write(str(reply.result.get("output", "")))
    sys.stdout.flush()
    return int(reply.result["exit_code"])


def cmd_checkpoint(args: argparse.Namespace, client: Client) -> int:
    with fmt.Progress(f"checkpointing {args.container}"):
        client.checkpoint(args.container, leave_running=args.leave_running, tcp_established=args.tcp_established)
    print(args.container)
    return 0


def cmd_restore(args: argparse.Namespace, client: Client) -> int:
    with fmt.Progress(f"restoring {args.container}"):
        client.restore(args.container, tcp_established=args.tcp_established)
    print(args.container)
    return 0


# -- the log ----------------------------------------------------------------------------


def cmd_events(args: argparse.Namespace, client: Client) -> int:
    filters = fmt.parse_filters(args.filter)
    since = fmt.parse_time(args.since) if args.since else None
    until = fmt.parse_time(args.until) if args.until else None
    names = fmt.NameCache(client)
    container = client.resolve(filters["container"]).id if "container" in filters else None
    types = [filters["type"]] if "type" in filters else None
    query: dict[str, Any] = {"container": container, "types": types, "since": since, "until": until}
    query = {k: v for k, v in query.items() if v is not None}
    after = 0
    while True:
        result = client.send("query.events", after=after, limit=500, **query).result
        from bus.protocol import parse_events_result

        events, head = parse_events_result(result)
        for event in events:
            fmt.print_event(event, names, args.format)
        if not events:
            break
        after = events[-1].position
    if not args.follow:
        return 0
    last = max(after, head)
    with client.subscribe(from_position=last + 1, types=types, container=container) as sub:
        for event in sub:
            if until is not None and event.recorded_at > until:
                return 0
            fmt.print_event(event, names, args.format)
            sys.stdout.flush()
    return 0


def cmd_history(args: argparse.Namespace, client: Client) -> int:
    from bus.protocol import parse_events_result

    events, _ = parse_events_result(client.history(args.container))
    names = fmt.NameCache(client)
    if args.format == "json":
        for event in events:
            fmt.print_event(event, names, "json")
    else:
        fmt.print_history(events)
    return 0


def cmd_state(args: argparse.Namespace, client: Client) -> int:
    at: dict[str, Any] = {}
    if args.at is not None:
        at["at_time"] = fmt.parse_time(args.at)
    if args.at_position is not None:
        at["at_position"] = args.at_position
    result = client.send("query.state", args.container, **at).result
    fmt.print_rows(result.get("containers", []), args.format == "json" or bool(args.container))
    return 0


def cmd_projection(args: argparse.Namespace, client: Client) -> int:
    result = client.send("admin.rebuild", verify=args.verify, reply_timeout=600).result
    print(f"rebuilt the read model: {result['containers']} containers")
    if args.verify:
        differences = result.get("differences") or []
        for line in differences:
            print(f"  difference: {line}")
        print("verified: rebuild equals the incremental read model" if not differences else "verification FAILED")
        return 0 if not differences else 1
    return 0


def cmd_audit(args: argparse.Namespace, client: Client) -> int:
    result = client.verify_audit()
    if result["ok"]:
        print(f"audit chain verified up to position {result['head']} (head hash {result['hash']})")
        return 0
    print(f"audit chain BROKEN at position {result['first_break']}", file=sys.stderr)
    return 1


# -- parser -----------------------------------------------------------------------------


def _spec_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name")
    p.add_argument("-e", "--env", action="append", default=[], metavar="K=V")
    p.add_argument("-w", "--workdir", default="/")
    p.add_argument("-u", "--user", default="0:0", metavar="UID[:GID]")
    p.add_argument("--hostname")
    p.add_argument("--stop-signal")
    p.add_argument("-p", "--publish", action="append", default=[], metavar="[IP:]HOST:CTR[/PROTO]")
    p.add_argument("--memory", metavar="BYTES")
    p.add_argument("--pids-limit", type=int)
    p.add_argument("--read-only", action="store_true")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("--node")
    p.add_argument("rootfs", metavar="ROOTFS")
    p.add_argument("command", metavar="CMD")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARG")


COMMANDS = (
    "up", "down", "broker", "worker", "db", "keys", "run", "create", "start", "stop", "kill",
    "pause", "unpause", "rm", "wait", "logs", "inspect", "ps", "exec", "checkpoint", "restore",
    "events", "history", "state", "projection", "audit",
)


class _Unused:
    """Stands in for the sub-parsers a command line does not name: building all 26
    costs ~40 ms of argparse and gettext look-ups on every start."""

    def add_argument(self, *args: Any, **kwargs: Any) -> _Unused:
        return self

    def add_mutually_exclusive_group(self, *args: Any, **kwargs: Any) -> _Unused:
        return self

    def add_subparsers(self, *args: Any, **kwargs: Any) -> _Unused:
        return self

    def add_parser(self, *args: Any, **kwargs: Any) -> _Unused:
        return self

    def set_defaults(self, **kwargs: Any) -> None:
        pass


def _command_word(argv: list[str]) -> str | None:
    """The sub-command named on the command line, if it is a known one."""
    takes_value = {"--timeout", "--key", "--server-key"}
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word in takes_value:
            skip = True
        elif not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or (``only``) the top level and one sub-command."""
    parser = argparse.ArgumentParser(prog="berth", description="An event-sourced container engine.")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each reply")
    parser.add_argument("--key", dest="client_key", metavar="FILE",
                        help="this client's secret CURVE key file, for a tcp bus (default BERTH_KEY)")
    parser.add_argument("--server-key", dest="client_server_key", metavar="FILE",
                        help="the broker's public CURVE key file (default BERTH_SERVER_KEY)")
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def add(name: str, fn: Any, help: str, *, server: bool = False) -> Any:
        if only is not None and name != only:
            return _Unused()
        p = sub.add_parser(name, help=help)
        p.set_defaults(fn=fn, server=server)
        return p

    p = add("up", cmd_up, "run the embedded engine (broker, worker, SQLite)", server=True)
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("--node", default=os.environ.get("BERTH_NODE", "local"))
    add("down", cmd_down, "stop the embedded engine (containers keep running)", server=True)
    p = add("broker", cmd_broker, "run the broker alone", server=True)
    p.add_argument("--bind", default=None, help="frontend endpoint (default BERTH_BUS)")
    p.add_argument("--workers-bind", default=None)
    p.add_argument("--events-bind", default=None)
    p.add_argument("--key", dest="broker_key", metavar="FILE",
                   help="the broker's secret CURVE key file, needed on tcp "
                        "(default BERTH_BROKER_KEY or $BERTH_ROOT/keys/broker.key_secret)")
    p.add_argument("--authorized-workers", metavar="DIR",
                   help="public keys of the workers it admits "
                        "(default BERTH_AUTHORIZED_WORKERS or $BERTH_ROOT/keys/authorized/workers)")
    p.add_argument("--authorized-publishers", metavar="DIR",
                   help="public keys of the clients and subscribers it admits (default "
                        "BERTH_AUTHORIZED_PUBLISHERS or $BERTH_ROOT/keys/authorized/publishers)")
    p.add_argument("--rate-limit", type=float, default=1000.0, metavar="N",
                   help="commands a second per peer (0: unlimited)")
    p.add_argument("--burst", type=int, default=2000, metavar="N",
                   help="commands a peer may send at once above its rate")
    p = add("worker", cmd_worker, "run a worker for one node", server=True)
    p.add_argument("--node", required=True)
    p.add_argument("--connect", default=os.environ.get("BERTH_BUS_WORKERS"), help="broker's worker endpoint")
    p.add_argument("--key", dest="worker_key", metavar="FILE",
                   help="this worker's secret CURVE key file, for tcp (default BERTH_KEY)")
    p.add_argument("--server-key", dest="worker_server_key", metavar="FILE",
                   help="the broker's public CURVE key file (default BERTH_SERVER_KEY)")
    p = add("keys", cmd_keys, "CURVE keys for a bus on tcp", server=True)
    keys_sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    k = keys_sub.add_parser("generate", help="write NAME.key and NAME.key_secret")
    k.add_argument("name", metavar="NAME")
    k.add_argument("--dir", help="where (default $BERTH_ROOT/keys)")
    k.add_argument("--force", action="store_true", help="replace an existing pair")
    k = keys_sub.add_parser("authorize", help="let the broker admit a public key")
    k.add_argument("role", choices=["worker", "publisher"])
    k.add_argument("file", metavar="FILE.key")
    k.add_argument("--name", help="the identity it gets (default: the file's name)")
    k.add_argument("--dir", help="the authorised directory (default per role, under $BERTH_ROOT/keys)")
    p = add("db", cmd_db, "database maintenance", server=True)
    p.add_argument("action", choices=["upgrade"])

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
    p = add("events", cmd_events, "the event log")
    p.add_argument("--since")
    p.add_argument("--until")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--follow", action="store_true")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p = add("history", cmd_history, "a container's audit trail")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("container", metavar="CTR")
    p = add("state", cmd_state, "state as it was at a past moment, from the log")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--at", metavar="T")
    g.add_argument("--at-position", type=int, metavar="N")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("container", nargs="?", metavar="CTR")
    p = add("projection", cmd_projection, "rebuild the read model from the log")
    p.add_argument("action", choices=["rebuild"])
    p.add_argument("--verify", action="store_true")
    p = add("audit", cmd_audit, "verify the log's hash chain")
    p.add_argument("action", choices=["verify"])
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(_command_word(argv)).parse_args(argv)
    try:
        if args.server:
            return int(args.fn(args))
        with _client(args) as client:
            return int(args.fn(args, client))
    except Unavailable as exc:
        print(f"berth: {exc} (is the engine running? start it with 'berth up -d')", file=sys.stderr)
        return exc.exit_code
    except BerthError as exc:
        print(f"berth: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
