"""``berth cp``: files between the host and a container, as podman's ``cp``.

``CTR:PATH`` names a path in a container, anything else a host path (``-``: a tar on
stdin or stdout). What travels is a tar of one file or directory; on both sides it
is packed and unpacked by ``engine.containers.copying``, which keeps every path inside its root.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from bus.client import Client
from engine.errors import InvalidArgument

if TYPE_CHECKING:
    from berth.cli import AddCommand

COMMANDS = ("cp",)


def split(arg: str) -> tuple[str | None, str]:
    """``CTR:PATH`` -> (CTR, PATH); a host path -> (None, path). As podman: a colon
    after a slash (``./a:b``) belongs to a host path."""
    head, sep, tail = arg.partition(":")
    if sep and head and "/" not in head:
        return head, tail or "/"
    return None, arg


def cmd_cp(args: argparse.Namespace, client: Client) -> int:
    from engine.containers import copying
    from engine.inroot import Root

    src_ctr, src = split(args.src)
    dst_ctr, dst = split(args.dst)
    if (src_ctr is None) == (dst_ctr is None):
        raise InvalidArgument("cp copies between the host and a container: name the "
                              "container in one of SRC and DST as CTR:PATH")
    if src_ctr is not None:
        data = client.copy_out(src_ctr, _absolute_in_container(src))
        if dst == "-":
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        else:  # a container's archive: checked whole before anything is written
            copying.check_archive(data)
            with Root.open("/") as host:
                copying.unpack(host, copying.landing(host, os.path.abspath(dst)), data,
                               setid=False)
        return 0
    if dst_ctr is None:  # pragma: no cover - excluded above; narrows the type
        raise InvalidArgument("cp needs a container on one side")
    if src == "-":
        data = sys.stdin.buffer.read(copying.MAX_COPY + 1)
    else:
        with Root.open("/") as host:
            data = copying.pack(host, os.path.abspath(src))
    client.copy_in(dst_ctr, _absolute_in_container(dst), data)
    return 0


def _absolute_in_container(path: str) -> str:
    return path if path.startswith("/") else "/" + path


def add_commands(add: AddCommand) -> None:
    p = add("cp", cmd_cp, "copy files between the host and a container")
    p.add_argument("src", metavar="SRC",
                   help="CTR:PATH or a host path ('-': a tar on stdin)")
    p.add_argument("dst", metavar="DST",
                   help="CTR:PATH or a host path ('-': a tar on stdout); into DST if it is "
                        "a directory, else as DST")
