"""The compose reconciler: it converges a project's containers to a normalised stack
on this side of the bus. It observes (``ps -a``), decides (``engine.compose.plan``,
pure) and publishes the actions' commands with deterministic ids, so it can be killed
at any point and run again without a command carried out twice. A library beside the
bus client, not part of the CLI: ``berth compose`` (``berth.cli.compose``) and its
verbs call it, and the foreground ``up`` (``berth.compose.follow``) keeps it running."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from bus.client import Client
from engine import command_types as t
from engine.errors import AlreadyExists, BerthError, InvalidArgument, NotFound, Timeout

if TYPE_CHECKING:
    from engine.compose.plan import Action, Observed

WAIT_SECONDS = 120.0
"""How long ``up`` waits for one dependency's condition before it gives up."""
IN_FLIGHT = 8
"""Containers whose commands are sent at once: the worker carries commands out on its
own threads, so one container's create (conmon, ``runc create``, its network) overlaps
another's instead of each waiting for the one before (bench.compose_bench: 50
containers without a network came up in half the time, and went down in a third)."""


def observe(client: Client, project: str) -> list[Observed]:
    from engine.compose.plan import Observed

    seen = [Observed.from_row(r, project) for r in client.ps(all=True)
            if isinstance(r.get("name"), str) and r.get("state") != "removed"]
    return [o for o in seen if o.replica is not None]


