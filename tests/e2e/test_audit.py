"""The audit commands through the CLI, against a worker that signs with an auditor key:
checkpoint to a file, prove, check the proof offline, and catch a rewrite that
recomputed the whole hash chain."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from sqlalchemy import delete, update

from bus.broker import Broker
from engine.audit import chain as audit
from engine.store.schema import commands, events, tree_heads
from engine.store.store import EventStore
from tests.e2e.conftest import Engine
from tests.helpers import wait_until
from tests.store.helpers import forge_append


@pytest.fixture
def default_network() -> str:
    """Not about networks: the worker gives containers none (no CNI cost)."""
    return "none"


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def _signed_engine(engine: Engine, tmp_path: Path, interval: float = 0.2) -> Path:
    """An auditor key made with the CLI, and the worker started with it (signing a
    head every ``interval`` seconds while the log grows; 0: only when asked)."""
    keys = tmp_path / "keys"
    if not (keys / "node1.audit_key_secret").exists():
        out = _ok(engine.cli("keys", "generate", "--role", "auditor", "node1", "--dir",
                             str(keys)))
        assert "node1.audit_key_secret" in out
    assert os.stat(keys / "node1.audit_key_secret").st_mode & 0o077 == 0
    config = engine.config()
    config.audit_key_file = str(keys / "node1.audit_key_secret")
    config.audit_interval = interval
    from workers.worker import Worker

    if engine.worker is not None:  # a restart: the same key, no memory
        engine.worker.close()
    engine.worker = Worker(config)
    engine.worker.start()
    wait_until(lambda: engine.worker is not None and engine.worker.link is not None
               and engine.worker.link.connected.is_set(), 10, what="worker connected")
    return keys / "node1.audit_key"


def test_checkpoint_prove_and_check_offline_then_a_rewrite_is_caught(
        engine: Engine, tmp_path: Path) -> None:
    public = _signed_engine(engine, tmp_path)
    cid = _ok(engine.cli("create", "--name", "a1", engine.rootfs, "true")).strip()
    _ok(engine.cli("rm", cid))
    head_file, proof_file = tmp_path / "head.json", tmp_path / "proof.json"
    _ok(engine.cli("audit", "checkpoint", "--out", str(head_file)))
    head = json.loads(head_file.read_text())
    assert head["size"] >= 2 and head["signature"]
    _ok(engine.cli("audit", "prove", "1", "--out", str(proof_file)))
    for written in (head_file, proof_file):  # a proof carries its row's bytes
        assert os.stat(written).st_mode & 0o777 == 0o600, written
    checked = engine.cli("audit", "check-proof", str(proof_file), "--head", str(head_file),
                         "--key", str(public))
    assert "proof verified: event 1" in _ok(checked)
    verified = _ok(engine.cli("audit", "verify", "--against", str(head_file),
                              "--key", str(public)))
    assert "audit chain verified" in verified and "signed heads: " in verified
    # The log grows; a consistency proof shows the old head's events are still there.
    _ok(engine.cli("create", "--name", "a2", engine.rootfs, "true"))
    growth = tmp_path / "growth.json"
    _ok(engine.cli("audit", "prove", "--since", str(head_file), "--out", str(growth)))
    grew = _ok(engine.cli("audit", "check-proof", str(growth), "--head", str(head_file),
                          "--key", str(public)))
    assert "still holds the" in grew
    # The worker also signs on its own while the log grows.
    store = engine.store()
    try:
        wait_until(lambda: any(h.signed for h in store.tree_heads()), 10,
                   what="a periodic signed head")
        # A rewrite by someone who recomputes every hash: the chain alone sees nothing.
        with store._engine.begin() as conn:
            conn.execute(update(events).where(events.c.position == 1)
                         .values(actor="mallory"))
            prev = audit.GENESIS
            for row in list(audit.chain_rows(conn)):
                digest = audit.link(prev, row)
                conn.execute(update(events).where(events.c.position == row["position"])
                             .values(prev_hash=prev, hash=digest))
                prev = digest
        assert store.verify_chain() is None
    finally:
        store.close()
    # The worker signs only what it read: new rows do not link to the rewritten chain.
    _ok(engine.cli("create", "--name", "a3", engine.rootfs, "true"))
    refused = engine.cli("audit", "checkpoint")
    assert refused.returncode != 0 and "not signing it" in refused.stderr
    no_growth = engine.cli("audit", "prove", "--since", str(head_file))
    assert no_growth.returncode != 0 and "not signing it" in no_growth.stderr
    failed = engine.cli("audit", "verify", "--against", str(head_file), "--key", str(public))
    assert failed.returncode == 1, failed
    assert "first position affected: 1" in failed.stderr
    # The proof taken before still checks against the head; the worker, which read
    # the log before it was rewritten, proves nothing from it (the new row does not
    # link to what it read).
    assert "proof verified" in _ok(engine.cli(
        "audit", "check-proof", str(proof_file), "--head", str(head_file),
        "--key", str(public)))
    stale = engine.cli("audit", "prove", "1")
    assert stale.returncode != 0 and "the log is broken at position" in stale.stderr
    # A proof made from the rewritten row (as a worker that never read it would make
    # one) does not check against the head.
    proof = json.loads(proof_file.read_text())
    store = engine.store()
    try:
        with store._engine.connect() as conn:
            row = next(r for r in audit.chain_rows(conn) if r["position"] == 1)
        proof["event"]["canonical"] = audit.canonical(row).hex()
    finally:
        store.close()
    proof_file.write_text(json.dumps(proof))
    forged = engine.cli("audit", "check-proof", str(proof_file), "--head", str(head_file),
                        "--key", str(public))
    assert forged.returncode == 1 and "not the leaf" in forged.stderr


def test_a_forged_append_is_reported_and_never_signed(
        engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A row forged after the newest head, chained and with its commands row: its
    missing writer signature gives it away, and no head is signed over it."""
    public = _signed_engine(engine, tmp_path)
    _ok(engine.cli("create", "--name", "f1", engine.rootfs, "true"))
    verified = _ok(engine.cli("audit", "verify", "--key", str(public)))
    assert ("writer signatures: verified on positions" in verified
            or "writer signatures: none verified (no row after the newest signed head)"
            in verified), verified
    store = engine.store()
    try:
        wait_until(lambda: any(h.signed and h.size == store.max_position()
                               for h in store.tree_heads()), 10, what="a head over the log")
        caplog.set_level(logging.ERROR, logger="berth.worker")
        with store._engine.begin() as conn:
            forge_append(conn, "unsigned")
        forged = store.max_position()
        failed = engine.cli("audit", "verify", "--key", str(public))
        assert failed.returncode == 1, failed
        assert (f"position {forged}: forged at position {forged}: the event row carries "
                "no writer signature") in failed.stderr
        assert f"first position affected: {forged}" in failed.stderr
        refused = engine.cli("audit", "checkpoint")
        assert refused.returncode != 0 and f"forged at position {forged}" in refused.stderr
        replay = engine.cli("projection", "rebuild")  # nor replayed into the read model
        assert replay.returncode == 1 and f"forged, at position {forged}" in replay.stderr
        wait_until(lambda: f"forged at position {forged}" in caplog.text, 10,
                   what="the periodic signer refusing")
        assert max(h.size for h in store.tree_heads()) < forged
    finally:
        store.close()


