"""PostgreSQL failover under load: a primary with a synchronous streaming standby,
the primary killed -9 while commands flow, the standby promoted.

The store is given both servers in one libpq multi-host URL with
``target_session_attrs=read-write``, so a reconnection finds whichever is the
primary now; store calls retry (engine.store.retry) until the promotion. With
``synchronous_standby_names`` set, a commit is acknowledged only once the standby
has it, so every command acknowledged before the failover is in the log after it:
``workload.check_log`` proves that, gap-free positions, and no doubled outcome.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from migrations.runner import upgrade
from tests import pgserver
from tests.faults.cluster import Cluster
from tests.faults.workload import Ledger, Publisher, check_log, run_publishers
from tests.helpers import wait_until


def _bin(server: pgserver.PgServer) -> Path:
    assert server._owner
    return Path(server._owner[0])


def _run(server: pgserver.PgServer, tool: str, *args: str) -> None:
    done = subprocess.run(pgserver._as_owner([str(_bin(server) / tool), *args]),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"{tool}: {done.stdout}{done.stderr}"


def start_standby(primary: pgserver.PgServer) -> pgserver.PgServer:
    """pg_basebackup of the primary, started as a hot standby streaming from it."""
    root = Path(tempfile.mkdtemp(prefix="berth-pg-standby-"))
    (root / "sock").mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        shutil.chown(root / "sock", "postgres", "postgres")
    standby = pgserver.PgServer(host="127.0.0.1", port=0, user="postgres", password="",
                                admin_db="postgres", datadir=root)
    standby._owner.append(str(_bin(primary)))
    try:
        _run(primary, "pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port),
             "-U", "postgres", "-D", str(root / "data"), "-R", "-X", "stream",
             "-d", "application_name=standby1")
        for _ in range(5):
            port = pgserver._free_port()
            options = (f"-c listen_addresses=127.0.0.1 -p {port} -k {root / 'sock'} "
                       "-c max_connections=200 -c hot_standby=on")
            done = subprocess.run(pgserver._as_owner(
                [str(_bin(primary) / "pg_ctl"), "-D", str(root / "data"), "-l",
                 str(root / "server.log"), "-o", options, "-w", "-t", "60", "start"]),
                capture_output=True, text=True, timeout=90, check=False)
            if done.returncode == 0:
                standby.port = port
                return standby
        raise AssertionError(f"the standby did not start: {done.stderr}")
    except BaseException:
        pgserver.stop(standby)
        raise


@pytest.fixture
def pair() -> Iterator[tuple[pgserver.PgServer, pgserver.PgServer]]:
    if pgserver.find_bin_dir() is None:
        pytest.fail("PostgreSQL server binaries are required: run scripts/install.sh")
    primary = pgserver.start_private(durable=True)
    standby = None
    try:
        standby = start_standby(primary)
        with psycopg.connect(primary.url(primary.admin_db).replace("postgresql+psycopg",
                                                                   "postgresql"),
                             autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET synchronous_standby_names = 'standby1'")
            conn.execute("SELECT pg_reload_conf()")

            def synchronous() -> bool:
                row = conn.execute("SELECT sync_state FROM pg_stat_replication "
                                   "WHERE application_name = 'standby1'").fetchone()
                return row is not None and row[0] == "sync"

            wait_until(synchronous, 60, what="the standby replicating synchronously")
        yield primary, standby
    finally:
        if standby is not None:
            pgserver.stop(standby)
        pgserver.stop(primary)


def _postmaster_pid(server: pgserver.PgServer) -> int:
    assert server.datadir is not None
    with open(server.datadir / "data" / "postmaster.pid") as f:
        return int(f.readline())


def test_the_primary_killed_under_load_loses_no_acknowledged_command(
        short_tmp: str, busybox_rootfs: str,
        pair: tuple[pgserver.PgServer, pgserver.PgServer]) -> None:
    primary, standby = pair
    name = primary.create_database()
    url = (f"postgresql+psycopg://postgres@/{name}?host=127.0.0.1:{primary.port}"
           f"&host=127.0.0.1:{standby.port}&target_session_attrs=read-write")
    wait_until(lambda: _exists_on(standby, name), 60, what="the database on the standby")
    upgrade(url)
    cluster = Cluster(short_tmp, busybox_rootfs, url)
    cluster.extra_env["BERTH_STORE_RETRY_SECONDS"] = "120"
    recovered: list[float] = []
    try:
        cluster.start_broker_thread()
        cluster.start_worker("local")
        ledger = Ledger()
        publishers = [Publisher(cluster.client(timeout=5, retries=0), ledger, busybox_rootfs,
                                "local", seed=40 + i) for i in range(3)]

        def failover() -> None:
            wait_until(lambda: len(ledger) >= 40 or ledger.errors, 60, what="load running")
            os.kill(_postmaster_pid(primary), signal.SIGKILL)
            killed = time.monotonic()
            before = len(ledger)
            time.sleep(1.0)  # the primary is gone and nobody has promoted yet
            assert standby.datadir is not None
            _run(standby, "pg_ctl", "-D", str(standby.datadir / "data"), "-w", "promote")
            wait_until(lambda: len(ledger) >= before + 30 or ledger.errors, 120,
                       what="commands completing on the new primary")
            recovered.append(time.monotonic() - killed)

        run_publishers(publishers, failover)
        worker = cluster.nodes["local"].proc
        assert worker is not None and worker.poll() is None, "the worker died in the failover"
        with cluster.store() as store:
            counts = check_log(store, ledger)
        print(f"\nfailover: {len(ledger)} commands, service back {recovered[0]:.1f}s after "
              f"the kill (1.0s of it before the promotion); {counts}")
    finally:
        cluster.close()


def _exists_on(server: pgserver.PgServer, name: str) -> bool:
    try:
        with psycopg.connect(server.url(server.admin_db).replace("postgresql+psycopg",
                                                                 "postgresql")) as conn:
            return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                (name,)).fetchone() is not None
    except psycopg.Error:
        return False