class Reconciler:
    """Carries out a plan's actions, one command each, with deterministic ids."""

    def __init__(self, client: Client, stack: dict[str, Any]) -> None:
        from engine.compose.model import digest

        self._client, self.stack = client, stack
        self.project: str = stack["name"]
        self.digest = digest(stack)
        self.sent = 0
        self._sent_lock = threading.Lock()
        self._local = threading.local()  # a thread of carry_out_all's pool: its own client
        self.made: dict[str, str] = {}  # name -> id of a container this pass created
        self.pulled: set[str] = set()  # services whose image this run pulled
        self.due: float | None = None
        """When a replica left out of the last pass (backing off) is due (monotonic)."""
        self.stopping: Callable[[], bool] = lambda: False
        """Asked between actions and while waiting: true once ``up`` is interrupted."""
        self.only: set[str] | None = None
        """``up SERVICE...``: these services and what they depend on; None: all."""
        self.graces: dict[str, float] = {}
        """Service -> seconds a ``stop`` action gives its replicas before SIGKILL."""

    def adopt(self, stack: dict[str, Any]) -> None:
        """Converge to ``stack`` from now on (another ``up`` recorded a new one)."""
        from engine.compose.model import digest

        self.stack, self.digest = stack, digest(stack)
        self.volumes()
        self.networks()

    @property
    def client(self) -> Client:
        """This thread's client (a client is not thread-safe)."""
        own: Client | None = getattr(self._local, "client", None)
        return own or self._client

    def _request(self, type: str, container: str | None, action: Action, target: str,
                 args: dict[str, Any], command_id: str | None = None,
                 reply_timeout: float | None = None) -> dict[str, Any]:
        from engine.compose.plan import command_id as derive
        from engine.faults import crash_point

        cid = command_id or derive(self.project, self.digest, action, target)
        command = self.client.command(type, container, None, args, command_id=cid)
        reply = (self.client.request(command) if reply_timeout is None
                 else self.client.request(command, reply_timeout=reply_timeout))
        result = dict(reply.result)
        with self._sent_lock:
            self.sent += 1
            sent = self.sent
        crash_point(f"compose.sent.{sent}")  # tests: a reconciler killed mid-up
        return result

    def volumes(self) -> None:
        have = {v.get("name") for v in self.client.volumes()}
        for name in self.stack["volumes"]:
            full = f"{self.project}_{name}"
            if full not in have:
                with contextlib.suppress(AlreadyExists):  # another run made it meanwhile
                    self.client.volume_create(full, labels={
                        "com.docker.compose.project": self.project,
                        "com.docker.compose.volume": name})

    def networks(self) -> None:
        wanted = {f"{self.project}_{n}": subnet
                  for n, subnet in self.stack.get("networks", {}).items()}
        if not wanted:
            return
        have = {n.get("name") for n in self.client.networks()}
        for full, subnet in wanted.items():
            if full not in have:
                with contextlib.suppress(AlreadyExists):  # another run made it meanwhile
                    self.client.network_create(full, subnet=subnet or None)
                print(f"created network {full}", file=sys.stderr)

    def converge(self, *, following: bool = False,
                 holds: Mapping[str, float] | None = None) -> list[Action]:
        """One pass: observe, plan, carry out; the actions carried out. ``following``:
        a later pass of the foreground ``up`` (see ``engine.compose.plan.plan``);
        ``holds``: replicas backing off (``engine.compose.plan.defer``), left for a
        pass at ``self.due``."""
        from engine.compose.plan import defer, plan

        if not following:
            self.volumes()
            self.networks()
        self.made.clear()
        actions = plan(self.stack, observe(self.client, self.project), following=following)
        if self.only is not None:  # the others (and orphans) are left as they are
            actions = [a for a in actions if a.service in self.only]
        actions, self.due = defer(actions, holds or {}, time.monotonic())
        return self.carry_out_all(actions)

    def carry_out_all(self, actions: list[Action]) -> list[Action]:
        """A plan's actions: each ``wait`` in its place; between two waits, each
        container's own actions (create then start, or a remove) in order, up to
        IN_FLIGHT containers at once, each pool thread on a client of its own. The
        command ids are the actions' own, whatever the order they are sent in, so a run
        killed with commands in flight and run again doubles none. The first failure
        is raised once the containers already under way are done. Once ``stopping``
        says so, no further action is begun; the actions carried out are returned."""
        done: list[Action] = []
        chains: dict[str, list[Action]] = {}
        for action in [*actions, None]:
            if action is not None and action.kind != "wait":
                chains.setdefault(action.container, []).append(action)
                continue
            if chains:
                self._concurrently(list(chains.values()), done)
            chains = {}
            if action is not None and not self.stopping():
                self.carry_out(action)
                done.append(action)
        return done

    def _concurrently(self, chains: list[list[Action]], done: list[Action]) -> None:
        from concurrent.futures import ThreadPoolExecutor

        opened: list[Client] = []

        def run(chain: list[Action]) -> None:
            for step in chain:
                if self.stopping():
                    return
                self.carry_out(step)
                done.append(step)  # list.append is atomic

        if len(chains) == 1:  # on this thread's client
            run(chains[0])
            return

        def own_client() -> None:
            main = self._client
            self._local.client = Client(",".join(main.endpoints),
                                        events_endpoint=main.events_endpoint,
                                        actor=main.actor, timeout=main.timeout,
                                        retries=main.retries, curve=main.curve)
            opened.append(self._local.client)  # list.append is atomic

        try:
            with ThreadPoolExecutor(min(IN_FLIGHT, len(chains)), initializer=own_client) as pool:
                futures = [pool.submit(run, chain) for chain in chains]
        finally:
            for c in opened:
                c.close()
        for future in futures:
            future.result()  # the first failure, in plan order

    def carry_out(self, action: Action) -> None:
        from engine.compose.plan import Observed

        if action.kind == "create":
            self._create(action)
        elif action.kind == "start":
            made = self.made.pop(action.container, None)  # just created: no need to look
            seen = (self._seen(action.container) if made is None
                    else Observed(action.container, made, "created"))
            self._request(t.START, seen.id, action, f"{seen.id}/{seen.finished_at}", {})
            print(f"started {action.container}", file=sys.stderr)
        elif action.kind == "stop":
            self._stop(action)
        elif action.kind == "remove":
            try:  # one removed meanwhile (another ``down``, by hand) is as good as done
                seen = self._seen(action.container)
                self._request(t.REMOVE, seen.id, action, seen.id, {"force": True})
            except NotFound:
                return
            print(f"removed {action.container}", file=sys.stderr)
        else:
            self._wait(action.service, action.condition)

    def _stop(self, action: Action) -> None:
        """The replica's stop signal, then SIGKILL after its grace period (the worker
        returns as soon as the process is gone: one that exits on the signal is not
        waited for). The id names the incarnation, so a run killed while the worker
        waits and run again asks for the same stop, and one already stopped is left."""
        try:
            seen = self._seen(action.container)
        except NotFound:
            return
        if seen.state not in ("running", "paused"):
            return
        timeout = self.graces.get(action.service, 10.0)
        self._request(t.STOP, seen.id, action, f"{seen.id}/{seen.finished_at}",
                      {"timeout": timeout},
                      reply_timeout=self.client.timeout + timeout + 5.0)
        print(f"stopped {action.container}", file=sys.stderr)

    def _seen(self, name: str) -> Observed:
        for o in observe(self.client, self.project):
            if o.name == name:
                return o
        raise NotFound(f"container {name} vanished while the stack converged")

    def _create(self, action: Action) -> None:
        from engine.compose.model import run_options
        from engine.compose.plan import again, command_id
        from engine.containers.spec import spec_from_user

        spec = spec_from_user(run_options(self.stack, action.service, action.number))
        self.pull(action.service, spec)
        spec["name"] = action.container
        cid = command_id(self.project, self.digest, action, "")
        for _ in range(1000):  # each pass: an earlier incarnation removed since
            result = self._request(t.CREATE, action.container, action, "", spec, cid)
            # Asked even when the reply does not say "replayed": the broker answers a
            # repeated id from its cache of replies with the first, unmarked reply.
            if self._alive(str(result.get("id"))):
                self.made[action.container] = str(result["id"])
                print(f"created {action.container}", file=sys.stderr)
                return
            cid = again(cid)
        raise BerthError(f"{action.container}: too many earlier incarnations")

    def pull(self, service: str, spec: dict[str, Any]) -> None:
        """The service's image by its ``pull_policy``: ``missing`` (the default) pulls
        it if this node has none, ``always`` pulls it once per ``up`` (not once per
        replica), ``never`` leaves it to the create, which refuses an image not here."""
        policy = self.stack["services"][service].get("pull_policy", "missing")
        if not spec.get("image") or policy == "never":
            return
        with self._sent_lock:
            if policy == "always" and service in self.pulled:
                return
            self.pulled.add(service)
        self.client.request(self.client.command(
            t.IMAGE_PULL, None, None, {"reference": spec["image"],
                                       "missing_only": policy == "missing"}),
            reply_timeout=max(self.client.timeout, 600.0))

    def _alive(self, cid: str) -> bool:
        try:
            return self.client.inspect(cid).get("state") != "removed"
        except NotFound:
            return False

    def _wait(self, service: str, condition: str) -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        replicas = self.stack["services"][service]["replicas"]
        while time.monotonic() < deadline and not self.stopping():
            mine = [o for o in observe(self.client, self.project)
                    if o.service == service]
            if len(mine) >= replicas and all(self._met(o, condition) for o in mine):
                return
            time.sleep(0.1)  # polled with a deadline: the condition is another's state
        if self.stopping():
            return  # the pass ends at its next action
        raise Timeout(f"service {service} did not reach {condition} in {WAIT_SECONDS:.0f} s")

    def _met(self, o: Observed, condition: str) -> bool:
        if condition == "service_started":
            return o.state in ("running", "exited", "paused")
        if condition == "service_completed_successfully":
            if o.state != "exited":
                return False
            if self.client.inspect(o.id).get("exit_code") != 0:
                raise BerthError(f"{o.name} did not complete successfully: dependants "
                                 "are not started")
            return True
        events = self.client.history(o.id).get("events", [])
        health = [e for e in events if e.get("type") == "container.health_status"]
        return bool(health) and health[-1].get("data", {}).get("status") == "healthy"


