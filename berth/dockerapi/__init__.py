"""The Docker Engine API on a unix socket (issue 23): ``berth api`` serves it alone
against a running broker, ``berth up`` beside its engine. HTTP in, bus commands
out: a publisher like the CLI (docs/docker-api.md)."""

from __future__ import annotations

import logging
import os
import signal
from typing import Final

from engine.errors import InvalidArgument

log = logging.getLogger("berth.docker-api")

SOCKET_NAME: Final = "docker.sock"
SOCKET_ENV: Final = "BERTH_DOCKER_SOCKET"


def socket_path(run_dir: str, setting: str | None = None) -> str | None:
    """Where ``berth up`` serves: ``$BERTH_RUN/docker.sock``, another path that
    ``BERTH_DOCKER_SOCKET`` names (a path or ``unix://PATH``), or None for ``0``."""
    value = os.environ.get(SOCKET_ENV, "") if setting is None else setting
    if value == "0":
        return None
    if not value or value == "1":
        return os.path.join(run_dir, SOCKET_NAME)
    return bind_path(value)


def bind_path(bind: str) -> str:
    """``unix:///path`` or ``/path`` -> the path; anything else is one sentence."""
    path = bind[len("unix://"):] if bind.startswith("unix://") else bind
    if not path.startswith("/") or "\x00" in path or len(path) > 107:
        raise InvalidArgument(f"invalid Docker API socket {bind!r}: give unix:///ABSOLUTE/PATH "
                              "(at most 107 bytes)")
    return path


def serve(path: str, endpoint: str | None = None) -> int:
    """Serve until SIGTERM or SIGINT; 0 then."""
    from berth.dockerapi.app import DockerApi
    from berth.dockerapi.server import Server

    api = DockerApi(endpoint)
    server = Server(path, api, on_close=api.release)
    log.info("serving the Docker API on %s", path)

    def stop(_signo: int, _frame: object) -> None:
        server.request_stop()  # the accept loop sees it within half a second

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    from berth.cliserver.protocol import PARENT_ENV

    parent = os.environ.get(PARENT_ENV, "")
    try:
        server.serve_forever(int(parent) if parent.isdigit() else None)
    finally:
        server.stop()  # on this thread, so the socket file is gone before the exit
    return 0
