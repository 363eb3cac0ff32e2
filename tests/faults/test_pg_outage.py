"""PostgreSQL goes away for seconds while commands flow, then comes back.

The worker's store calls fail with connection errors meanwhile; the store retries
them with backoff (engine.store.retry) and the commands complete once the server
is back. Publishers only see slow replies. Afterwards the log has no gap and no
doubled event, every command has exactly one outcome, and the read model equals a
rebuild: an append whose commit outcome was lost with the connection was not
written twice.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from migrations.runner import upgrade
from tests import pgserver
from tests.faults.cluster import Cluster
from tests.faults.workload import Ledger, Publisher, check_log, run_publishers
from tests.helpers import wait_until

OUTAGE_S = 4.0


@pytest.fixture
def pg() -> Iterator[pgserver.PgServer]:
    """A private server the test may stop and start (an external one cannot be)."""
    if pgserver.find_bin_dir() is None:
        pytest.fail("PostgreSQL server binaries are required: run scripts/install.sh")
    # Durable: with synchronous_commit=off (the suite's fast setting) an immediate
    # stop loses the last commits the server had already acknowledged, which no
    # client-side retry can bring back.
    server = pgserver.start_private(durable=True)
    try:
        yield server
    finally:
        pgserver.stop(server)


def _pg_ctl(server: pgserver.PgServer, *args: str) -> None:
    assert server.datadir is not None and server._owner
    bin_dir, root = Path(server._owner[0]), server.datadir
    done = subprocess.run(
        pgserver._as_owner([str(bin_dir / "pg_ctl"), "-D", str(root / "data"), *args]),
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def stop_immediately(server: pgserver.PgServer) -> None:
    """As a crash would: no shutdown checkpoint, every connection cut."""
    _pg_ctl(server, "-m", "immediate", "-w", "stop")


def start_again(server: pgserver.PgServer) -> None:
    """Same data directory, port and options as tests.pgserver's durable server."""
    assert server.datadir is not None
    options = (f"-c listen_addresses=127.0.0.1 -p {server.port} -k {server.datadir / 'sock'} "
               "-c max_connections=200")
    _pg_ctl(server, "-l", str(server.datadir / "server.log"), "-o", options, "-w", "-t", "60",
            "start")


def test_postgres_restart_mid_load_completes_every_command_once(
        short_tmp: str, busybox_rootfs: str, pg: pgserver.PgServer) -> None:
    url = pg.url(pg.create_database())
    upgrade(url)  # once, up front
    cluster = Cluster(short_tmp, busybox_rootfs, url)
    cluster.extra_env["BERTH_STORE_RETRY_SECONDS"] = "120"
    try:
        broker = cluster.start_broker_thread()
        cluster.start_worker("local")
        ledger = Ledger()
        publishers = [Publisher(cluster.client(timeout=2, retries=0), ledger, busybox_rootfs,
                                "local", seed=i) for i in range(3)]

        def in_flight() -> bool:
            try:
                pending = list(broker.router.outstanding.values())
            except RuntimeError:
                return False
            return any(p.command.type.startswith("container.") for p in pending)

        def fault() -> None:
            wait_until(lambda: len(ledger) >= 30 or ledger.errors, 60, what="load running")
            stop_immediately(pg)
            down_since = time.monotonic()
            answered = len(ledger)
            # Down for OUTAGE_S, and long enough that commands are stuck in the worker.
            wait_until(lambda: time.monotonic() - down_since > OUTAGE_S and in_flight(), 60,
                       interval=0.05, what="commands in flight during the outage")
            stuck = len(ledger) - answered
            start_again(pg)
            wait_until(lambda: len(ledger) >= answered + 30 or ledger.errors, 90,
                       what="commands completing after the restart")
            assert stuck <= 2 * len(publishers), "commands completed while the store was down"

        run_publishers(publishers, fault)
        assert cluster.nodes["local"].proc is not None
        assert cluster.nodes["local"].proc.poll() is None, "the worker died during the outage"
        with cluster.store() as store:
            counts = check_log(store, ledger)
        assert counts["resends"] > 0, "no publisher waited through the outage"
        with open(cluster.nodes["local"].log, errors="replace") as f:
            assert "store unreachable" in f.read(), "the worker never retried a store call"
    finally:
        cluster.close()
