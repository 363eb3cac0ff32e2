"""``berth db backup`` / ``restore`` on both backends: the restored log has the same
rows and hashes (audit chain and read model verify, same head), a backup never
overwrites, a restore never writes into a store that holds events."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine import events as ev
from engine.errors import AlreadyExists, InvalidArgument, NotFound
from engine.store import backup
from engine.store.store import EventStore
from migrations.runner import upgrade
from tests import pgserver
from tests.store.helpers import create, run

REPO = Path(__file__).resolve().parents[2]


def _fill(store: EventStore, containers: int = 5) -> tuple[int, str]:
    for i in range(containers):
        cid = create(store, name=f"c{i}")
        run(store, cid, 1, ev.PidReceived(100 + i, 200 + i), ev.Started())
    return store.head()


def _berth(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "berth", *args], env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def _same_log(url: str, head: tuple[int, str]) -> None:
    with EventStore(url) as copy:
        assert copy.head() == head
        assert copy.verify_chain() is None
        assert copy.verify_read_model() == []
        assert sorted(s.name for s in copy.list_containers(all=True)) == [f"c{i}" for i in range(5)]


def test_sqlite_backup_while_writing_and_restore_through_the_cli(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'berth.db'}"
    upgrade(url)
    with EventStore(url) as store:
        head = _fill(store)
        out = tmp_path / "copy.db"
        done = _berth("db", "backup", str(out), "--db", url)
        assert done.returncode == 0, done.stderr
        assert os.stat(out).st_mode & 0o077 == 0
        again = _berth("db", "backup", str(out), "--db", url)
        assert again.returncode == 125 and "exists; a backup never overwrites" in again.stderr
        run(store, create(store, name="later"), 1, ev.PidReceived(7, 8))  # after the backup
    restored = f"sqlite:///{tmp_path / 'restored.db'}"
    done = _berth("db", "restore", str(out), "--db", restored)
    assert done.returncode == 0, done.stderr
    assert os.stat(tmp_path / "restored.db").st_mode & 0o777 == 0o600  # the whole log
    _same_log(restored, head)
    before = (tmp_path / "restored.db").read_bytes()
    refused = _berth("db", "restore", str(out), "--db", restored)
    assert refused.returncode == 125 and "restore into a new store only" in refused.stderr
    assert (tmp_path / "restored.db").read_bytes() == before


def test_bad_backup_arguments_are_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no backup at"):
        backup.restore(f"sqlite:///{tmp_path / 'x.db'}", str(tmp_path / "missing"))
    with pytest.raises(InvalidArgument, match="in-memory SQLite store"):
        backup.backup("sqlite://", str(tmp_path / "m"))
    assert not (tmp_path / "m").exists()
    with pytest.raises(NotFound, match="no SQLite store at"):
        backup.backup(f"sqlite:///{tmp_path / 'none.db'}", str(tmp_path / "n"))
    assert not (tmp_path / "n").exists(), "a failed backup left a file"
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"not a database" * 100)
    with pytest.raises(InvalidArgument, match="is not an intact SQLite database"):
        backup.restore(f"sqlite:///{tmp_path / 'y.db'}", str(garbage))
    assert not (tmp_path / "y.db").exists()
    no_file = _berth("db", "backup")
    assert no_file.returncode == 125 and "berth db backup needs a FILE" in no_file.stderr
    with pytest.raises(AlreadyExists):
        backup.backup(f"sqlite:///{tmp_path / 'none.db'}", str(garbage))


@pytest.mark.postgres
def test_postgres_pg_dump_and_pg_restore_into_an_empty_database(
        pg: pgserver.PgServer, tmp_path: Path) -> None:
    with pg.fresh_database() as url, pg.fresh_database() as empty:
        upgrade(url)
        with EventStore(url) as store:
            head = _fill(store)
        out = tmp_path / "log.dump"
        done = _berth("db", "backup", str(out), "--db", url)
        assert done.returncode == 0, done.stderr
        done = _berth("db", "restore", str(out), "--db", empty)
        assert done.returncode == 0, done.stderr
        _same_log(empty, head)
        refused = _berth("db", "restore", str(out), "--db", empty)
        assert refused.returncode == 125 and "pg_restore failed" in refused.stderr
        _same_log(empty, head)  # the refused restore changed nothing
