"""``berth cli-server``: the warm command server the C front end talks to
(``berth.cliserver``). ``berth up`` starts one beside the engine; this command runs
one on its own, in the foreground."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from berth.cli import AddCommand

COMMANDS = ("cli-server",)


def cmd_cli_server(args: argparse.Namespace) -> int:
    from berth.cliserver.server import serve
    from workers.worker import DEFAULT_RUN

    return serve(os.environ.get("BERTH_RUN", DEFAULT_RUN))


def add_commands(add: AddCommand) -> None:
    add("cli-server", cmd_cli_server,
        "serve commands to the berth front end from a warm process ($BERTH_RUN/cli.sock)",
        server=True)