def _last_stack_event(client: Client, project: str) -> tuple[int, str, str]:
    """The project's last stack event: (position, type, digest); (0, "", "") if none."""
    from engine.compose.stacks import stream_of

    last, after = (0, "", ""), 0
    while True:
        page, head = client.events(after=after, limit=500,
                                   types=["stack.applied", "stack.removed"])
        for e in page:
            if e.stream == stream_of(project):
                last = (e.position, e.type, str(e.data.get("digest", "")))
        if not page or page[-1].position >= head:
            return last
        after = page[-1].position


def record(client: Client, stack: dict[str, Any], kind: str, **args: Any) -> None:
    """``stack.applied``/``stack.removed`` once per change: not again when the last
    event already says so, and with an id derived from that last event, so a run
    killed after sending it and run again is answered with the recorded outcome."""
    import uuid

    from engine.compose.model import digest
    from engine.compose.plan import NAMESPACE

    project: str = stack["name"]
    position, last_type, last_digest = _last_stack_event(client, project)
    want = digest(stack) if kind == t.STACK_APPLY else ""
    if (kind == t.STACK_APPLY and last_type == "stack.applied" and last_digest == want) or (
            kind == t.STACK_REMOVE and last_type in ("stack.removed", "")):
        return
    command_id = str(uuid.uuid5(NAMESPACE, f"{project}/{kind}/{want}/{position}"))
    if kind == t.STACK_APPLY:
        args.update(config=stack, digest=want)
    client.request(client.command(kind, None, None, {"project": project, **args},
                                  command_id=command_id))


