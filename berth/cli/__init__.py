"""The ``berth`` command line, podman-like: one module per noun.

Import discipline: this package and everything its modules import at the top stay on
the client path (``bus.client``, zmq, msgpack, ``engine.errors``), so ``berth ps``
starts cheaply. The broker, the workers, the store and the migrations are imported
only inside the commands that run servers (``up``, ``broker``, ``worker``, ``db``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, NoReturn, Protocol

from berth import config
from berth.cli import (
    cliserver,
    compose,
    containers,
    db,
    dockerapi,
    engine,
    events,
    files,
    forms,
    globalopts,
    images,
    listing,
    networks,
    orchestration,
    several,
    system,
    volumes,
)
from berth.cliserver.protocol import first_word
from bus.client import Client
from engine.errors import BerthError, Unavailable

# The order of the nouns is the order of the commands in ``berth --help``.
NOUNS = (engine, db, containers, listing, several, files, images, volumes, networks,
         orchestration, compose, system, cliserver, dockerapi, events)
COMMANDS: tuple[str, ...] = tuple(name for noun in NOUNS for name in noun.COMMANDS)


class AddCommand(Protocol):
    """Adds one sub-command's parser, or a stand-in when the command line names another."""

    def __call__(self, name: str, fn: Callable[..., int], help: str, *,
                 server: bool = False, add_help: bool = True) -> Any: ...


def _client(args: argparse.Namespace) -> Client:
    curve = None
    if args.client_key or args.client_server_key:
        from bus.keys import client_keys_from_env

        curve = client_keys_from_env(key_file=args.client_key,
                                     server_key_file=args.client_server_key)
    return Client(timeout=args.timeout, curve=curve)


class _Unused:
    """Stands in for the sub-parsers a command line does not name: building all 27
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


USAGE_EXIT = 125
"""podman's exit code for a usage error (argparse's own is 2, which a container's
command may well return: ``berth run ... ; echo $?`` must tell the two apart)."""


class _Version(argparse.Action):
    """``--version``: the installed version, looked up only when asked for."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print berth's version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        from berth.cli.system import berth_version

        print(f"berth version {berth_version()}")
        parser.exit(0)


class Parser(argparse.ArgumentParser):
    """argparse with podman's exit code for a usage error."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(USAGE_EXIT, f"{self.prog}: error: {message}\n")


def _command_word(argv: list[str]) -> str | None:
    """The sub-command named on the command line, if it is a known one."""
    word = first_word(argv)
    return word if word in COMMANDS else None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or (``only``) the top level and one sub-command."""
    parser = Parser(prog="berth", description="An event-sourced container engine.")
    parser.add_argument("--version", action=_Version)
    # podman's global options (--root, --runroot, --log-level, --noout, --out, ...) are
    # taken off argv before this parser runs (globalopts); listed here for --help.
    parser.add_argument("--root", metavar="DIR", help="the engine's state directory "
                        "(sets BERTH_ROOT)")
    parser.add_argument("--runroot", metavar="DIR", help="the engine's run directory "
                        "(sets BERTH_RUN)")
    parser.add_argument("--log-level", metavar="LEVEL", help="print the CLI's messages "
                        "from LEVEL up on stderr (trace, debug, info, warn, error)")
    parser.add_argument("--out", metavar="FILE", help="write standard output to FILE")
    parser.add_argument("--noout", action="store_true", help="discard standard output")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds to wait for each reply")
    parser.add_argument("--key", dest="client_key", metavar="FILE",
                        help="this client's secret CURVE key file, for a tcp bus "
                             "(default BERTH_KEY)")
    parser.add_argument("--server-key", dest="client_server_key", metavar="FILE",
                        help="the broker's public CURVE key file (default BERTH_SERVER_KEY)")
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable[..., int], help: str, *, server: bool = False,
            add_help: bool = True) -> Any:
        if only is not None and name != only:
            return _Unused()
        p = sub.add_parser(name, help=help, add_help=add_help)
        p.set_defaults(fn=fn, server=server)
        return p

    for noun in NOUNS:
        noun.add_commands(add)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        given, argv = globalopts.split(argv)
        globalopts.apply(given, argv)
        argv = forms.podman_forms(argv)
        config.apply()  # before the parser: its defaults read the environment
    except BerthError as exc:
        print(f"berth: {exc}", file=sys.stderr)
        return exc.exit_code
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
