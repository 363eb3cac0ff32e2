"""The front end's protocol, in one place (``frontend/berth.c`` speaks the same).

A request is one frame: ``MAGIC``, a 4-byte big-endian payload length, the payload;
the caller's fds 0, 1 and 2 ride on its first bytes as SCM_RIGHTS. The payload is
NUL-terminated strings: the umask in octal, the working directory, the number of
arguments, the arguments, then every ``NAME=value`` of the environment.

Answers are a kind byte and a 4-byte big-endian number:

* ``P pid``: the child that runs the command has started (signals go to it);
* ``X code``: the command's exit code;
* ``S signal``: the command's process was killed by that signal (the front end dies
  of the same signal, as the plain CLI's process would have);
* ``R length`` then that many bytes of UTF-8: refused, nothing ran; the front end
  prints the text when there is any and runs the plain Python CLI instead.

Everything here is pure (bytes in, values or ``BadRequest`` out): the tests feed it
garbage without a socket.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

MAGIC: Final = b"berth-cli/1\0"
PARENT_ENV: Final = "BERTH_CLI_SERVER_PARENT"
"""Set by ``berth up`` to its own pid for the server it starts: a server whose engine
died (killed -9, say) ends instead of living on as an orphan."""
HEADER: Final = len(MAGIC) + 4
MAX_REQUEST: Final = 2 * 1024 * 1024
"""Largest payload: the kernel's usual limit on one exec's arguments and environment
(ARG_MAX, 2 MiB), so whatever the plain CLI could be started with fits."""
FDS: Final = 3
"""Descriptors a request carries: the caller's stdin, stdout and stderr."""

STARTED: Final = b"P"
EXITED: Final = b"X"
KILLED: Final = b"S"
REFUSED: Final = b"R"


DIRECT: Final = frozenset({"up", "worker", "broker", "db", "cli-server"})
"""Commands that run servers of their own: never in a child of this one (the front
end sends them to the plain CLI; a server refuses them from any other client)."""
_TAKES_VALUE: Final = frozenset({"--timeout", "--key", "--server-key", "--root", "--runroot",
                                  "--log-level", "--out", "--events-backend",
                                  "--storage-driver", "--storage-opt"})


def first_word(argv: tuple[str, ...] | list[str]) -> str | None:
    """The first word of ``argv`` that is neither an option nor an option's value: the
    sub-command, as the front end's ``command_word`` finds it too."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word in _TAKES_VALUE:
            skip = True
        elif not word.startswith("-"):
            return word
    return None


def runs_in_python(argv: tuple[str, ...]) -> bool:
    """Whether ``argv`` names one of ``DIRECT`` (the front end's ``command_word``)."""
    return first_word(argv) in DIRECT


class BadRequest(Exception):
    """A request the server will not run; the message is one sentence for the caller."""


@dataclass(frozen=True, slots=True)
class Request:
    """One command as the caller would have run it."""

    umask: int
    cwd: str
    argv: tuple[str, ...]
    env: dict[str, str]


def payload_length(header: bytes) -> int:
    """The payload length a request's header announces; BadRequest for anything that is
    not berth's front end, or that announces more than ``MAX_REQUEST``."""
    if header[: len(MAGIC)] != MAGIC:
        raise BadRequest("this socket serves berth's front end only; the request did not "
                         "start with its greeting")
    (length,) = struct.unpack(">I", header[len(MAGIC):HEADER])
    if length > MAX_REQUEST:
        raise BadRequest(f"a request of {length} bytes is over the command server's limit of "
                         f"{MAX_REQUEST} bytes")
    return int(length)


def parse(payload: bytes) -> Request:
    """The request in ``payload`` (the bytes after the header)."""
    if not payload.endswith(b"\0"):
        raise BadRequest("the request's last field is not terminated")
    fields = payload[:-1].split(b"\0")
    if len(fields) < 3:
        raise BadRequest("the request has no umask, working directory or argument count")
    try:
        text = [f.decode("utf-8", "surrogateescape") for f in fields]
        umask, cwd, argc = int(text[0], 8), text[1], int(text[2])
    except ValueError:
        raise BadRequest("the request's umask or argument count is not a number") from None
    if not 0 <= umask <= 0o777 or not cwd.startswith("/"):
        raise BadRequest("the request's umask or working directory is invalid")
    if not 0 <= argc <= len(text) - 3:
        raise BadRequest("the request's argument count does not match its arguments")
    argv = tuple(text[3:3 + argc])
    env: dict[str, str] = {}
    for entry in text[3 + argc:]:
        name, sep, value = entry.partition("=")
        if sep and name:  # as execve: a string without '=' is not a variable
            env.setdefault(name, value)
    return Request(umask, cwd, argv, env)


def encode(request: Request) -> bytes:
    """The frame for ``request`` (the front end builds the same bytes in C)."""
    fields = [f"{request.umask:o}", request.cwd, str(len(request.argv)), *request.argv,
              *(f"{k}={v}" for k, v in request.env.items())]
    payload = b"".join(f.encode("utf-8", "surrogateescape") + b"\0" for f in fields)
    return MAGIC + struct.pack(">I", len(payload)) + payload


def answer(kind: bytes, number: int) -> bytes:
    return kind + struct.pack(">I", number)


def refusal(sentence: str = "") -> bytes:
    """``R``: the front end prints ``sentence`` (if any) and runs the plain CLI."""
    text = sentence.encode()
    return REFUSED + struct.pack(">I", len(text)) + text
