"""Signed heads, key files and offline proof checks (no engine, no database but the
one the proof is taken from)."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from pathlib import Path

import pytest

from engine import events as ev
from engine.audit import treehead
from engine.audit.treehead import InclusionProof, Signer, TreeHead, check_proof, signature_ok
from engine.errors import InvalidArgument
from engine.store.store import EventStore
from tests.store.helpers import create, run

SIGNER = Signer(b"\x05" * 32)


def test_a_signature_covers_every_field() -> None:
    head = SIGNER.sign(10, b"\x01" * 32, 1234, "n1")
    assert signature_ok(head, SIGNER.public)
    for change in ({"size": 11}, {"root": b"\x02" * 32}, {"timestamp_us": 1235}):
        assert not signature_ok(dataclasses.replace(head, **change), SIGNER.public)
    assert not signature_ok(head, Signer(b"\x06" * 32).public)
    assert not signature_ok(dataclasses.replace(head, signature=b""), SIGNER.public)


def test_a_head_round_trips_through_json() -> None:
    head = SIGNER.sign(3, b"\x07" * 32, 99, "n1")
    assert TreeHead.from_json(json.loads(json.dumps(head.to_json()))) == head
    with pytest.raises(InvalidArgument, match="not a tree head"):
        TreeHead.from_json({"size": 1, "root": "zz", "timestamp_us": 0})


def test_key_files(tmp_path: Path) -> None:
    public, secret = treehead.generate("auditor1", tmp_path / "keys")
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    signer = treehead.load_signer(secret)
    assert treehead.load_public(public) == signer.public
    assert treehead.load_public(secret) == signer.public
    with pytest.raises(InvalidArgument, match="already exists"):
        treehead.generate("auditor1", tmp_path / "keys")
    os.chmod(secret, 0o644)
    with pytest.raises(InvalidArgument, match="readable by others"):
        treehead.load_signer(secret)
    with pytest.raises(InvalidArgument, match="cannot read key file"):
        treehead.load_public(tmp_path / "keys")  # a directory
    (tmp_path / "bad.audit_key").write_text("ed25519 AAAA\n")
    with pytest.raises(InvalidArgument, match="not an Ed25519"):
        treehead.load_public(tmp_path / "bad.audit_key")


def test_every_proof_checks_against_a_signed_head(store: EventStore) -> None:
    cid = create(store)
    run(store, cid, 1, treehead_events()[0])
    run(store, cid, 2, treehead_events()[1])
    head = store.checkpoint(SIGNER)
    for position in range(1, head.size + 1):
        proof = InclusionProof.from_json(json.loads(json.dumps(
            store.prove(position).to_json())))
        assert check_proof(proof, head, SIGNER.public) == []
    proof = store.prove(2)
    forged_leaf = dataclasses.replace(proof, leaf=b"\x00" + proof.leaf[1:])
    assert check_proof(forged_leaf, head, SIGNER.public) != []
    other_event = dataclasses.replace(proof, event=store.prove(3).event)
    assert check_proof(other_event, head, SIGNER.public) == [
        "the event shown is not the leaf the proof is for"]
    assert check_proof(proof, head, Signer(b"\x06" * 32).public) == [
        "the tree head's signature does not verify with the key given"]
    moved = dataclasses.replace(proof, position=1)
    assert check_proof(moved, head, SIGNER.public) == [
        "event 1 is not in the tree the head signs"]
    with pytest.raises(InvalidArgument, match="no event 4"):
        store.prove(4)


def treehead_events() -> list[ev.Event]:
    return [ev.PidReceived(10, 9), ev.Started()]


def test_a_consistency_proof_shows_the_log_only_grew(store: EventStore) -> None:
    from engine.audit.treehead import ConsistencyProof, check_consistency

    store.sign_appends_with(SIGNER)  # as a worker with this key does
    cid = create(store)
    old = store.checkpoint(SIGNER)
    run(store, cid, 1, *treehead_events())
    new = store.checkpoint(SIGNER)
    proof = ConsistencyProof.from_json(json.loads(json.dumps(ConsistencyProof(
        old.size, new, tuple(store.consistency(old.size, new.size))).to_json())))
    assert check_consistency(proof, old, SIGNER.public) == []
    forged_old = SIGNER.sign(old.size, b"\x01" * 32, 0)
    assert check_consistency(proof, forged_old, SIGNER.public) == [
        f"the log of {new.size} events does not contain the {old.size} the old head "
        "signed, unchanged"]
    assert "the new head is unsigned" in check_consistency(
        dataclasses.replace(proof, head=dataclasses.replace(new, signature=b"")), old,
        SIGNER.public)
    with pytest.raises(InvalidArgument, match="no consistency proof"):
        store.consistency(new.size + 1, new.size + 1)
