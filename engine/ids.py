"""Identifiers and names: generated here, validated at every edge.

Container ids and names become path components (bundle, logs, exit files) and
runc/conmon arguments, so the rules are strict on purpose: nothing that could
escape a directory or be read as an option gets past these checks.

The rules are written once, here, as predicates (``is_*``) that say yes or no;
each edge wraps them in its own error: the engine raises ``InvalidArgument``
(``validate_*``), the bus's framing raises ``ProtocolError`` with its own
sentence. The bus imports this module on the CLI's start-up path, so it must
stay cheap to import: ``re`` and ``os`` only (no ``uuid``, ``secrets``).
"""

from __future__ import annotations

import os
import re
from typing import TypeGuard

from engine.errors import InvalidArgument

ID_LENGTH = 64
MAX_NAME_LENGTH = 64
MAX_SESSION_ID_LENGTH = 64

_ID_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")
_HEX_ID_RE = re.compile(r"^[0-9a-f]{64}$")
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")
_NODE_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def new_container_id() -> str:
    """Return a fresh 64-hex container id, as podman and runc users expect."""
    return os.urandom(ID_LENGTH // 2).hex()


def new_uuid() -> str:
    """A random (version 4) UUID in its lowercase string form, built from
    ``os.urandom`` as ``uuid.uuid4`` does, without importing ``uuid``."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def is_full_id(value: str) -> bool:
    return bool(_HEX_ID_RE.fullmatch(value))


def is_uuid(value: object) -> TypeGuard[str]:
    """A lowercase UUID string (command and correlation ids)."""
    return isinstance(value, str) and bool(_UUID_RE.fullmatch(value))


def is_container_id(value: object) -> TypeGuard[str]:
    """Safe as a single path component and a runc argument."""
    return isinstance(value, str) and bool(_ID_RE.fullmatch(value)) and value not in (".", "..")


def is_container_ref(value: object) -> TypeGuard[str]:
    """A container id or a container name: what a command may name a container by."""
    return isinstance(value, str) and bool(_ID_RE.fullmatch(value)
                                           or _NAME_RE.fullmatch(value))


def is_node_name(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and bool(_NODE_RE.fullmatch(value))


def validate_container_id(value: object) -> str:
    """Accept only ids that are safe as a single path component and runc argument."""
    if not is_container_id(value):
        raise InvalidArgument(
            f"invalid container id {value!r}: use 1-64 characters from "
            "[a-zA-Z0-9_.-], starting with a letter or digit"
        )
    return value


def validate_name(value: object) -> str:
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise InvalidArgument(
            f"invalid container name {value!r}: use 1-{MAX_NAME_LENGTH} characters from "
            "[a-zA-Z0-9_.-], starting with a letter or digit"
        )
    return value


def validate_node(value: object) -> str:
    if not is_node_name(value):
        raise InvalidArgument(
            f"invalid node name {value!r}: use 1-63 characters from [a-zA-Z0-9_.-], "
            "starting with a letter or digit"
        )
    return value


def validate_session_id(value: object) -> str:
    """Exec session ids name pid files, so they follow the container id rules."""
    if not isinstance(value, str) or value == "":
        raise InvalidArgument("an exec session needs a non-empty session id")
    if not _ID_RE.fullmatch(value):
        raise InvalidArgument(
            f"invalid exec session id {value!r}: use 1-{MAX_SESSION_ID_LENGTH} characters "
            "from [a-zA-Z0-9_.-]"
        )
    return value
