"""Verbs that take several containers, as podman's do: ``stop``, ``kill``, ``pause``,
``unpause``, ``rm``, ``wait``, ``inspect``, ``restart``; and ``port``.

Each container is handled on its own: a success prints the reference as given (or,
for ``wait``, the exit code), a failure prints one ``berth: ...`` line on stderr and
the next container is still tried; the exit status is 125 if any failed. An engine
that stops answering ends the whole command at once (every later one would fail too).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from berth.cli import format as fmt
from bus.client import Client
from engine.errors import BerthError, InvalidState, NotFound, Unavailable, WrongNode

if TYPE_CHECKING:
    from berth.cli import AddCommand

COMMANDS = ("stop", "kill", "pause", "unpause", "rm", "wait", "inspect", "restart", "rename",
            "port")

FAILED = 125
"""podman's exit status when the engine failed for at least one container."""


MISSING = 1
IN_USE = 2
"""podman's ``rm`` exit statuses: 1 when a container named does not exist (and
nothing worse failed), 2 when one is running or in use; 125 for anything else."""


def each(refs: Iterable[str], action: Callable[[str], str | None], *,
         status: Callable[[BerthError], int] | None = None,
         ignore_missing: bool = False) -> int:
    """Run ``action`` on each reference; print what it returns (the reference itself
    when it returns None), or the error. The exit status is the highest of the
    failures' (``status`` maps an error to one; default 125), 0 if none failed.
    ``ignore_missing``: a container that does not exist is no failure (``--ignore``)."""
    worst = 0
    for ref in refs:
        try:
            shown = action(ref)
        except Unavailable:
            raise
        except BerthError as exc:
            if ignore_missing and isinstance(exc, NotFound):
                continue
            print(f"berth: {exc}", file=sys.stderr)
            code = FAILED if status is None else status(exc)
            worst = max(worst, code)
            continue
        print(ref if shown is None else shown)
        sys.stdout.flush()
    return worst


def rm_status(exc: BerthError) -> int:
    """podman's ``rm`` exit status for one failure."""
    if isinstance(exc, NotFound) and not isinstance(exc, WrongNode):
        return MISSING
    if isinstance(exc, InvalidState):
        return IN_USE
    return FAILED


MAX_AT_ONCE = 16
"""Containers one ``stop`` handles at once (each takes a thread and a bus socket)."""


def at_once(refs: Iterable[str], client: Client,
            action: Callable[[Client, str], str | None], label: str, *,
            ignore_missing: bool = False) -> int:
    """``each``, but for every reference at once (at most MAX_AT_ONCE), as podman's
    parallel verbs: a stop waits out each container's timeout, and in turn those
    add up. Each thread has its own client (a bus socket is used by one thread);
    the results are printed in the order given, as ``each`` prints them."""
    from concurrent.futures import ThreadPoolExecutor

    targets = list(refs)
    if len(targets) <= 1:
        def alone(ref: str) -> str | None:
            with fmt.Progress(f"{label} {ref}"):
                return action(client, ref)

        return each(targets, alone, ignore_missing=ignore_missing)

    def one(ref: str) -> str | None:
        with Client(",".join(client.endpoints), events_endpoint=client.events_endpoint,
                    actor=client.actor, timeout=client.timeout, retries=client.retries,
                    curve=client.curve) as own:
            return action(own, ref)

    outcomes: list[tuple[str | None, BerthError | None]] = []
    with fmt.Progress(f"{label} {len(targets)} containers"), \
            ThreadPoolExecutor(min(MAX_AT_ONCE, len(targets)),
                               thread_name_prefix="berth-verb") as pool:
        futures = [pool.submit(one, ref) for ref in targets]
        for future in futures:
            try:
                outcomes.append((future.result(), None))
            except BerthError as exc:
                outcomes.append((None, exc))
    results = iter(outcomes)

    def settled(_ref: str) -> str | None:
        shown, error = next(results)
        if error is not None:
            raise error
        return shown

    return each(targets, settled, ignore_missing=ignore_missing)


def cmd_stop(args: argparse.Namespace, client: Client) -> int:
    def stop(own: Client, ref: str) -> None:
        own.stop(ref, timeout=args.time)

    return at_once(_targets(args, client), client, stop, "stopping",
                   ignore_missing=args.ignore)


def cmd_kill(args: argparse.Namespace, client: Client) -> int:
    return each(_targets(args, client), lambda ref: _none(client.kill(ref, signal=args.signal)))


def cmd_pause(args: argparse.Namespace, client: Client) -> int:
    return each(_targets(args, client), lambda ref: _none(client.pause(ref)))


