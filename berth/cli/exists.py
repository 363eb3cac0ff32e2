"""podman's ``exists`` verbs: ``container exists``, ``image exists``, ``volume exists``,
``network exists``. Exit 0 when the object is there, 1 when it is not, and print
nothing either way: scripts ask with ``if berth container exists web; then ...``.
Anything else (a malformed name, an engine that does not answer) keeps its own exit
code and message, so "no" is never confused with "could not tell"."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.errors import NotFound, WrongNode

MISSING = 1
"""podman's exit status of ``exists`` for an object that is not there."""


def exists(lookup: Callable[[], Any]) -> int:
    """0 if ``lookup`` finds the object, 1 if it raises NotFound. A container the log
    still knows but that was removed (``inspect`` shows it, for the audit trail) does
    not exist any more."""
    try:
        found = lookup()
    except WrongNode:
        raise
    except NotFound:
        return MISSING
    if isinstance(found, dict) and found.get("state") == "removed":
        return MISSING
    return 0
