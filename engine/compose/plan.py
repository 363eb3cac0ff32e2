"""What to do to bring the observed containers to the desired stack: a pure decision.

The reconciler (``berth compose up``) observes, plans, carries out the actions in
order, and can be killed at any point: running it again observes what the first run
did and plans only the rest, and each action's command id is derived from what it acts
on (``command_id``), so a command sent but not yet seen in the state is answered by the
engine with its recorded outcome instead of being carried out twice.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from engine.compose.model import container_name, order

NAMESPACE = uuid.UUID("6f3b2c1e-9a57-4d0e-8c8b-1b9d0e5a7c42")
"""The namespace of compose command ids (uuid5): fixed, so a re-run derives the same."""


@dataclass(frozen=True, slots=True)
class Observed:
    """A container of the project as ``ps -a`` shows it."""

    name: str
    id: str
    state: str
    finished_at: str = ""


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


def plan(stack: dict[str, Any], observed: list[Observed]) -> list[Action]:
    """The actions converging ``observed`` (the project's containers) to ``stack``:
    services in dependency order, each replica created and started if missing,
    started if stopped; replicas beyond ``deploy.replicas`` and containers of services
    no longer in the file removed (last)."""
    project = stack["name"]
    services: dict[str, Any] = stack["services"]
    by_name = {o.name: o for o in observed}
    actions: list[Action] = []
    # A one-shot service others wait to complete is not started again once exited.
    one_shot = {dep for s in services.values() for dep, cond in s["depends_on"].items()
                if cond == "service_completed_successfully"}
    for service in order(stack):
        svc = services[service]
        steps: list[Action] = []
        for number in range(1, svc["replicas"] + 1):
            name = container_name(project, service, number)
            seen = by_name.get(name)
            if seen is None:
                steps.append(Action("create", service, number, name))
                steps.append(Action("start", service, number, name))
            elif seen.state == "created" or (seen.state == "exited"
                                             and service not in one_shot):
                steps.append(Action("start", service, number, name))
        if steps:
            actions += [Action("wait", dep, condition=condition)
                        for dep, condition in sorted(svc["depends_on"].items())]
        actions.extend(steps)
    extras = []
    for o in observed:
        parsed = parse_name(project, o.name)
        if parsed is None:
            continue
        service, number = parsed
        if service not in services or number > services[service]["replicas"]:
            extras.append(Action("remove", service, number, o.name))
    return actions + sorted(extras, key=lambda a: (a.service, -a.number))