def with_dependencies(stack: dict[str, Any], services: list[str]) -> set[str]:
    """``services`` and every service they depend on, directly or not."""
    todo, seen = list(services), set()
    while todo:
        name = todo.pop()
        if name not in stack["services"]:
            raise InvalidArgument(f"no service {name!r} in the project")
        if name not in seen:
            seen.add(name)
            todo += list(stack["services"][name]["depends_on"])
    return seen


def stop_gracefully(client: Client, stack: dict[str, Any], override: float | None
                    ) -> list[Observed]:
    """Stop the project's running containers as docker compose does: each service's
    ``stop_signal``, then SIGKILL once its ``stop_grace_period`` (``-t``: this) is
    over, dependants first (``engine.compose.plan.stop_levels``), the containers of
    one level at once. The containers that were running are returned."""
    from engine.compose.plan import Action, grace, stop_levels

    project: str = stack["name"]
    live = [o for o in observe(client, project) if o.state in ("running", "paused")]
    by_service: dict[str, list[tuple[Observed, int]]] = {}
    for o in live:
        parsed = o.replica
        assert parsed is not None  # observe keeps the project's names only
        by_service.setdefault(parsed[0], []).append((o, parsed[1]))
    # The ids derive from the project and the action alone (not the file's services),
    # so a rerun with the same file asks for the very same stops.
    rec = Reconciler(client, {**stack, "services": {}})
    rec.graces = {s: grace(stack, s, override) for s in by_service}
    for level in stop_levels(stack, set(by_service)):
        rec.carry_out_all([Action("stop", s, n, o.name) for s in level
                           for o, n in sorted(by_service[s], key=lambda p: p[1])])
    return live


def remove_containers(client: Client, stack: dict[str, Any]) -> Reconciler:
    """Remove every container of the project (``down``, and a foreground ``up`` that
    reads ``stack.removed``, closing the window in which it made one ``down`` had
    not seen: a container the other removed first is skipped)."""
    from engine.compose.plan import Action

    down = Reconciler(client, {**stack, "services": {}})
    removes = []
    for o in sorted(observe(client, down.project), key=lambda o: o.name, reverse=True):
        parsed = o.replica
        assert parsed is not None  # observe keeps the project's names only
        removes.append(Action("remove", parsed[0], parsed[1], o.name))
    down.carry_out_all(removes)  # one the other removed first is skipped (carry_out)
    return down