def test_without_a_key_heads_are_unsigned_and_verify_says_so(up: Engine,
                                                              tmp_path: Path) -> None:
    _ok(up.cli("create", "--name", "b1", up.rootfs, "true"))
    result = up.cli("audit", "checkpoint", "--out", str(tmp_path / "h.json"))
    assert "UNSIGNED" in _ok(result) + result.stderr
    out = _ok(up.cli("audit", "verify", "--against", str(tmp_path / "h.json")))
    assert "no auditor key" in out and "no signed head checked" in out
    # It says what it did not check, and never that a signature checks.
    assert "writer signatures: NOT checked: no auditor key is trusted" in out
    assert "verified on positions" not in out
    bad = up.cli("audit", "verify", "--against", str(tmp_path / "missing.json"))
    assert bad.returncode != 0 and "cannot read" in bad.stderr


def test_projection_rebuild_verify_compares_first_and_refuses_a_broken_chain(
        up: Engine) -> None:
    from engine.store.schema import containers

    cid = _ok(up.cli("create", "--name", "c1", up.rootfs, "true")).strip()
    store = up.store()
    try:
        with store._engine.begin() as conn:
            conn.execute(update(containers).where(containers.c.id == cid)
                         .values(state="hacked"))
        up.worker.store._recorder.forget_states()  # type: ignore[union-attr]
        found = up.cli("projection", "rebuild", "--verify")
        assert found.returncode == 1, found
        assert f"difference: {cid}: state: log='created' row='hacked'" in found.stdout
        assert "verification FAILED" in found.stdout
        assert store.get_container(cid).state == "created"  # then it was rebuilt
        # A broken chain: the edited row is reported and left alone, unless forced.
        with store._engine.begin() as conn:
            conn.execute(update(containers).where(containers.c.id == cid)
                         .values(state="hacked"))
            conn.execute(update(events).where(events.c.position == 1).values(actor="x"))
        refused = up.cli("projection", "rebuild", "--verify")
        assert refused.returncode == 1
        assert ("refused to rebuild: the log's hash chain is broken, or a row is forged, at "
                "position 1") in refused.stderr
        assert "row='hacked'" in refused.stdout
        assert store.get_container(cid).state == "hacked"
        forced = up.cli("projection", "rebuild", "--force")
        assert forced.returncode == 1 and "rebuilt the read model" in forced.stdout
        assert store.get_container(cid).state == "created"
    finally:
        store.close()