def cmd_unpause(args: argparse.Namespace, client: Client) -> int:
    return each(_targets(args, client), lambda ref: _none(client.unpause(ref)))


def cmd_rm(args: argparse.Namespace, client: Client) -> int:
    """``-f`` removes a running container too: the engine kills it first (a stop with
    no grace time), as podman's ``rm -f`` does; with ``-t SECONDS`` it is stopped
    first with that grace time (``-t 0``: killed at once). ``--ignore``: a container
    that does not exist is no error. Exit status as podman's (``rm_status``)."""
    def remove(ref: str) -> None:
        if args.force and args.time is not None and args.time > 0:
            try:
                client.stop(ref, timeout=args.time)
            except InvalidState:
                pass  # not running: nothing to stop, remove it as it is
        client.remove(ref, force=args.force)

    return each(_targets(args, client), remove, status=rm_status, ignore_missing=args.ignore)


def cmd_wait(args: argparse.Namespace, client: Client) -> int:
    def wait(ref: str) -> str:
        if args.condition != "exited":  # running, healthy: print the condition reached
            with fmt.Progress(f"waiting for {ref} to be {args.condition}"):
                client.wait(ref, condition=args.condition)
            return str(args.condition)
        with fmt.Progress(f"waiting for {ref} to exit"):
            return str(client.wait(ref).result["exit_code"])

    return each(args.containers, wait)


def cmd_restart(args: argparse.Namespace, client: Client) -> int:
    """Stop (if running) and start again: starting an exited container runs it anew."""
    def restart(ref: str) -> None:
        with fmt.Progress(f"restarting {ref}"):
            client.stop(ref, timeout=args.time)
            client.start(ref)

    return each(_targets(args, client), restart)


def cmd_inspect(args: argparse.Namespace, client: Client) -> int:
    """One JSON array of the containers found, as podman prints it (or the template
    per container); the ones not found are each reported on stderr."""
    found: list[dict[str, Any]] = []
    failed = False
    for ref in args.containers:
        try:
            found.append(client.inspect(ref))
        except Unavailable:
            raise
        except BerthError as exc:
            print(f"berth: {exc}", file=sys.stderr)
            failed = True
    if args.format:
        from berth.cli import template

        tmpl = template.parse(args.format)
        for item in found:
            print(tmpl.render(template_view(item)))
    else:
        print(json.dumps([inspect_view(i) for i in found], indent=2, sort_keys=True))
    return FAILED if failed else 0


def inspect_view(item: dict[str, Any]) -> dict[str, Any]:
    """inspect's fields under podman's names and shapes (``.State.Status``,
    ``.Config.Image``...) as well as berth's own (berth.cli.podmanview)."""
    from berth.cli.podmanview import container_view

    return container_view(item)


def template_view(item: dict[str, Any]) -> dict[str, Any]:
    """What ``inspect --format`` reads: podman's shape (``inspect_view``), Docker's
    where podman's has no such field (``{{.NetworkSettings.Networks}}``), and
    ``{{.State}}`` still berth's state word while ``{{.State.Status}}`` reads the
    struct, so templates written for any of the three work."""
    # loaded only for a template: the Docker API's translations are not otherwise needed
    from berth.cli.template import Both
    from berth.dockerapi.shapes import container_inspect

    view = inspect_view(item)
    docker = container_inspect(item) if item.get("id") else {}
    for key, value in docker.items():
        if key in ("Name", "Image", "Berth"):
            continue
        mine = view.get(key)
        if mine is None:
            view[key] = value
        elif isinstance(mine, dict) and isinstance(value, dict):
            view[key] = {**value, **mine}
    state = view.get("State")
    view["State"] = Both(str(item.get("state") or ""), state if isinstance(state, dict) else {})
    return view


def cmd_rename(args: argparse.Namespace, client: Client) -> int:
    client.rename(args.container, args.name)
    return 0


def cmd_port(args: argparse.Namespace, client: Client) -> int:
    """The published ports, podman's way: ``80/tcp -> 0.0.0.0:8080``: from the
    container's last ``container.network_attached`` event (the ports ``-P`` chose are
    only there; none once a ``container.network_detached`` followed), else as its spec
    asked (``--network none`` reserves them without a network)."""
    from bus.results import parse_events_result

    events, _ = parse_events_result(client.history(args.container))
    network = [e for e in events if e.type in ("container.network_attached",
                                                "container.network_detached")]
    if network:  # an ended container gave its forwards back with its network
        last = network[-1]
        ports = (last.data.get("ports") or []) if last.type.endswith("attached") else []
    else:
        ports = client.inspect(args.container).get("spec", {}).get("ports", [])
    for host_ip, host_port, ctr_port, proto in ports:
        if args.port and args.port not in (str(ctr_port), f"{ctr_port}/{proto}"):
            continue
        line = f"{host_ip or '0.0.0.0'}:{host_port}"
        print(line if args.port else f"{ctr_port}/{proto} -> {line}")
    return 0


