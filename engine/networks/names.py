"""The names a network may have, and the modes that are not networks: the one rule a
run spec's ``--network`` and a ``network.create`` obey.

Apart from ``engine.networks.rules`` because the run spec checks its network with it,
and the rules need the run spec's published ports: with the name rule inside them, the
two modules imported each other.
"""

from __future__ import annotations

import ipaddress
import re

from engine.errors import InvalidArgument

NONE = "none"
HOST = "host"
MODES = (NONE, HOST)
DEFAULT_NAME = "berth"  # the network a container joins when it names none
"""Network names that are not networks: no interface but ``lo``, or the host's own."""

_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")


def validate_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidArgument(f"invalid network name {name!r}: use 1-63 characters from "
                              "[a-zA-Z0-9_.-], starting with a letter or digit")
    if name in MODES:
        raise InvalidArgument(f"{name!r} is a network mode, not a network name")
    return name


def check_reference(name: str) -> str:
    """A run's ``--network``: a mode (none, host) or a network's name."""
    return name if name in MODES else validate_name(name)


_HOST_NAME = re.compile(r"^[a-zA-Z0-9_.-]+$")
"""A name /etc/hosts takes (as ``engine.networks.rules`` writes its lines)."""


def parse_add_host(text: object) -> tuple[str, str]:
    """``--add-host``/compose ``extra_hosts``: ``NAME:ADDRESS`` or ``NAME=ADDRESS`` (an
    IPv6 address keeps its colons: the name ends at the first separator), the name one
    /etc/hosts takes, the address an IP address (``host-gateway`` is Docker's own
    daemon-side name, not resolved here)."""
    if isinstance(text, str):
        name, sep, address = text.partition("=") if "=" in text else text.partition(":")
        address = address.strip("[]")
        try:
            ok = bool(sep) and bool(_HOST_NAME.fullmatch(name)) and bool(
                ipaddress.ip_address(address))
        except ValueError:
            ok = False
        if ok:
            return name, str(ipaddress.ip_address(address))
    shown = text if isinstance(text, str) and len(text) <= 80 else type(text).__name__
    raise InvalidArgument(f"invalid extra host {shown!r}: use NAME:ADDRESS, e.g. "
                          "db.local:10.0.0.5")


def parse_dns(text: object) -> str:
    """A ``--dns`` server: an IP address."""
    try:
        return str(ipaddress.ip_address(text if isinstance(text, str) else ""))
    except ValueError:
        shown = text if isinstance(text, str) and len(text) <= 80 else type(text).__name__
        raise InvalidArgument(f"invalid DNS server {shown!r}: an IP address") from None