def test_export_check_offline_and_import_into_an_empty_store(
        engine: Engine, tmp_path: Path) -> None:
    from engine.store import readmodel
    from engine.store.store import EventStore

    public = _signed_engine(engine, tmp_path)
    cid = _ok(engine.cli("create", "--name", "x1", engine.rootfs, "true")).strip()
    _ok(engine.cli("create", "--name", "x2", engine.rootfs, "true"))
    _ok(engine.cli("rm", cid))
    export = tmp_path / "log.jsonl"
    export.write_text("an older file, world-readable\n")
    export.chmod(0o644)
    done = engine.cli("events", "export", "--format", "jsonl", "--out", str(export))
    assert "exported" in _ok(done) + done.stderr
    # The payloads hold the containers' environments: the export is the owner's only.
    assert os.stat(export).st_mode & 0o777 == 0o600
    checked = engine.cli("audit", "check-export", str(export), "--key", str(public))
    assert "export verified" in _ok(checked)
    copy_url = f"sqlite:///{tmp_path / 'copy.db'}"
    imported = engine.cli("log", "import", str(export), "--db", copy_url, "--key", str(public))
    assert "head signature checked" in _ok(imported)
    again = engine.cli("log", "import", str(export), "--db", copy_url)
    assert again.returncode != 0 and "not empty" in again.stderr
    source, copy = engine.store(), EventStore(copy_url)
    try:
        size = json.loads(export.read_text().splitlines()[0])["head"]["size"]
        a, b = source.scan_log(), copy.scan_log()
        assert a.leaves[:size] == b.leaves and b.size == size
        with source._engine.connect() as x, copy._engine.connect() as y:
            assert readmodel.all_states(x) == readmodel.all_states(y)
    finally:
        source.close()
        copy.close()
    # CSV: the same rows for table tools, its head in a file beside it.
    table = tmp_path / "log.csv"
    _ok(engine.cli("events", "export", "--format", "csv", "--out", str(table)))
    assert table.read_text().splitlines()[0].startswith("position,stream,")
    for written in (table, Path(f"{table}.head.json")):
        assert os.stat(written).st_mode & 0o777 == 0o600, written
    csv_copy = f"sqlite:///{tmp_path / 'copy2.db'}"
    assert "imported" in _ok(engine.cli("log", "import", str(table), "--db", csv_copy,
                                        "--key", str(public)))
    # A tampered export is refused, nothing written.
    lines = export.read_text().splitlines()
    row = json.loads(lines[1])
    row["actor"] = "mallory"
    lines[1] = json.dumps(row)
    export.write_text("\n".join(lines) + "\n")
    bad = engine.cli("audit", "check-export", str(export), "--key", str(public))
    assert bad.returncode == 1 and "export FAILED: position 1" in bad.stderr
    refused = engine.cli("log", "import", str(export), "--db",
                         f"sqlite:///{tmp_path / 'copy3.db'}")
    assert refused.returncode == 1 and "nothing imported" in refused.stderr


def test_a_worker_vouches_for_the_writers_in_berth_audit_trust(tmp_path: Path) -> None:
    """Nodes sharing a store: node a signs heads over rows node b signed, because its
    BERTH_AUDIT_TRUST names b's public key; a writer nobody named gets no head."""
    from engine import commands as c
    from engine.audit import treehead
    from engine.errors import StoreError
    from engine.store.store import EventStore
    from tests.store.helpers import create
    from workers.worker import Worker, WorkerConfig

    keys = tmp_path / "keys"
    for name in ("a", "b", "mallory"):
        treehead.generate(name, keys)
    url = f"sqlite:///{tmp_path / 'berth.db'}"
    worker = Worker(WorkerConfig(  # not started: its store and its signer are the point
        node="a", root=str(tmp_path / "root"), run=str(tmp_path / "run"), db_url=url,
        audit_key_file=str(keys / "a.audit_key_secret"), audit_trust=str(keys / "b.audit_key"),
        audit_interval=0))
    try:
        create(worker.store, "from-a")
        with EventStore(url, signer=treehead.load_signer(keys / "b.audit_key_secret")) as b:
            create(b, "from-b")
        head = worker.queries.checkpoint(c.AuditCheckpoint())
        assert head.signed and head.size == 2
        mallory = treehead.load_signer(keys / "mallory.audit_key_secret")
        with EventStore(url, signer=mallory) as m:
            create(m, "from-mallory")
        with pytest.raises(StoreError, match=f"forged at position 3: .*{mallory.key_id}"):
            worker.queries.checkpoint(c.AuditCheckpoint())
    finally:
        worker.store.close()


