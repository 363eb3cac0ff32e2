"""The engine's own processes and keys: ``up``, ``down``, ``broker``, ``worker``, ``keys``.

These commands run servers or touch key files, so they talk to no broker; what they
need (the broker, the workers, the daemon) is imported inside each command, off the
client path.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from engine.errors import InvalidArgument

if TYPE_CHECKING:
    from berth.cli import AddCommand

COMMANDS = ("up", "down", "broker", "worker", "keys")


def cmd_up(args: argparse.Namespace) -> int:
    from berth.daemon import run_embedded, start_detached

    if args.metrics:
        from bus.metrics import listen_address

        listen_address(args.metrics)  # refused here, not in the detached process's log
        os.environ["BERTH_METRICS"] = args.metrics

    if args.detach:
        return start_detached(node=args.node)
    return run_embedded(node=args.node)


def cmd_down(args: argparse.Namespace) -> int:
    from berth.daemon import stop_embedded

    return stop_embedded()


def cmd_broker(args: argparse.Namespace) -> int:
    from berth import logs
    from bus.broker import Broker
    from bus.endpoints import default_endpoints, derive_lenient
    from bus.keys import needs_curve
    from bus.security import BrokerSecurity, RateLimit

    logs.configure()
    defaults = default_endpoints()
    if args.bind:  # the worker and event sockets beside it, as BERTH_BUS would place them
        beside = derive_lenient(args.bind)
        defaults = type(defaults)(
            args.bind,
            os.environ.get("BERTH_BUS_WORKERS") or beside.backend or defaults.backend,
            os.environ.get("BERTH_BUS_EVENTS") or beside.events or defaults.events)
    endpoints = (defaults.frontend, args.workers_bind or defaults.backend,
                 args.events_bind or defaults.events)
    security = None
    if any(needs_curve(e) for e in endpoints):
        security = BrokerSecurity.load(args.broker_key, args.authorized_workers,
                                       args.authorized_publishers)
    rate = None if args.rate_limit <= 0 else RateLimit(args.rate_limit, args.burst)
    address = None
    if args.metrics:
        from bus.metrics import listen_address

        address = listen_address(args.metrics)  # refused before anything binds
    pair = None
    if args.peer or args.role:
        from bus.broker import Pair

        if not (args.peer and args.role):
            raise InvalidArgument("a broker pair needs both --peer ENDPOINT and "
                                  "--role primary|backup")
        if "," in endpoints[0]:
            raise InvalidArgument("--bind takes this broker's own endpoint, not a list")
        pair = Pair(args.role, args.state_bind or _state_endpoint(endpoints[0]), args.peer)
    broker = Broker(*endpoints, security=security, rate_limit=rate, pair=pair)
    server = None
    if address is not None:
        from prometheus_client import CollectorRegistry

        from bus.metrics import MetricsServer, broker_metrics, broker_readiness

        registry = CollectorRegistry()
        broker_metrics(broker, registry)
        server = MetricsServer(address, registry, broker_readiness(broker)).start()
    from berth import sdnotify

    sdnotify.notify("READY=1\nSTATUS=routing")  # bound: clients may connect
    try:
        broker.serve_forever()
    finally:
        sdnotify.notify("STOPPING=1")
        if server is not None:
            server.close()
    return 1 if broker.fatal else 0


def _state_endpoint(frontend: str) -> str:
    """Where a pair's broker says its state by default: ``state.sock`` beside an ipc
    frontend, or the frontend's port + 3 on tcp."""
    from bus.endpoints import derive, ipc_path

    path = ipc_path(frontend)
    if path is not None:
        return f"ipc://{path.parent / 'state.sock'}"
    events = derive(frontend).events  # tcp://host:port+2; raises if underivable
    host, _, port = events.rpartition(":")
    return f"{host}:{int(port) + 1}"


def cmd_worker(args: argparse.Namespace) -> int:
    from berth import logs
    from workers.statedirs import PRIVATE_UMASK
    from workers.worker import Worker, WorkerConfig

    logs.configure()
    os.umask(PRIVATE_UMASK)
    config = WorkerConfig(node=args.node, backend=args.connect, metrics=args.metrics or None)
    config.key_file = args.worker_key or config.key_file
    config.server_key_file = args.worker_server_key or config.server_key_file
    config.stream_bind = args.stream_bind or config.stream_bind
    from berth import sdnotify

    Worker(config).serve_forever(
        on_ready=lambda: sdnotify.notify(f"READY=1\nSTATUS=serving node {config.node}"),
        on_stop=lambda: sdnotify.notify("STOPPING=1"))
    from berth.daemon import leave_past_deadline

    leave_past_deadline()
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from bus import keys

    if args.action == "generate" and args.role == "auditor":
        from engine.audit import treehead

        public, secret = treehead.generate(args.name, args.dir or keys.keys_dir())
        print(f"public key: {public}\nsecret key: {secret} (mode 0600: give it to the "
              f"worker as {treehead.ENV_AUDIT_KEY}; give the public key to auditors)")
        return 0
    if args.action == "generate":
        public, secret = keys.generate(args.name, args.dir, force=args.force)
        print(f"public key: {public}\nsecret key: {secret} (mode 0600: keep it on this host)")
        return 0
    dest = keys.authorize(args.file, args.role + "s", name=args.name, directory=args.dir)
    print(f"authorised {args.role} key {dest.name[: -len(keys.PUBLIC_SUFFIX)]!r}: {dest}")
    return 0


