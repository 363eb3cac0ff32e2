"""Where the bus listens: defaults from the environment, and safe ipc socket files.

The frontend (commands), backend (workers) and events endpoints default to ipc
sockets under ``$BERTH_RUN`` (``/run/berth``). Anyone who can connect to them can
run containers as root, so the run directory is created 0700 and the socket files
are chmod 0600 right after bind.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from engine.errors import AlreadyExists, InvalidArgument, PermissionDenied

DEFAULT_RUN_DIR = "/run/berth"
FRONTEND_SOCKET = "bus.sock"
BACKEND_SOCKET = "worker.sock"
EVENTS_SOCKET = "events.sock"

_TCP_RE = re.compile(r"^tcp://(?P<host>[^:/]+|\[[0-9a-fA-F:]+\]):(?P<port>\d+|\*)$")


@dataclass(frozen=True, slots=True)
class Endpoints:
    """The three bus endpoints, as zmq endpoint strings."""

    frontend: str
    backend: str
    events: str


def from_run_dir(run_dir: str | os.PathLike[str]) -> Endpoints:
    """ipc endpoints for the three sockets under one run directory."""
    base = Path(run_dir)
    return Endpoints(
        frontend=f"ipc://{base / FRONTEND_SOCKET}",
        backend=f"ipc://{base / BACKEND_SOCKET}",
        events=f"ipc://{base / EVENTS_SOCKET}",
    )


def derive(frontend: str) -> Endpoints:
    """Backend and events endpoints next to a frontend: same ipc dir, or ports +1/+2."""
    path = ipc_path(frontend)
    if path is not None:
        directory = path.parent
        return Endpoints(
            frontend=frontend,
            backend=f"ipc://{directory / BACKEND_SOCKET}",
            events=f"ipc://{directory / EVENTS_SOCKET}",
        )
    match = _TCP_RE.match(frontend)
    if match is None or match["port"] == "*":
        raise InvalidArgument(
            f"cannot derive the worker and events endpoints from {frontend!r}: "
            "set BERTH_BUS_WORKERS and BERTH_BUS_EVENTS"
        )
    host, port = match["host"], int(match["port"])
    return Endpoints(frontend, f"tcp://{host}:{port + 1}", f"tcp://{host}:{port + 2}")


def default_endpoints(env: Mapping[str, str] | None = None) -> Endpoints:
    """Endpoints from ``BERTH_BUS``/``BERTH_BUS_WORKERS``/``BERTH_BUS_EVENTS``/``BERTH_RUN``."""
    env = os.environ if env is None else env
    frontend = env.get("BERTH_BUS")
    if frontend:
        base = derive_lenient(frontend)
    else:
        base = from_run_dir(env.get("BERTH_RUN") or DEFAULT_RUN_DIR)
    return Endpoints(
        frontend=base.frontend,
        backend=env.get("BERTH_BUS_WORKERS") or base.backend,
        events=env.get("BERTH_BUS_EVENTS") or base.events,
    )


def derive_lenient(frontend: str) -> Endpoints:
    """Like derive, but leaves underivable endpoints empty for env vars to fill. A
    comma-separated list (a Binary Star pair: ``ipc:///a/bus.sock,ipc:///b/bus.sock``)
    derives each and lists them in the same order."""
    if "," in frontend:
        parts = [derive_lenient(one) for one in split(frontend)]
        return Endpoints(*(",".join(getattr(p, name) for p in parts) if all(
            getattr(p, name) for p in parts) else "" for name in ("frontend", "backend",
                                                                    "events")))
    try:
        return derive(frontend)
    except InvalidArgument:
        return Endpoints(frontend, "", "")


def split(endpoints: str) -> list[str]:
    """The endpoints of a comma-separated list (one broker, or a Binary Star pair)."""
    found = [e.strip() for e in endpoints.split(",") if e.strip()]
    if not found:
        raise InvalidArgument(f"no endpoint in {endpoints!r}")
    return found


def ipc_path(endpoint: str) -> Path | None:
    """The socket file of an ``ipc://`` endpoint, or None for other transports."""
    if endpoint.startswith("ipc://"):
        return Path(endpoint[len("ipc://") :])
    return None


def prepare_bind(endpoint: str) -> None:
    """Before binding an ipc endpoint: make its directory exist with mode 0700, and
    refuse to take over a socket another live process listens on (zmq would unlink
    it silently and steal its clients); a stale file left by a killed one is fine."""
    path = ipc_path(endpoint)
    if path is None:
        return
    directory = path.parent
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    for _ in range(10):  # a socket closed a moment ago may still be closing in zmq's thread
        if not (path.exists() and _someone_listens(path)):
            return
        time.sleep(0.05)
    raise AlreadyExists(f"another process already listens on {endpoint}")


def _someone_listens(path: Path) -> bool:
    import socket  # only the broker binds; the CLI never gets here

    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _refused(path: Path) -> bool:
    """The kernel refuses a connection: no process listens on this socket file. Any
    other failure is left to the client's own timeout to judge."""
    import errno
    import socket

    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError as exc:
        return exc.errno in (errno.ECONNREFUSED, errno.ENOENT)
    finally:
        probe.close()
    return False


def engine_expected(endpoint: str) -> str | None:
    """Why a broker should be back soon at an ipc endpoint nobody listens on, or None:
    something live in its run directory says the engine is there, and only the
    broker's socket is missing (a broker restarting under systemd, an embedded engine
    starting or stopping). Only live things count, never files left behind: a
    worker's stream socket that accepts a connection, or the embedded engine's lock
    held by its process."""
    path = ipc_path(endpoint)
    if path is None:
        return None
    directory = path.parent
    try:
        streams = sorted(directory.glob("stream-*.sock"))
    except OSError:
        return None
    for sock in streams:
        if _someone_listens(sock):
            return f"the worker listening on {sock} is up and waits for its broker"
    if _lock_held(directory / "berth.lock"):
        return f"the engine holding {directory / 'berth.lock'} is starting or stopping"
    return None


def _lock_held(path: Path) -> bool:
    """Some process holds the embedded engine's flock on ``path`` (a probe as brief as
    ``berth up``'s own: a starting engine retries a lock held only to look at it)."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # releases the probe's lock, if it got one
    return False


def secure_bound(endpoint: str) -> None:
    """After binding an ipc endpoint: let only the owner (root) connect to it."""
    path = ipc_path(endpoint)
    if path is not None and path.exists():
        os.chmod(path, 0o600)


def is_reachable(endpoint: str) -> bool:
    """False when nothing can be listening on an ipc endpoint: its socket file is
    missing, or left behind by a broker that stopped (``berth down``, kill -9) so the
    kernel refuses connections to it; otherwise a client would wait out its whole
    retry budget before saying so. PermissionDenied when this user may not use it
    (the bus is root-only), rather than a silent wait for a connection the kernel
    refuses."""
    path = ipc_path(endpoint)
    if path is None:
        return True
    try:
        path.stat()
    except FileNotFoundError:
        return False
    except PermissionError:
        allowed = False
    else:
        allowed = os.access(path, os.R_OK | os.W_OK)
    if not allowed:
        raise PermissionDenied(f"permission denied on {endpoint}: only root may use the berth bus")
    return not _refused(path)
