"""Image commands parsed once at the worker's edge (pure): bad input is one sentence."""

from __future__ import annotations

from typing import Any

import pytest

from engine import command_types as t
from engine.errors import InvalidArgument
from engine.images import commands as ic
from engine.parsing import parse


def test_every_image_command_type_parses() -> None:
    args: dict[str, dict[str, Any]] = {
        t.IMAGE_PULL: {"reference": "busybox"}, t.IMAGE_LIST: {},
        t.IMAGE_INSPECT: {"reference": "busybox"},
        t.IMAGE_REMOVE: {"references": ["busybox"]}, t.IMAGE_LOAD: {"path": "/a.tar"},
        t.IMAGE_IMPORT: {"path": "/a.tar", "reference": "x"},
        t.IMAGE_SAVE: {"reference": "x", "path": "/o.tar"},
        t.IMAGE_PUSH: {"reference": "x", "destination": "r.io/x"},
        t.IMAGE_TAG: {"reference": "x", "target": "y"}, t.IMAGE_PRUNE: {},
    }
    assert set(args) == t.IMAGE_COMMANDS
    kinds = {type(parse(kind, None, a)) for kind, a in args.items()}
    assert len(kinds) == len(args)


@pytest.mark.parametrize(("kind", "args", "message"), [
    (t.IMAGE_PULL, {"reference": "docker://x"}, "without a transport"),
    (t.IMAGE_PULL, {"reference": "x", "creds": "nocolon"}, "USERNAME:PASSWORD"),
    (t.IMAGE_PULL, {"reference": "x", "tls_verify": "no"}, "true or false"),
    (t.IMAGE_PULL, {"reference": "x", "authfile": "/nonexistent/auth.json"}, "does not exist"),
    (t.IMAGE_LOAD, {"path": "relative.tar"}, "absolute path"),
    (t.IMAGE_REMOVE, {"references": []}, "one or more"),
    (t.IMAGE_SAVE, {"reference": "x", "path": "/o", "format": "zip"}, "unknown archive"),
])
def test_bad_image_commands_are_refused(kind: str, args: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse(kind, None, args)


def test_credentials_never_show_in_a_commands_repr() -> None:
    command = parse(t.IMAGE_PULL, None, {"reference": "x", "creds": "u:secret-pw"})
    assert isinstance(command, ic.Pull)
    assert "secret-pw" not in repr(command)
