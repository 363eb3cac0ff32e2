"""Identifiers and names: generated here, validated at every edge.

Container ids and names become path components (bundle, logs, exit files) and
runc/conmon arguments, so the rules are strict on purpose: nothing that could
escape a directory or be read as an option gets past these checks.
"""

from __future__ import annotations

import re
import secrets
import uuid

from engine.errors import InvalidArgument

ID_LENGTH = 64
MAX_NAME_LENGTH = 64
MAX_SESSION_ID_LENGTH = 64

_ID_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")
_HEX_ID_RE = re.compile(r"^[0-9a-f]{64}$")
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")
_NODE_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")


def new_container_id() -> str:
    """Return a fresh 64-hex container id, as podman and runc users expect."""
    return secrets.token_hex(ID_LENGTH // 2)


def new_uuid() -> str:
    return str(uuid.uuid4())


def is_full_id(value: str) -> bool:
    return bool(_HEX_ID_RE.match(value))


def validate_container_id(value: object) -> str:
    """Accept only ids that are safe as a single path component and runc argument."""
    if not isinstance(value, str) or not _ID_RE.match(value) or value in (".", ".."):
        raise InvalidArgument(
            f"invalid container id {value!r}: use 1-64 characters from "
            "[a-zA-Z0-9_.-], starting with a letter or digit"
        )
    return value


def validate_name(value: object) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise InvalidArgument(
            f"invalid container name {value!r}: use 1-{MAX_NAME_LENGTH} characters from "
            "[a-zA-Z0-9_.-], starting with a letter or digit"
        )
    return value


def validate_node(value: object) -> str:
    if not isinstance(value, str) or not _NODE_RE.match(value):
        raise InvalidArgument(
            f"invalid node name {value!r}: use 1-63 characters from [a-zA-Z0-9_.-], "
            "starting with a letter or digit"
        )
    return value


def validate_session_id(value: object) -> str:
    """Exec session ids name pid files, so they follow the container id rules."""
    if not isinstance(value, str) or value == "":
        raise InvalidArgument("an exec session needs a non-empty session id")
    if not _ID_RE.match(value):
        raise InvalidArgument(
            f"invalid exec session id {value!r}: use 1-{MAX_SESSION_ID_LENGTH} characters "
            "from [a-zA-Z0-9_.-]"
        )
    return value
