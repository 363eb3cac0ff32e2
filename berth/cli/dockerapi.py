"""``berth api``: the Docker Engine API on a unix socket, against a running broker
(as ``podman system service``). ``berth up`` runs one beside the engine."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from berth.cli import AddCommand

COMMANDS = ("api",)


def cmd_api(args: argparse.Namespace) -> int:
    from berth import logs
    from berth.dockerapi import bind_path, serve, socket_path
    from bus.endpoints import DEFAULT_RUN_DIR

    logs.configure()
    run_dir = os.environ.get("BERTH_RUN", DEFAULT_RUN_DIR)
    path = bind_path(args.bind) if args.bind else socket_path(run_dir, "1")
    assert path is not None
    try:
        return serve(path)
    except OSError as e:
        print(f"berth api: {e}", file=sys.stderr)
        return 125


def add_commands(add: AddCommand) -> None:
    p = add("api", cmd_api, "serve the Docker Engine API on a unix socket "
                            "($BERTH_RUN/docker.sock)", server=True)
    p.add_argument("--bind", metavar="unix:///PATH",
                   help="the socket to serve on (default $BERTH_RUN/docker.sock)")
