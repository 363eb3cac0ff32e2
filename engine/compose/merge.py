"""Several Compose files made one, as the Compose specification's ``merge.md`` says:
a later file's mappings are merged into the earlier's key by key; its scalars
replace; sequences are appended, except where the specification says otherwise:
``command``, ``entrypoint`` and ``healthcheck.test`` are replaced whole; ``ports``,
``expose``, ``dns``, ``dns_search``, ``cap_add``, ``cap_drop``, ``env_file``,
``extra_hosts``, ``tmpfs``, ``profiles`` and ``networks`` given as lists keep each
value once; ``environment`` and ``labels`` (a list of ``KEY=VALUE`` or a mapping)
are merged as mappings by key; ``volumes`` are merged by their target path (the
later file's mount at a path replaces the earlier's). ``extends`` merges a base
service under the one that names it by the same rules; ``profiles`` leave out the
services of no active profile. Pure (another file ``extends`` names is read by a
loader the caller gives).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from engine.errors import InvalidArgument

_REPLACED = frozenset({"command", "entrypoint"})
_UNIQUE = frozenset({"ports", "expose", "dns", "dns_search", "cap_add", "cap_drop",
                     "env_file", "extra_hosts", "tmpfs", "profiles", "networks",
                     "security_opt", "devices", "links", "external_links"})
_AS_MAPPING = frozenset({"environment", "labels", "annotations", "sysctls"})


def merge_files(files: list[dict[str, Any]]) -> dict[str, Any]:
    """The files' data, the later over the earlier."""
    out: dict[str, Any] = {}
    for data in files:
        out = _mapping(out, data, "")
    return out


def _mapping(base: dict[str, Any], over: dict[str, Any], path: str) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        here = f"{path}.{key}" if path else str(key)
        out[key] = _value(out[key], value, here, key) if key in out else value
    return out


def _value(base: Any, over: Any, path: str, key: Any) -> Any:
    in_service = path.startswith("services.") and path.count(".") == 2
    if in_service and key in _REPLACED:
        return over
    if in_service and key in _AS_MAPPING and isinstance(base, (list, dict)) \
            and isinstance(over, (list, dict)):
        return {**_as_mapping(base), **_as_mapping(over)}
    if in_service and key == "volumes" and isinstance(base, list) and isinstance(over, list):
        by_target = {_target(v): v for v in base}
        by_target.update({_target(v): v for v in over})
        return list(by_target.values())
    if path.startswith("services.") and path.endswith(".healthcheck.test"):
        return over
    if isinstance(base, dict) and isinstance(over, dict):
        return _mapping(base, over, path)
    if isinstance(base, list) and isinstance(over, list):
        if in_service and key in _UNIQUE:
            seen = [*base]
            for item in over:
                if item not in seen:
                    seen.append(item)
            return seen
        return [*base, *over]
    if in_service and key == "networks" and isinstance(base, (list, dict)) \
            and isinstance(over, (list, dict)):
        return {**_networks(base), **_networks(over)}
    return over


def _as_mapping(value: list[Any] | dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict):
        return dict(value)
    out: dict[str, Any] = {}
    for item in value:
        key, sep, val = str(item).partition("=")
        out[key] = val if sep else None
    return out


def _networks(value: list[Any] | dict[str, Any]) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else dict.fromkeys(map(str, value))


def _target(volume: Any) -> str:
    """A service volume's target path (short ``SRC:TARGET[:MODE]`` or long form)."""
    if isinstance(volume, dict):
        return str(volume.get("target", ""))
    parts = str(volume).split(":")
    return parts[1] if len(parts) > 1 else parts[0]


MAX_EXTENDS = 10
"""``extends`` chains at most this long (a cycle is refused before)."""

Loader = Callable[[str], dict[str, Any]]
"""Reads another file ``extends.file`` names (a path as given, relative to the
project directory): the caller does the I/O and its bounds, and interpolates it."""


def resolve_extends(data: dict[str, Any], load: Loader) -> dict[str, Any]:
    """Each service with ``extends`` (``NAME`` or ``{service: NAME[, file: PATH]}``)
    made the base service merged with its own keys over it (the same rules as two
    files), chains followed up to ``MAX_EXTENDS``; a cycle, a missing service or
    file is one sentence naming the service."""
    services = data.get("services")
    if not isinstance(services, dict):
        return data
    out = dict(services)
    for name in services:
        out[name] = _extended(services, str(name), load, [])
    return {**data, "services": out}


def _extended(services: dict[str, Any], name: str, load: Loader, chain: list[str],
              ) -> Any:
    svc = services.get(name)
    if not isinstance(svc, dict) or "extends" not in svc:
        return svc
    what = f"services.{name}.extends"
    spec = svc["extends"]
    if isinstance(spec, str):
        spec = {"service": spec}
    if (not isinstance(spec, dict) or not isinstance(spec.get("service"), str)
            or set(spec) - {"service", "file"}
            or not isinstance(spec.get("file", ""), str)):
        raise InvalidArgument(f"{what}: a service's name, or {{service: NAME, file: PATH}}")
    key = f"{spec.get('file', '')}:{spec['service']}"
    if key in chain:
        raise InvalidArgument(f"{what}: a cycle through {spec['service']!r}"[:200])
    if len(chain) >= MAX_EXTENDS:
        raise InvalidArgument(f"{what}: more than {MAX_EXTENDS} services extended in a chain")
    if spec.get("file"):
        other = load(spec["file"]).get("services")
        pool = other if isinstance(other, dict) else {}
    else:
        pool = services
    if spec["service"] not in pool:
        raise InvalidArgument(f"{what}: no service {spec['service']!r}"[:200])
    base = _extended(pool, spec["service"], load, [*chain, key])
    if not isinstance(base, dict):
        raise InvalidArgument(f"{what}: {spec['service']!r} is not a mapping"[:200])
    own = {k: v for k, v in svc.items() if k != "extends"}
    merged = _mapping({"services": {name: base}}, {"services": {name: own}}, "")
    result: dict[str, Any] = merged["services"][name]
    return result


def select_profiles(data: dict[str, Any], active: Iterable[str]) -> dict[str, Any]:
    """The services enabled by the ``active`` profiles (``--profile``,
    ``COMPOSE_PROFILES``): those without ``profiles:``, and those naming an active
    one (``*`` enables all). A service enabled that depends on one left out is
    refused, naming both."""
    services = data.get("services")
    if not isinstance(services, dict):
        return data
    on = set(active)
    kept: dict[str, Any] = {}
    for name, svc in services.items():
        profiles = svc.get("profiles") if isinstance(svc, dict) else None
        if profiles is None:
            kept[name] = svc
            continue
        if not isinstance(profiles, list) or not all(isinstance(p, str) for p in profiles):
            raise InvalidArgument(f"services.{name}.profiles: a list of names")
        if "*" in on or on & set(profiles):
            kept[name] = {k: v for k, v in svc.items() if k != "profiles"}
    for name, svc in kept.items():
        deps = svc.get("depends_on") if isinstance(svc, dict) else None
        for dep in deps or ():
            if isinstance(dep, str) and dep in services and dep not in kept:
                raise InvalidArgument(f"services.{name}.depends_on: service {dep!r} is in "
                                      "no active profile (enable it with --profile)")
    return {**data, "services": kept}
