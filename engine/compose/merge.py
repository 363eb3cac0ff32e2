"""Several Compose files made one, as the Compose specification's ``merge.md`` says:
a later file's mappings are merged into the earlier's key by key; its scalars
replace; sequences are appended, except where the specification says otherwise:
``command``, ``entrypoint`` and ``healthcheck.test`` are replaced whole; ``ports``,
``expose``, ``dns``, ``dns_search``, ``cap_add``, ``cap_drop``, ``env_file``,
``extra_hosts``, ``tmpfs``, ``profiles`` and ``networks`` given as lists keep each
value once; ``environment`` and ``labels`` (a list of ``KEY=VALUE`` or a mapping)
are merged as mappings by key; ``volumes`` are merged by their target path (the
later file's mount at a path replaces the earlier's). Pure.
"""

from __future__ import annotations

from typing import Any

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
