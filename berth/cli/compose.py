"""``berth compose``: a Compose file read, checked and handed to the reconciler
(``berth.compose.reconciler``), which converges the stack on this side of the bus.
``up`` without ``-d`` keeps it running (``berth.compose.follow``)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import TYPE_CHECKING, Any

from berth.compose.reconciler import (
    Reconciler,
    record,
    remove_containers,
    stop_gracefully,
    with_dependencies,
)
from bus.client import Client
from engine import command_types as t
from engine.errors import BerthError, NotFound

if TYPE_CHECKING:
    from berth.cli import AddCommand
    from engine.compose.plan import Observed

COMMANDS = ("compose",)

DEFAULT_FILES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
"""Looked for in the working directory without ``-f``, the first found taken, as
docker compose looks for them."""
OVERRIDE_FILES = ("compose.override.yaml", "compose.override.yml",
                  "docker-compose.override.yaml", "docker-compose.override.yml")
"""Merged over the default file found, from its directory (the first found of these)."""
MAX_ENV_FILE = 1024 * 1024
MAX_EXTENDED_FILES = 16


def compose_files(given: list[str] | None) -> list[str]:
    """The files of the project: ``-f`` as given (repeated: merged in order), else
    the working directory's default file and its override."""
    if given:
        return given
    for name in DEFAULT_FILES:
        if os.path.lexists(name):
            found = [name]
            for override in OVERRIDE_FILES:
                if os.path.lexists(override):
                    found.append(override)
                    break
            return found
    raise BerthError(f"no compose file here: none of {', '.join(DEFAULT_FILES)} (name one "
                     "with -f)")


def _environment(args: argparse.Namespace, project_dir: str) -> dict[str, str]:
    """What the file's variables are taken from: ``--env-file`` (repeated: the later
    wins) or else the project directory's ``.env``, under the environment of
    ``berth compose`` itself, which wins (as docker compose takes them)."""
    from engine.compose.interpolate import parse_dotenv
    from engine.hostfiles import read_regular

    env: dict[str, str] = {}
    names = list(args.env_file or [])
    if not names and os.path.isfile(os.path.join(project_dir, ".env")):
        names = [os.path.join(project_dir, ".env")]
    for name in names:
        raw = read_regular(os.path.abspath(name), MAX_ENV_FILE, f"env file {name}")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BerthError(f"env file {name} is not UTF-8") from None
        env.update(parse_dotenv(text, name))
    env.update(os.environ)
    return env


def _stack(args: argparse.Namespace) -> dict[str, Any]:
    """The files' normalised stack (``engine.compose.model``): each read, its
    variables interpolated, merged in order; not yet checked as the engine takes it
    (``engine.compose.checks``)."""
    from engine.compose import model, source
    from engine.compose.interpolate import interpolate
    from engine.compose.merge import merge_files, resolve_extends, select_profiles
    from engine.hostfiles import read_regular

    files = compose_files(args.file)
    base = os.path.dirname(os.path.abspath(files[0]))
    env = _environment(args, base)
    loaded = []
    for name in files:
        text = read_regular(os.path.abspath(name), source.MAX_FILE_BYTES,
                            f"compose file {name}")
        loaded.append(interpolate(source.load(text, where=name), env))
    data = merge_files(loaded)
    others: dict[str, dict[str, Any]] = {}

    def load(name: str) -> dict[str, Any]:
        """A file ``extends.file`` names, relative to the project directory, read once."""
        path = os.path.normpath(os.path.join(base, name))
        if path not in others:
            if len(others) >= MAX_EXTENDED_FILES:
                raise BerthError(f"more than {MAX_EXTENDED_FILES} files named by extends")
            text = read_regular(path, source.MAX_FILE_BYTES, f"compose file {name}")
            others[path] = interpolate(source.load(text, where=name), env)
        return others[path]

    data = resolve_extends(data, load)
    profiles = [*(args.profile or []),
                *(p for p in env.get("COMPOSE_PROFILES", "").split(",") if p)]
    data = select_profiles(data, profiles)
    named = data.get("name") if isinstance(data.get("name"), str) else None
    project = (args.project or env.get("COMPOSE_PROJECT_NAME") or named
               or os.path.basename(base))
    if args.project or env.get("COMPOSE_PROJECT_NAME"):
        data = {**data, "name": project}
    return model.normalise(data, project=str(project), base_dir=base, environ=env)


def cmd_compose(args: argparse.Namespace, client: Client) -> int:
    stack = _stack(args)
    if args.action in ("config", "up"):
        from engine.compose.checks import check_stack

        # Before anything is recorded or sent: the whole stack as the engine takes it
        # (a stack.applied the engine then refused would stay in the log for good).
        check_stack(stack)
    match args.action:
        case "config":
            import yaml

            print(yaml.safe_dump(stack, sort_keys=True, default_flow_style=False), end="")
        case "up":
            record(client, stack, t.STACK_APPLY)
            rec = Reconciler(client, stack)
            if args.services:
                rec.only = with_dependencies(stack, args.services)
            if not args.detach:
                from berth.compose.follow import Foreground

                return Foreground(client, rec, stop_timeout=args.stop_timeout).run()
            rec.converge()
        case "down":
            # Recorded first: a foreground ``up`` following the log stops replacing the
            # containers this removes as soon as it reads it.
            record(client, stack, t.STACK_REMOVE, volumes=bool(args.volumes))
            stop_gracefully(client, stack, args.grace)
            _down(client, stack, args.volumes)
            if args.rmi == "all":
                _remove_images(client, stack)
        case "stop":
            stop_gracefully(client, stack, args.grace)
        case "restart":
            stopped = stop_gracefully(client, stack, args.grace)
            _start_in_order(client, stack, stopped)
        case _:
            from berth.cli.compose_verbs import VERBS, cmd_version

            if args.action == "version":
                return cmd_version(args, client, stack)
            return VERBS[args.action](args, client, stack)
    return 0