def _started(store: EventStore, cid: str) -> int:
    return [r.type for r in store.read_stream(cid)].count("container.started")


def test_a_deleted_commands_row_is_reported_and_its_resend_does_not_start_again(
        engine: Engine, tmp_path: Path) -> None:
    """The issue's steps: a start after the newest head, its commands row deleted
    with SQL; verify must fail, and the same command id resent to a restarted worker
    must not start the container a second time."""
    public = _signed_engine(engine, tmp_path, interval=0)
    cid = _ok(engine.cli("create", "--name", "d1", engine.rootfs, "true")).strip()
    head_file = tmp_path / "head.json"
    _ok(engine.cli("audit", "checkpoint", "--out", str(head_file)))
    client = engine.client()
    once = str(uuid.uuid4())
    start = client.command("container.start", cid, "local", command_id=once)
    assert client.request(start).ok
    store = engine.store()
    try:
        wait_until(lambda: store.get_container(cid).state == "exited", 20, what="exited")
        with store._engine.begin() as conn:
            conn.execute(delete(commands).where(commands.c.command_id == once))
        first = min(r.metadata.position for r in store.read_stream(cid)
                    if r.metadata.causation_id == once)
        failed = engine.cli("audit", "verify", "--against", str(head_file), "--key",
                            str(public))
        assert failed.returncode == 1, failed
        assert (f"position {first}: command {once} has events but no row in the "
                "commands table") in failed.stderr
        assert "commands table intact" not in failed.stdout
        # The engine restarted (the broker forgets the replies it cached), and the
        # publisher resends what it never heard back about.
        engine.broker.stop()
        engine.broker = Broker(engine.endpoints.frontend, engine.endpoints.backend,
                               engine.endpoints.events)
        engine.broker.start()
        _signed_engine(engine, tmp_path, interval=0)
        resent = client.request(client.command("container.start", cid, "local",
                                               command_id=once), check=False)
        assert not resent.ok and "it is not run again" in (resent.message or "")
        assert _started(store, cid) == 1
        assert store.get_container(cid).state == "exited"
    finally:
        store.close()


def test_stripped_signatures_and_a_forged_removal_are_reported_and_not_replayed(
        engine: Engine, tmp_path: Path) -> None:
    """The issue's steps: a running container; every row's signature stripped so the
    log looks older than writer signatures; then a forged ``container.removed``. The
    head the operator kept says a keyed writer ran: verify fails, says it verified no
    signature, and the read model is not rebuilt from the forgery."""
    from engine import events as ev
    from engine.store.mapper import pack

    public = _signed_engine(engine, tmp_path, interval=0)
    cid = _ok(engine.cli("run", "-d", "--name", "r1", engine.rootfs, "sleep", "300")).strip()
    head_file = tmp_path / "head.json"
    _ok(engine.cli("audit", "checkpoint", "--out", str(head_file)))
    store = engine.store()
    try:
        with store._engine.begin() as conn:
            for table in (events, commands):
                conn.execute(update(table).values(signer=None, signature=None))
            forge_append(conn, "unsigned")
            last = max(r["position"] for r in audit.chain_rows(conn))
            row = next(r for r in audit.chain_rows(conn) if r["position"] == last)
            removal = dict(row) | {"type": ev.CONTAINER_REMOVED, "data": pack({})}
            removal["hash"] = audit.link(bytes(row["prev_hash"]), removal)
            conn.execute(update(events).where(events.c.position == last)
                         .values(type=removal["type"], data=removal["data"],
                                 hash=removal["hash"]))
            conn.execute(delete(tree_heads))
        failed = engine.cli("audit", "verify", "--against", str(head_file), "--key",
                            str(public))
        assert failed.returncode == 1, failed
        assert (f"forged at position {last}: the event row carries no writer signature, "
                "after a head signed by a trusted key") in failed.stderr
        assert "every writer signature checks" not in failed.stdout + failed.stderr
        refused = engine.cli("projection", "rebuild")
        assert refused.returncode == 1 and f"at position {last}" in refused.stderr
        assert store.get_container(cid).state == "running"
    finally:
        store.close()
