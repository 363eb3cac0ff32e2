"""A normalised stack (``engine.compose.model``) as the engine will take it.

Asked before anything of the stack is recorded or sent, by ``berth compose up`` and
``config``, and again by a worker of ``stack.apply`` (whose config may come from any
publisher): a stack the engine would refuse, in part, is never in the log. The checks
are the engine's own parsers of the commands the stack will send, not a copy of them.
"""

from __future__ import annotations

from typing import Any

from engine import command_types as t
from engine.arguments import check_timeout
from engine.compose.model import (
    CONDITIONS,
    MAX_CONTAINERS,
    MAX_REPLICAS,
    NAME_RE,
    PULL_POLICIES,
    check_container_names,
    check_project,
    order,
    replica_name,
    run_options,
)
from engine.containers.parsing import parse_container
from engine.containers.spec import spec_from_user
from engine.errors import InvalidArgument
from engine.images.commands import parse_image
from engine.networks.parsing import parse_network
from engine.networks.rules import plan_network
from engine.volumes.parsing import parse_volume

_STACK_KEYS = frozenset({"name", "services", "volumes", "networks"})
_SERVICE_FIELDS = frozenset({"depends_on", "replicas", "labels", "options"})
_OPTIONAL_FIELDS = frozenset({"stop_grace_period", "pull_policy", "container_name"})


def check_stack(stack: Any) -> None:
    """Refuse (one sentence) a stack the engine would not carry out, before anything
    is recorded or sent: each volume and network as ``volume.create`` and
    ``network.create`` take them (``engine.networks.rules.plan_network``'s subnet rule), each
    service's image as ``image.pull`` does, and each service's first and last replica
    exactly as a worker parses and validates its ``container.create``
    (``engine.containers.parsing``: the container's name, image, command, environment,
    ports, mounts and their host paths, user, limits, health check...). ``berth compose
    up`` and ``config`` ask it; a worker asks it again of ``stack.apply`` (whose
    config is any publisher's), so a stack it would refuse is never in the log."""
    if not isinstance(stack, dict) or set(stack) != _STACK_KEYS:
        raise InvalidArgument("a stack has a name, services, volumes and networks, and "
                              "nothing else")
    project = check_project(stack["name"])
    services, volumes, networks = stack["services"], stack["volumes"], stack["networks"]
    if not (isinstance(services, dict) and services and isinstance(volumes, list)
            and isinstance(networks, dict)):
        raise InvalidArgument("a stack's services (at least one) and networks are "
                              "mappings, its volumes a list")
    for name in volumes:
        if not isinstance(name, str):
            raise InvalidArgument("volumes: a volume's name is a string")
        parse_volume(t.VOLUME_CREATE, None, {"name": f"{project}_{name}", "labels": {
            "com.docker.compose.project": project, "com.docker.compose.volume": name}})
    for name, subnet in networks.items():
        if not isinstance(name, str) or not isinstance(subnet, str):
            raise InvalidArgument("networks: a network's name and subnet are strings")
        parse_network(t.NETWORK_CREATE, None, {"name": f"{project}_{name}",
                                               "subnet": subnet or None})
        plan_network(f"{project}_{name}", subnet or None, None, {}, "10.89.1.0/24")
    total = 0
    check_container_names(services)
    for name, svc in services.items():
        what = f"services.{name}" if isinstance(name, str) and len(name) <= 40 else "services"
        if (not isinstance(name, str) or not NAME_RE.fullmatch(name)
                or not isinstance(svc, dict) or set(svc) - _OPTIONAL_FIELDS != _SERVICE_FIELDS):
            raise InvalidArgument(f"{what}: not a service of a normalised stack")
        if "stop_grace_period" in svc:
            check_timeout(svc["stop_grace_period"], f"{what}.stop_grace_period")
        if svc.get("pull_policy", "missing") not in PULL_POLICIES.values():
            raise InvalidArgument(f"{what}.pull_policy: always, missing or never")
        replicas, deps = svc["replicas"], svc["depends_on"]
        if isinstance(replicas, bool) or not isinstance(replicas, int) \
                or not 0 <= replicas <= MAX_REPLICAS:
            raise InvalidArgument(f"{what}.replicas: from 0 to {MAX_REPLICAS}")
        total += replicas
        if total > MAX_CONTAINERS:
            raise InvalidArgument(f"services: more than {MAX_CONTAINERS} replicas in all")
        if not isinstance(deps, dict) or not all(
                isinstance(d, str) and d in services and c in CONDITIONS
                for d, c in deps.items()):
            raise InvalidArgument(f"{what}.depends_on: services of the stack, each with "
                                  "a condition")
        if not isinstance(svc["labels"], dict) or not isinstance(svc["options"], dict):
            raise InvalidArgument(f"{what}: its labels and options are mappings")
        for number in sorted({1, max(replicas, 1)}):  # the names' shortest and longest
            try:
                spec = spec_from_user(run_options(stack, name, number))
                if spec.get("image"):  # pulled first, if missing (berth.cli.compose)
                    parse_image(t.IMAGE_PULL, {"reference": spec["image"],
                                               "missing_only": True})
                parse_container(t.CREATE, None,
                                {**spec, "name": replica_name(stack, name, number)})
            except InvalidArgument as exc:
                raise InvalidArgument(f"{what}: {exc.message}") from None
            except (TypeError, ValueError, AttributeError, KeyError, IndexError):
                # a publisher's config of the wrong shapes (normalise makes none)
                raise InvalidArgument(f"{what}: its options are not run options") from None
    order(stack)