def _start_in_order(client: Client, stack: dict[str, Any], stopped: list[Observed]) -> None:
    """``restart``'s second half: what was running, started again dependencies first."""
    from engine.compose.model import order

    rank = {s: i for i, s in enumerate(order(stack))}

    def place(o: Observed) -> tuple[int, str]:
        parsed = o.replica
        return rank.get(parsed[0] if parsed else "", -1), o.name

    for o in sorted(stopped, key=place):
        client.start(o.id)
        print(f"restarted {o.name}", file=sys.stderr)


def _down(client: Client, stack: dict[str, Any], volumes: bool) -> None:
    down = remove_containers(client, stack)
    for net in stack.get("networks", []):
        with contextlib.suppress(NotFound):  # removed before, or never made
            client.network_remove(f"{down.project}_{net}")
            print(f"removed network {down.project}_{net}", file=sys.stderr)
    if volumes:
        names = [f"{down.project}_{v}" for v in stack["volumes"]]
        for name in client.volume_remove(*names, force=True) if names else []:
            print(f"removed volume {name}", file=sys.stderr)


def _remove_images(client: Client, stack: dict[str, Any]) -> None:
    """``down --rmi all``: each service's image, once its containers are gone; one
    another container still uses is kept and said so (docker compose goes on too)."""
    images = sorted({str(s["options"]["image"]) for s in stack["services"].values()
                     if s["options"].get("image")})
    for ref in images:
        try:
            client.request(client.command(t.IMAGE_REMOVE, None, None, {"references": [ref]}))
            print(f"removed image {ref}", file=sys.stderr)
        except NotFound:
            continue
        except BerthError as exc:
            print(f"image {ref} kept: {exc}", file=sys.stderr)


def add_commands(add: AddCommand) -> None:
    p = add("compose", cmd_compose, "run a Compose file's stack")
    p.add_argument("-f", "--file", action="append", metavar="FILE",
                   help="a Compose file (repeatable: merged in order; default "
                        "compose.yaml, compose.yml, docker-compose.yaml or "
                        "docker-compose.yml, and its compose.override.yaml)")
    p.add_argument("--profile", action="append", metavar="NAME",
                   help="enable the services of this profile (repeatable; also "
                        "COMPOSE_PROFILES=a,b)")
    p.add_argument("--env-file", action="append", metavar="FILE",
                   help="variables for the file (repeatable; default: the project "
                        "directory's .env; the environment wins)")
    p.add_argument("-p", "--project-name", dest="project", metavar="NAME",
                   help="the project (default: the file's name: key, else its directory)")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = actions.add_parser("up", help="create and start the stack's containers")
    q.add_argument("-d", "--detach", action="store_true",
                   help="return once converged (without: keep it converged until "
                        "interrupted, then stop its containers)")
    q.add_argument("-t", "--timeout", dest="stop_timeout", type=float, default=10.0,
                   metavar="SECONDS",
                   help="when interrupted, how long each container has to stop before it "
                        "is killed (default 10)")
    q.add_argument("services", nargs="*", metavar="SERVICE",
                   help="only these services (and those they depend on)")
    q = actions.add_parser("down", help="stop (gracefully) and remove the stack's containers")
    q.add_argument("-v", "--volumes", action="store_true", help="and its named volumes")
    q.add_argument("--rmi", choices=("all", "local"),
                   help="and the services' images: all of them; local: those without a "
                        "custom tag, which only a build makes (berth builds none: none)")
    q.add_argument("--remove-orphans", action="store_true",
                   help="accepted: down removes every container of the project already, "
                        "those of services the file no longer has too")
    _timeout_flag(q)
    q = actions.add_parser("stop", help="stop the stack's containers (keeping them)")
    _timeout_flag(q)
    actions.add_parser("config", help="print the normalised stack")
    from berth.cli.compose_verbs import add_verbs

    add_verbs(actions)
    q = actions.add_parser("restart", help="stop and start the stack's running containers")
    _timeout_flag(q)


def _timeout_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("-t", "--timeout", dest="grace", type=_seconds, default=None,
                   metavar="SECONDS",
                   help="how long each container has after its stop signal before it is "
                        "killed (default: its service's stop_grace_period, else 10)")


def _seconds(text: str) -> float:
    from engine.arguments import check_timeout

    try:
        return check_timeout(float(text))
    except (ValueError, BerthError):
        raise argparse.ArgumentTypeError(f"invalid timeout {text!r}: a number of seconds "
                                         "from 0") from None