def _none(_reply: object) -> None:
    return None


_ALL_IN = {"kill": ("running", "paused"), "pause": ("running",), "unpause": ("paused",),
           "stop": ("running", "paused")}
"""With ``--all``, the states a verb acts on (podman's ``kill -a`` signals the running
ones only); a verb not listed acts on every container."""


def _targets(args: argparse.Namespace, client: Client) -> list[str]:
    """The containers named, or with ``--all`` every one the verb applies to."""
    if getattr(args, "all", False):
        if args.containers:
            raise_usage("give container names or --all, not both")
        states = _ALL_IN.get(args.cmd)
        # podman prints the full id of each container --all acted on
        return [str(row["id"]) for row in client.ps(all=True)
                if states is None or row["state"] in states]
    if not args.containers:
        raise_usage("name at least one container (or --all)")
    return list(args.containers)


def _seconds(text: str) -> float:
    """A grace time: a finite number >= 0 (NaN and infinity refused)."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of seconds {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"invalid number of seconds {text!r}: give a "
                                         "number >= 0")
    return value


def raise_usage(message: str) -> None:
    from engine.errors import InvalidArgument

    raise InvalidArgument(message)


def add_commands(add: AddCommand) -> None:
    several = "CTR"
    p = add("stop", cmd_stop, "stop one or more containers")
    p.add_argument("-t", "--time", type=float, default=10.0, metavar="SECONDS",
                   help="seconds to wait after the stop signal before killing (default 10)")
    p.add_argument("-a", "--all", action="store_true", help="stop every container")
    p.add_argument("-i", "--ignore", action="store_true",
                   help="a container that does not exist is no error")
    p.add_argument("containers", nargs="*", metavar=several, help="name or id (prefix)")
    p = add("kill", cmd_kill, "send a signal to one or more containers")
    p.add_argument("-s", "--signal", default="KILL",
                   help="signal name or number (default KILL)")
    p.add_argument("-a", "--all", action="store_true", help="signal every running container")
    p.add_argument("containers", nargs="*", metavar=several, help="name or id (prefix)")
    for name, fn in (("pause", cmd_pause), ("unpause", cmd_unpause)):
        p = add(name, fn, f"{name} one or more containers")
        p.add_argument("-a", "--all", action="store_true", help=f"{name} every container")
        p.add_argument("containers", nargs="*", metavar=several, help="name or id (prefix)")
    p = add("rm", cmd_rm, "remove one or more containers")
    p.add_argument("-f", "--force", action="store_true",
                   help="remove running containers too (they are killed first)")
    p.add_argument("-a", "--all", action="store_true", help="remove every container")
    p.add_argument("-t", "--time", type=_seconds, metavar="SECONDS",
                   help="with -f: stop a running container with this grace time first "
                        "(0: kill it at once, the default)")
    p.add_argument("-i", "--ignore", action="store_true",
                   help="a container that does not exist is no error")
    p.add_argument("containers", nargs="*", metavar=several, help="name or id (prefix)")
    p = add("wait", cmd_wait, "wait for containers to exit; print each exit code")
    p.add_argument("--condition", choices=["exited", "running", "healthy"], default="exited",
                   help="wait until exited (print the exit code), running or healthy")
    p.add_argument("containers", nargs="+", metavar=several, help="name or id (prefix)")
    p = add("inspect", cmd_inspect, "containers as one JSON array")
    p.add_argument("-f", "--format", metavar="TEMPLATE",
                   help="a Go template per container, e.g. '{{.State.Status}}' or '{{json .}}'")
    p.add_argument("containers", nargs="+", metavar=several, help="name or id (prefix)")
    p = add("restart", cmd_restart, "stop and start one or more containers")
    p.add_argument("-t", "--time", type=float, default=10.0, metavar="SECONDS",
                   help="seconds to wait after the stop signal before killing (default 10)")
    p.add_argument("-a", "--all", action="store_true", help="restart every container")
    p.add_argument("containers", nargs="*", metavar=several, help="name or id (prefix)")
    p = add("rename", cmd_rename, "give a container a new name (its id stays)")
    p.add_argument("container", metavar="CTR", help="name or id (prefix)")
    p.add_argument("name", metavar="NEW_NAME", help="the new name")
    p = add("port", cmd_port, "a container's published ports")
    p.add_argument("container", metavar="CTR", help="name or id (prefix)")
    p.add_argument("port", nargs="?", metavar="PORT[/PROTO]",
                   help="only the host address of this container port")
