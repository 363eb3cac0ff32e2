"""What to do to bring the observed containers to the desired stack: a pure decision.

The reconciler (``berth compose up``) observes, plans, carries out the actions in
order, and can be killed at any point: running it again observes what the first run
did and plans only the rest, and each action's command id is derived from what it acts
on (``command_id``), so a command sent but not yet seen in the state is answered by the
engine with its recorded outcome instead of being carried out twice.

In the foreground (``up`` without ``-d``) the reconciler then follows the log and plans
again whenever an event ``touches`` the project; those later passes (``following``)
start again only a replica that ``died`` (ended from outside, not by its own exit or an
explicit stop), so a stack that ran to completion is not run again in a loop.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any

from engine.compose.model import (
    CONFIG_HASH_LABEL,
    DEFAULT_GRACE,
    config_hash,
    order,
    replica_name,
)

NAMESPACE = uuid.UUID("6f3b2c1e-9a57-4d0e-8c8b-1b9d0e5a7c42")
"""The namespace of compose command ids (uuid5): fixed, so a re-run derives the same."""


@dataclass(frozen=True, slots=True)
class Observed:
    """A container of the project as ``ps -a`` shows it."""

    name: str
    id: str
    state: str
    finished_at: str = ""
    exit_reason: str = ""
    exit_code: int | None = None
    config_hash: str = ""
    """The ``com.docker.compose.config-hash`` label it was created with ('' if none)."""
    service: str = ""
    number: int = 0
    """The replica it is (``identify``); '' and 0 when not known."""

    @property
    def replica(self) -> tuple[str, int] | None:
        return (self.service, self.number) if self.service else None

    @classmethod
    def from_row(cls, row: dict[str, Any], project: str = "") -> Observed:
        """From a ``ps -a`` row (``workers/present.py``'s summary); with ``project``,
        the replica it is of that project's, if any."""
        labels = row.get("labels")
        labels = labels if isinstance(labels, dict) else {}
        code = row.get("exit_code")
        found = identify(project, str(row["name"]), labels) if project else None
        return cls(str(row["name"]), str(row["id"]), str(row["state"]),
                   str(row.get("finished_at") or ""), str(row.get("exit_reason") or ""),
                   code if isinstance(code, int) else None,
                   str(labels.get(CONFIG_HASH_LABEL, "")),
                   found[0] if found else "", found[1] if found else 0)


@dataclass(frozen=True, slots=True)
class Action:
    """One step: ``create``/``start``/``remove`` a replica, or ``wait`` until a
    dependency's containers meet ``condition`` before its dependants are touched."""

    kind: str
    service: str
    number: int = 0
    container: str = ""
    condition: str = ""

    @property
    def name(self) -> str:
        return self.container


def command_id(project: str, digest: str, action: Action, target: str) -> str:
    """A deterministic id: the same action on the same target of the same stack is the
    same command. ``target`` names the incarnation acted on (the container id and its
    last exit for a start; for a create, the previous attempt's id, see ``again``)."""
    key = "/".join((project, action.service, str(action.number), digest, action.kind, target))
    return str(uuid.uuid5(NAMESPACE, key))


def again(previous_id: str) -> str:
    """The next create id after ``previous_id`` was answered with a container since
    removed (a stack scaled down and up again): deterministic, so a re-run walks the
    same chain."""
    return str(uuid.uuid5(NAMESPACE, "again/" + previous_id))


def parse_name(project: str, name: str) -> tuple[str, int] | None:
    """``PROJECT-SERVICE-N`` -> (SERVICE, N); None for a name not of the project."""
    m = re.fullmatch(re.escape(project) + r"-([a-z0-9][a-z0-9_-]*?)-([1-9][0-9]*)", name)
    return (m.group(1), int(m.group(2))) if m else None


def identify(project: str, name: str, labels: Mapping[str, Any]) -> tuple[str, int] | None:
    """Which replica of ``project`` a container is: by its name ``PROJECT-SERVICE-N``,
    else (a service's ``container_name``) by the labels every replica carries
    (``com.docker.compose.project``, ``.service``, ``.container-number``; a one-off of
    ``run`` is none). None: not a replica of the project."""
    parsed = parse_name(project, name)
    if parsed is not None:
        return parsed
    service = labels.get("com.docker.compose.service")
    number = labels.get("com.docker.compose.container-number")
    if (labels.get("com.docker.compose.project") != project
            or "com.docker.compose.oneoff" in labels or not isinstance(service, str)
            or not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", service)
            or not isinstance(number, str) or not re.fullmatch(r"[1-9][0-9]{0,5}", number)):
        return None
    return service, int(number)


DEATHS = frozenset({"conmon_lost", "unknown"})
"""Exit reasons (``engine.containers.decide.exit_reason``) that say the container was lost from
outside: its conmon killed, or nothing left to tell how it ended."""

SIGNALLED = 128
"""An exit code above this is 128 + the signal that ended the process (as a shell and
conmon report it)."""


def died(seen: Observed) -> bool:
    """Whether an exited replica was ended from outside: its conmon lost, or its process
    killed by a signal nobody asked berth to send (a ``berth stop``/``kill`` is reason
    ``stop``, its own exit ``exit`` or a ``crash`` with its own code, and those are left
    to the service's restart policy, as docker compose leaves them)."""
    if seen.state != "exited":
        return False
    if seen.exit_reason in DEATHS:
        return True
    return (seen.exit_reason == "crash" and seen.exit_code is not None
            and seen.exit_code > SIGNALLED)


def _replica(stack: dict[str, Any], service: str, number: int, seen: Observed | None,
             *, one_shot: bool, following: bool) -> list[Action]:
    """One replica's steps: created and started if missing; recreated if made from
    another configuration; started if created or (see ``died``) exited."""
    name = replica_name(stack, service, number)
    create = [Action("create", service, number, name), Action("start", service, number, name)]
    if seen is None:
        return create
    if seen.config_hash != config_hash(stack, service) or seen.name != name:
        # (renamed by container_name: the old container goes by its own name)
        return [Action("remove", service, number, seen.name), *create]
    if seen.state == "created":
        return [Action("start", service, number, name)]
    if seen.state != "exited" or one_shot:
        return []
    policy = stack["services"][service]["options"].get("restart", "no")
    if not following or (died(seen) and policy == "no"):
        return [Action("start", service, number, name)]
    return []


def plan(stack: dict[str, Any], observed: list[Observed], *,
         following: bool = False) -> list[Action]:
    """The actions converging ``observed`` (the project's containers) to ``stack``:
    services in dependency order, each replica created and started if missing,
    removed and made again if its config hash is not its service's, started if
    stopped (``following``: only if it died and has no restart policy); replicas
    beyond ``deploy.replicas`` and containers of services no longer in the file
    removed (last)."""
    project = stack["name"]
    services: dict[str, Any] = stack["services"]
    # By the replica each is (its name, or its labels under a container_name), so a
    # replica renamed in the file is found under its old name and made again.
    by_replica = {r: o for o in observed
                  if (r := o.replica or parse_name(project, o.name)) is not None}
    actions: list[Action] = []
    # A one-shot service others wait to complete is not started again once exited.
    one_shot = {dep for s in services.values() for dep, cond in s["depends_on"].items()
                if cond == "service_completed_successfully"}
    for service in order(stack):
        svc = services[service]
        steps: list[Action] = []
        for number in range(1, svc["replicas"] + 1):
            steps += _replica(stack, service, number,
                              by_replica.get((service, number)),
                              one_shot=service in one_shot, following=following)
        if steps:
            actions += [Action("wait", dep, condition=condition)
                        for dep, condition in sorted(svc["depends_on"].items())]
        actions.extend(steps)
    extras = []
    for o in observed:
        parsed = o.replica or parse_name(project, o.name)
        if parsed is None:
            continue
        service, number = parsed
        if service not in services or number > services[service]["replicas"]:
            extras.append(Action("remove", service, number, o.name))
    return actions + sorted(extras, key=lambda a: (a.service, -a.number))


TRIGGERS = frozenset({"container.created", "container.exited", "container.removed",
                      "container.renamed"})
"""The container events after which the project may no longer be converged (health
transitions, execs, pauses and the like leave its containers where they were)."""


def touches(project: str, known: Set[str], event_type: str, stream: str,
            data: dict[str, Any]) -> bool:
    """Whether an event asks the foreground reconciler to plan again: a trigger on one
    of the project's containers (``known``: their ids), a container given one of the
    project's names, or the project's own stack events."""
    if stream == f"stack:{project}":
        return True
    if event_type not in TRIGGERS:
        return False
    name = data.get("name")
    return stream in known or (isinstance(name, str) and parse_name(project, name) is not None)


def all_ended(observed: list[Observed]) -> bool:
    """Every container of the project has exited (the foreground ``up`` then returns,
    as docker compose's attached ``up`` does when its containers have all exited)."""
    return bool(observed) and all(o.state == "exited" for o in observed)


BACKOFF_FREE = 3
"""Revivals of one replica within ``BACKOFF_WINDOW`` seconds that go without a pause."""
BACKOFF_WINDOW = 30.0
BACKOFF_CAP = 10.0


def backoff(recent: int) -> float:
    """Seconds a replica revived ``recent`` times in the last ``BACKOFF_WINDOW`` seconds
    waits before it is revived again: nothing for the first few, then doubling from
    0.25 s up to ``BACKOFF_CAP``, so a replica killed over and over (an OOM loop) does
    not turn the reconciler into a busy loop; other replicas are not held back."""
    if recent < BACKOFF_FREE:
        return 0.0
    return float(min(BACKOFF_CAP, 0.25 * 2 ** (recent - BACKOFF_FREE)))


def hold_until(revived: Sequence[float]) -> float:
    """When a replica revived at the (ascending, monotonic) times ``revived`` may be
    revived again (0.0: now)."""
    if not revived:
        return 0.0
    last = revived[-1]
    return last + backoff(sum(1 for t in revived if last - t < BACKOFF_WINDOW))


def defer(actions: list[Action], holds: Mapping[str, float], now: float
          ) -> tuple[list[Action], float | None]:
    """``actions`` without the steps of replicas held until after ``now`` (``holds``:
    name -> ``hold_until``), and when the first of those is due (None: none held)."""
    held = {name: until for name, until in holds.items() if until > now}
    kept = [a for a in actions if a.kind == "wait" or a.container not in held]
    due = min((held[a.container] for a in actions if a.container in held), default=None)
    return kept, due


def stop_levels(stack: Mapping[str, Any], services: Set[str]) -> list[list[str]]:
    """The order ``down``, ``stop`` and ``restart`` stop ``services`` in: levels, each
    stopped at once, dependants before what they depend on (a web server goes before
    its database, which would otherwise see its clients' connections torn down
    mid-write). A service's depth is one more than its deepest dependency's; the
    deepest level goes first. Services the stack no longer has (orphans) depend on
    nothing it knows: they go with the first level."""
    known: dict[str, Any] = stack["services"]
    depth: dict[str, int] = {}
    for name in order(dict(stack)):  # dependencies first: their depth is known
        deps = known[name]["depends_on"]
        depth[name] = 1 + max((depth[d] for d in deps), default=-1)
    top = max(depth.values(), default=0)
    levels: dict[int, list[str]] = {}
    for name in services:
        levels.setdefault(depth.get(name, top), []).append(name)
    return [sorted(levels[d]) for d in sorted(levels, reverse=True)]


def grace(stack: Mapping[str, Any], service: str, override: float | None) -> float:
    """How long a replica of ``service`` has between its stop signal and SIGKILL:
    ``-t`` when given, else its ``stop_grace_period``, else 10 s."""
    if override is not None:
        return override
    svc = stack["services"].get(service) or {}
    return float(svc.get("stop_grace_period", DEFAULT_GRACE))
