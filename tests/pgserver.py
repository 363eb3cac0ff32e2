"""A PostgreSQL server for tests: an external one named by environment, or a private one.

With ``BERTH_PG_HOST`` set, tests use that server (``BERTH_PG_PORT``, ``BERTH_PG_USER``,
``BERTH_PG_PASSWORD``, ``BERTH_PG_DB``; docker-compose.test.yml starts a matching one).
Otherwise a throwaway server is made with the Debian PostgreSQL binaries: initdb into a
fresh temp dir, listening only on 127.0.0.1 at a free port with its socket inside that
dir, run as the ``postgres`` user when we are root (postgres refuses to run as root).

Every test gets its own database (``fresh_database``), so tests can run in parallel
under pytest-xdist, each worker with its own private server.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg

PG_BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin",
               "/usr/lib/postgresql/17/bin")
START_TIMEOUT_S = 60


class PgUnavailable(RuntimeError):
    """Neither an external server is configured nor can a private one be started."""


@dataclass
class PgServer:
    host: str
    port: int
    user: str
    password: str
    admin_db: str
    datadir: Path | None = None
    _owner: list[str] = field(default_factory=list)

    def url(self, database: str | None = None) -> str:
        auth = quote(self.user, safe="")
        if self.password:
            auth += ":" + quote(self.password, safe="")
        return (f"postgresql+psycopg://{auth}@{self.host}:{self.port}/"
                f"{database or self.admin_db}")

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(host=self.host, port=self.port, user=self.user,
                               password=self.password or None, dbname=self.admin_db,
                               autocommit=True, connect_timeout=10)

    def create_database(self, prefix: str = "berth_test") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:16]}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    @contextmanager
    def fresh_database(self) -> Iterator[str]:
        """A new empty database for one test; its URL is yielded, dropped after."""
        name = self.create_database()
        try:
            yield self.url(name)
        finally:
            self.drop_database(name)


def from_env() -> PgServer | None:
    host = os.environ.get("BERTH_PG_HOST")
    if not host:
        return None
    return PgServer(
        host=host,
        port=int(os.environ.get("BERTH_PG_PORT", "5432")),
        user=os.environ.get("BERTH_PG_USER", "berth"),
        password=os.environ.get("BERTH_PG_PASSWORD", "berth"),
        admin_db=os.environ.get("BERTH_PG_DB", "berth"),
    )


def find_bin_dir() -> Path | None:
    for candidate in PG_BIN_DIRS:
        if Path(candidate, "initdb").exists():
            return Path(candidate)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_owner(argv: list[str]) -> list[str]:
    # postgres will not run as root; as root, become the postgres user for it.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


def start_private(bin_dir: Path | None = None, *, durable: bool = False,
                  extra_listen: tuple[str, ...] = (), trust_cidrs: tuple[str, ...] = ()
                  ) -> PgServer:
    """initdb + pg_ctl start a private server; the caller must ``stop`` it.

    Tests run it with fsync off (nothing there needs to survive a crash); benchmarks
    pass ``durable=True`` so its commits cost what a real server's do. Multi-host
    tests (tests/multihost) make it also listen on a bridge address
    (``extra_listen``) and trust clients from their private test range
    (``trust_cidrs``), since initdb only trusts loopback.
    """
    bin_dir = bin_dir or find_bin_dir()
    if bin_dir is None:
        raise PgUnavailable("no PostgreSQL server binaries found and BERTH_PG_HOST unset")
    root = Path(tempfile.mkdtemp(prefix="berth-pg-"))
    datadir, sockdir = root / "data", root / "sock"
    sockdir.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        shutil.chown(sockdir, "postgres", "postgres")
    server = PgServer(host="127.0.0.1", port=0, user="postgres", password="",
                      admin_db="postgres", datadir=root)
    try:
        subprocess.run(
            _as_owner([str(bin_dir / "initdb"), "-D", str(datadir), "-U", "postgres",
                       "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions"]),
            check=True, capture_output=True, timeout=START_TIMEOUT_S)
        if trust_cidrs:
            with open(datadir / "pg_hba.conf", "a") as hba:
                hba.writelines(f"host all all {cidr} trust\n" for cidr in trust_cidrs)
        listen = ",".join(("127.0.0.1", *extra_listen))
        last_error = ""
        for _ in range(5):  # a free port can be taken between probe and bind
            port = _free_port()
            options = (f"-c listen_addresses={listen} -p {port} -k {sockdir} "
                       "-c max_connections=200")
            if not durable:
                options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            done = subprocess.run(
                _as_owner([str(bin_dir / "pg_ctl"), "-D", str(datadir), "-l",
                           str(root / "server.log"), "-o", options, "-w", "-t",
                           str(START_TIMEOUT_S), "start"]),
                capture_output=True, text=True, timeout=START_TIMEOUT_S + 10, check=False)
            if done.returncode == 0:
                server.port = port
                server._owner.append(str(bin_dir))
                return server
            last_error = done.stderr + _tail(root / "server.log")
        raise PgUnavailable(f"PostgreSQL did not start: {last_error}")
    except BaseException:
        stop(server)
        raise


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-2000:]
    except OSError:
        return ""


def stop(server: PgServer) -> None:
    """Stop a private server (immediate: tests do not need a clean checkpoint) and
    delete its directory. A no-op for an external server."""
    if server.datadir is None:
        return
    if server._owner:
        bin_dir = Path(server._owner[0])
        subprocess.run(
            _as_owner([str(bin_dir / "pg_ctl"), "-D", str(server.datadir / "data"),
                       "-m", "immediate", "-w", "stop"]),
            capture_output=True, timeout=60, check=False)
    shutil.rmtree(server.datadir, ignore_errors=True)


@contextmanager
def pg_server(*, durable: bool = False) -> Iterator[PgServer]:
    """The external server if configured, else a private one stopped on exit."""
    external = from_env()
    if external is not None:
        yield external
        return
    server = start_private(durable=durable)
    try:
        yield server
    finally:
        stop(server)
