"""What the RFC 9162 audit costs: appends with and without signed tree heads, verifying
a 1,000,000-event log, and producing and checking one inclusion proof.

    .venv/bin/python -m bench.audit_bench                   # full: 1,000,000 events
    .venv/bin/python -m bench.audit_bench --events 100000   # a few minutes less

SQLite in a temporary directory (synchronous=NORMAL, as the embedded engine runs).
The append comparison interleaves rounds of plain appends with rounds in which a
signed head is made every ``--head-every`` appends (what the worker's periodic
signer adds, at a far higher rate than its 60 s default), in one process, and
reports the median of each; the ratio is the figure, not the absolute rates (the
machine is small and shared). The large log is built through the store's own batched
append (1,000 commands of one event each per transaction), so every row carries a
real chain hash and commands row; building it is timed too but is not the figure.
Every store signs what it appends with the auditor key, as a worker with
``BERTH_AUDIT_KEY`` does: one signature per transaction (engine/audit/vouch.py); the
pass is timed with and without checking them.

    .venv/bin/python -m bench.audit_bench --verify-only --events 100000

times ``audit verify`` (``EventStore.assess`` with no head, so every writer
signature is checked) over the same log three ways in one run: signed per
transaction (as written now), with no key given (nothing checked), and with every
row re-signed one by one as revision 0005's writers did (each events and commands
row carrying its own signature, which verify still reads and checks).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import select, update

from engine import events as ev
from engine.audit import merkle, vouch
from engine.audit.transparency import OUTCOME_COLUMNS, outcome_digest
from engine.audit.treehead import InclusionProof, Signer, check_proof
from engine.store.recorder import AppendRequest
from engine.store.schema import commands, to_micros
from engine.store.schema import events as events_table
from engine.store.store import EventStore
from migrations.runner import upgrade

SPEC = ev.RunSpec(rootfs="/var/lib/berth/rootfs/alpine", args=("sleep", "infinity"))
SIGNER = Signer(b"\x42" * 32)


def _store(directory: Path, name: str) -> EventStore:
    url = f"sqlite:///{directory / name}"
    upgrade(url)
    return EventStore(url, signer=SIGNER)


def _appends(store: EventStore, n: int, head_every: int | None) -> float:
    """Appends/s of ``n`` single-event commands to one stream, optionally with a signed
    head every ``head_every`` appends."""
    cid = uuid.uuid4().hex * 2
    store.append(cid, 0, [ev.ContainerCreated("b", "n", "/b", SPEC)],
                 command_id=uuid.uuid4().hex, command_type="container.create")
    version = 1
    start = time.perf_counter()
    for i in range(n):
        store.append(cid, version, [ev.Signalled(0)], command_id=uuid.uuid4().hex,
                     command_type="container.kill", actor="bench", node="n")
        version += 1
        if head_every and (i + 1) % head_every == 0:
            store.checkpoint(SIGNER)
    return n / (time.perf_counter() - start)


def append_comparison(directory: Path, appends: int, rounds: int, head_every: int) -> None:
    plain: list[float] = []
    signed: list[float] = []
    for r in range(rounds):
        # Fresh stores each round so both see the same log sizes; order alternates.
        for kind in (("plain", "signed") if r % 2 == 0 else ("signed", "plain")):
            with _store(directory, f"append-{r}-{kind}.db") as store:
                rate = _appends(store, appends, head_every if kind == "signed" else None)
            (signed if kind == "signed" else plain).append(rate)
    p, s = statistics.median(plain), statistics.median(signed)
    print(f"append, one event per command, {appends} per round, {rounds} rounds each, "
          "interleaved:")
    print(f"  plain                          {p:9.0f} appends/s (median)")
    print(f"  + signed head every {head_every:<5} apps {s:9.0f} appends/s (median)")
    print(f"  ratio signed/plain             {s / p:9.2f}")


def build(store: EventStore, events: int) -> float:
    """A log of ``events`` events: 1,000 commands of one event per transaction."""
    start = time.perf_counter()
    streams = [uuid.uuid4().hex * 2 for _ in range(100)]
    versions = dict.fromkeys(streams, 0)
    written = 0
    while written < events:
        batch: list[AppendRequest] = []
        for i in range(min(1000, events - written)):
            cid = streams[(written + i) % len(streams)]
            event: ev.Event = (ev.ContainerCreated(cid[:12], "n", "/b", SPEC)
                               if versions[cid] == 0
                               else ev.Signalled(15))
            batch.append(AppendRequest(cid, versions[cid], (event,), uuid.uuid4().hex,
                                       "container.kill", "", "bench", "n"))
            versions[cid] += 1
        store.append_batch(batch)
        written += len(batch)
    return time.perf_counter() - start


def verify_and_prove(directory: Path, events: int) -> None:
    with _store(directory, "big.db") as store:
        built = build(store, events)
        print(f"built a log of {events} events in {built:.1f} s (store.append_batch)")
        start = time.perf_counter()
        head = store.checkpoint(SIGNER)
        cold_head = time.perf_counter() - start
        build(store, 1000)
        start = time.perf_counter()
        store.checkpoint(SIGNER)
        warm_head = time.perf_counter() - start
        start = time.perf_counter()
        chain = store.verify_chain()
        chain_s = time.perf_counter() - start
        start = time.perf_counter()
        report = store.assess([(head, "bench")], {SIGNER.key_id: SIGNER.public})
        verify_s = time.perf_counter() - start
        assert report.ok and chain is None, report.problems
        start = time.perf_counter()
        log = store.scan_log()
        scan_s = time.perf_counter() - start
        start = time.perf_counter()
        checked = store.scan_log({SIGNER.key_id: SIGNER.public})
        writers_s = time.perf_counter() - start
        assert checked.forged is None and checked.legacy == 0
        start = time.perf_counter()
        merkle.Tree(log.leaves)
        tree_s = time.perf_counter() - start
        start = time.perf_counter()
        proof = store.prove(events // 2, head.size)
        warm_prove = time.perf_counter() - start
        wire = InclusionProof.from_json(proof.to_json())
        checks = 1000
        start = time.perf_counter()
        for _ in range(checks):
            assert check_proof(wire, head, SIGNER.public) == []
        check_s = (time.perf_counter() - start) / checks
    with EventStore(f"sqlite:///{directory / 'big.db'}", signer=SIGNER) as fresh:
        start = time.perf_counter()
        fresh.prove(events // 2, head.size)
        cold_prove = time.perf_counter() - start
    with EventStore(f"sqlite:///{directory / 'big.db'}", signer=SIGNER) as restarted:
        start = time.perf_counter()
        restarted.checkpoint(SIGNER)
        restart_head = time.perf_counter() - start
    print(f"signed head over {events} events: {cold_head:.2f} s by a worker that has read "
          f"nothing yet (reads the whole log); {warm_head * 1e3:.1f} ms after 1,000 more "
          "events by one that has (reads only those); "
          f"{restart_head:.2f} s by a restarted worker (reads the log, checks writer "
          "signatures only after its newest head)")
    print(f"verify {events} events: hash chain alone {chain_s:.2f} s; audit verify "
          f"(chain, commands, tree, consistency with a signed head) {verify_s:.2f} s")
    print(f"  of which: one pass over rows and commands {scan_s:.2f} s, the tree "
          f"{tree_s:.2f} s")
    print(f"  the same pass checking every row's writer signature {writers_s:.2f} s "
          f"(ratio {writers_s / scan_s:.2f})")
    print(f"inclusion proof of event {events // 2} ({len(proof.path)} hashes): produce "
          f"{warm_prove * 1e3:.2f} ms from the tree the worker holds, {cold_prove:.2f} s "
          f"by a process that must read the log first; check {check_s * 1e3:.3f} ms "
          "(signature + path + leaf, offline)")


def verify_comparison(directory: Path, events: int) -> None:
    """``audit verify`` of one log: per-transaction signatures, none checked, and the
    same rows re-signed one by one (the format before revision 0007)."""
    keys = {SIGNER.key_id: SIGNER.public}
    with _store(directory, "verify.db") as store:
        built = build(store, events)
        print(f"built a log of {events} events in {built:.1f} s (1,000 per transaction)")

        def timed(key_map: dict[str, bytes]) -> tuple[float, int]:
            best, checked = float("inf"), 0
            for _ in range(3):
                start = time.perf_counter()
                report = store.assess([], key_map)
                best = min(best, time.perf_counter() - start)
                assert report.ok, report.problems
                checked = report.signatures_checked
            return best, checked

        per_txn, txn_rows = timed(keys)
        none, _ = timed({})
        with store._engine.begin() as conn:  # the rows as 0005's writers signed them
            for position, digest in conn.execute(
                    select(events_table.c.position, events_table.c.hash)).all():
                conn.execute(update(events_table)
                             .where(events_table.c.position == position)
                             .values(signed_from=None, signature=vouch.stamp(
                                 SIGNER, vouch.EVENT, bytes(digest))[1]))
            for row in conn.execute(select(commands)).mappings().all():
                values = [row[name] for name in OUTCOME_COLUMNS]
                values[-1] = to_micros(values[-1])
                conn.execute(update(commands)
                             .where(commands.c.command_id == row["command_id"])
                             .values(signature=vouch.stamp(
                                 SIGNER, vouch.OUTCOME, outcome_digest(values))[1]))
        per_row, row_rows = timed(keys)
    print(f"audit verify of {events} events (best of 3, every writer signature checked):")
    print(f"  no key given (no signature checked)      {none:6.2f} s")
    print(f"  one signature per transaction (now)      {per_txn:6.2f} s  "
          f"({txn_rows} rows vouched for)   target <= 3 s per 100k")
    print(f"  one per events and commands row (0005)   {per_row:6.2f} s  "
          f"({row_rows} rows vouched for)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--head-every", type=int, default=200)
    parser.add_argument("--verify-only", action="store_true",
                        help="only audit verify, per-transaction vs per-row signatures")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="berth-audit-bench-") as tmp:
        if args.verify_only:
            verify_comparison(Path(tmp), args.events)
            return
        append_comparison(Path(tmp), args.appends, args.rounds, args.head_every)
        verify_and_prove(Path(tmp), args.events)


if __name__ == "__main__":
    main()
