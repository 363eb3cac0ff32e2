"""Network commands: ``berth network create|ls|inspect|rm`` and ``berth port``, as
podman has them."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from berth.cli.table import print_table
from bus.client import Client

if TYPE_CHECKING:
    from berth.cli import AddCommand

COMMANDS = ("network",)


def cmd_network(args: argparse.Namespace, client: Client) -> int:
    match args.action:
        case "create":
            reply = client.network_create(args.name, subnet=args.subnet, gateway=args.gateway,
                                          node=args.node)
            print(reply.result.get("name", args.name))
        case "ls":
            rows = client.networks(node=args.node)
            if args.format == "json":
                for row in rows:
                    print(json.dumps(row, sort_keys=True))
            else:
                print_table([["NAME", "DRIVER", "SUBNET", "GATEWAY", "BRIDGE", "CONTAINERS"]]
                       + [[str(r["name"]), str(r.get("driver", "bridge")), str(r["subnet"]),
                           str(r["gateway"]), str(r["bridge"]), str(r.get("containers", 0))]
                          for r in rows])
        case "inspect":
            print(json.dumps(client.network_inspect(args.name, node=args.node), indent=2,
                             sort_keys=True))
        case "exists":
            from berth.cli.exists import exists

            return exists(lambda: client.network_inspect(args.name, node=args.node))
        case "rm":
            client.network_remove(args.name, node=args.node)
            print(args.name)
        case "prune":
            # every network no container is attached to, but the default one
            from engine.networks.rules import DEFAULT_NAME

            for row in client.networks(node=args.node):
                if row.get("containers", 0) or row["name"] == DEFAULT_NAME:
                    continue
                client.network_remove(str(row["name"]), node=args.node)
                print(row["name"])
    return 0




def add_commands(add: AddCommand) -> None:
    p = add("network", cmd_network, "manage networks (create, ls, inspect, rm)")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create a bridge network")
    create.add_argument("--subnet", metavar="CIDR", help="IPv4 subnet (default: a free "
                        "10.89.N.0/24)")
    create.add_argument("--gateway", metavar="IP", help="the bridge's address (default: "
                        "the subnet's first)")
    create.add_argument("name", metavar="NAME", help="the network's name")
    ls = actions.add_parser("ls", help="list networks")
    ls.add_argument("--format", choices=["table", "json"], default="table",
                    help="table (default) or one JSON array")
    inspect = actions.add_parser("inspect", help="a network as JSON, with its containers")
    inspect.add_argument("name", metavar="NAME", help="the network's name")
    rm = actions.add_parser("rm", help="remove a network no container is attached to")
    rm.add_argument("name", metavar="NAME", help="the network's name")
    exists = actions.add_parser("exists", help="exit 0 if the network exists, 1 if not")
    exists.add_argument("name", metavar="NAME", help="the network's name")
    prune = actions.add_parser("prune", help="remove every network no container is "
                               "attached to (but the default one)")
    prune.add_argument("-f", "--force", action="store_true",
                       help="podman's: do not ask (berth never asks)")
    for sub in (create, ls, inspect, rm, exists, prune):
        sub.add_argument("--node", help="the node whose worker answers")