def add_commands(add: AddCommand) -> None:
    p = add("up", cmd_up, "run the embedded engine (broker, worker, SQLite)", server=True)
    p.add_argument("-d", "--detach", action="store_true", help="run in the background")
    p.add_argument("--node", default=os.environ.get("BERTH_NODE", "local"),
                   help="this host's node name (default BERTH_NODE or local)")
    p.add_argument("--metrics", metavar="ADDR:PORT", default=os.environ.get("BERTH_METRICS"),
                   help="serve Prometheus /metrics and /ready there (default BERTH_METRICS; "
                        "off when unset)")
    add("down", cmd_down, "stop the embedded engine (containers keep running)", server=True)
    p = add("broker", cmd_broker, "run the broker alone", server=True)
    p.add_argument("--bind", default=None, help="frontend endpoint (default BERTH_BUS); the "
                   "worker and event endpoints default to beside it")
    p.add_argument("--workers-bind", default=None,
                   help="the endpoint workers connect to (default BERTH_BUS_WORKERS)")
    p.add_argument("--events-bind", default=None,
                   help="the event publishing endpoint (default BERTH_BUS_EVENTS)")
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
    p.add_argument("--role", choices=["primary", "backup"],
                   help="this broker's role in a Binary Star pair (with --peer)")
    p.add_argument("--peer", metavar="ENDPOINT",
                   help="the pair's other broker's state endpoint (its --state-bind)")
    p.add_argument("--state-bind", metavar="ENDPOINT",
                   help="where this broker says its state to its peer (default: state.sock "
                        "beside an ipc --bind, or its port + 3 on tcp)")
    p.add_argument("--metrics", metavar="ADDR:PORT", default=os.environ.get("BERTH_METRICS"),
                   help="serve Prometheus /metrics and /ready there (default BERTH_METRICS; "
                        "off when unset)")
    p = add("worker", cmd_worker, "run a worker for one node", server=True)
    p.add_argument("--node", required=True, help="the node this worker serves")
    p.add_argument("--connect", default=os.environ.get("BERTH_BUS_WORKERS"),
                   help="broker's worker endpoint")
    p.add_argument("--key", dest="worker_key", metavar="FILE",
                   help="this worker's secret CURVE key file, for tcp (default BERTH_KEY)")
    p.add_argument("--server-key", dest="worker_server_key", metavar="FILE",
                   help="the broker's public CURVE key file (default BERTH_SERVER_KEY)")
    p.add_argument("--stream-bind", metavar="ENDPOINT",
                   help="on a tcp bus, where the stdio stream socket binds, tcp://HOST:PORT "
                        "(default BERTH_STREAM_BIND, else an ephemeral port on the address "
                        "that reaches the broker)")
    p.add_argument("--metrics", metavar="ADDR:PORT", default=os.environ.get("BERTH_METRICS"),
                   help="serve Prometheus /metrics and /ready there (default BERTH_METRICS; "
                        "off when unset)")
    p = add("keys", cmd_keys, "CURVE keys for a bus on tcp", server=True)
    keys_sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    k = keys_sub.add_parser("generate", help="write NAME.key and NAME.key_secret "
                                              "(--role auditor: NAME.audit_key[_secret])")
    k.add_argument("name", metavar="NAME", help="the key pair's name")
    k.add_argument("--role", choices=["curve", "auditor"], default="curve",
                   help="auditor: an Ed25519 key that signs the log's tree heads")
    k.add_argument("--dir", help="where (default $BERTH_ROOT/keys)")
    k.add_argument("--force", action="store_true", help="replace an existing pair")
    k = keys_sub.add_parser("authorize", help="let the broker admit a public key")
    k.add_argument("role", choices=["worker", "publisher", "auditor"],
                   help="auditor: a CURVE key that may only query and read the audit log")
    k.add_argument("file", metavar="FILE.key", help="the public key file")
    k.add_argument("--name", help="the identity it gets (default: the file's name)")
    k.add_argument("--dir",
                   help="the authorised directory (default per role, under $BERTH_ROOT/keys)")
