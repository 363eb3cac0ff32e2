"""berth's event store beside the ``eventsourcing`` library's SQLite recorder.

    .venv/bin/python -m bench.peer_bench             # 2,000 single-event txns, 20,000 batched
    .venv/bin/python -m bench.peer_bench --events 500

Three workloads on a file SQLite database in a temporary directory, each on a fresh
database, best of ``--runs``: one event per transaction, 100 events per transaction
(one stream), and reading every event back and decoding it. berth is measured
in-process twice, with an auditor key (one writer signature per transaction, hash
chain, commands row and read model, as a worker appends) and without one; the peer
is ``eventsourcing``'s ``SQLiteApplicationRecorder`` (stored events with a
notification id, the closest thing it has to berth's global position), with JSON
payloads as its default transcoder writes them.

The peer is never a dependency of berth: this script makes a private venv
(``--venv``, default /tmp/es-venv) and installs a pinned ``eventsourcing`` into it
with pip the first time, then runs its half there in a child process. Both libraries
keep their own SQLite settings (berth: WAL, synchronous=NORMAL); the figures are
what each does out of the box on this machine, not a tuned comparison.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from engine import events as ev
from engine.audit.treehead import Signer
from engine.store.store import EventStore
from migrations.runner import upgrade

PEER = "eventsourcing==9.5.6"

CHILD = r'''
import json, sys, tempfile, time, uuid
from pathlib import Path
from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore

events, runs = int(sys.argv[1]), int(sys.argv[2])
TOPIC = "berth.bench:Signalled"

def fresh(tmp):
    store = SQLiteDatastore(str(Path(tmp) / (uuid.uuid4().hex + ".db")))
    recorder = SQLiteApplicationRecorder(store)
    recorder.create_table()
    return recorder

def state(i):
    return json.dumps({"signal": 15, "n": i}).encode()

def one_per_txn(tmp):
    rec, oid = fresh(tmp), uuid.uuid4()
    start = time.perf_counter()
    for i in range(events):
        rec.insert_events([StoredEvent(oid, i + 1, TOPIC, state(i))])
    return events / (time.perf_counter() - start)

def batched(tmp):
    rec, oid, n = fresh(tmp), uuid.uuid4(), events * 10
    start = time.perf_counter()
    for b in range(0, n, 100):
        rec.insert_events([StoredEvent(oid, i + 1, TOPIC, state(i)) for i in range(b, b + 100)])
    return n / (time.perf_counter() - start), rec

def read(rec):
    start, count, after = time.perf_counter(), 0, None
    while True:
        page = rec.select_notifications(after, 1000, inclusive_of_start=after is None)
        for note in page:
            json.loads(note.state)
            count += 1
        if len(page) < 1000:
            break
        after = page[-1].id + 1
    return count / (time.perf_counter() - start)

with tempfile.TemporaryDirectory() as tmp:
    a = max(one_per_txn(tmp) for _ in range(runs))
    results = [batched(tmp) for _ in range(runs)]
    b = max(r for r, _ in results)
    c = max(read(results[0][1]) for _ in range(runs))
print(json.dumps({"1/tx": a, "100/tx": b, "read+decode": c}))
'''


def peer(venv: Path, events: int, runs: int) -> dict[str, float]:
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    probe = subprocess.run([str(python), "-c", "import eventsourcing"], capture_output=True)
    if probe.returncode != 0:
        subprocess.run([str(python), "-m", "pip", "install", "-q", PEER], check=True)
    out = subprocess.run([str(python), "-c", CHILD, str(events), str(runs)],
                         check=True, capture_output=True, text=True).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def berth(events: int, runs: int, signed: bool) -> dict[str, float]:
    signer = Signer(b"\x42" * 32) if signed else None
    spec = ev.RunSpec(rootfs="/r", args=("true",))

    def fresh(tmp: str) -> tuple[EventStore, str]:
        url = f"sqlite:///{Path(tmp) / (uuid.uuid4().hex + '.db')}"
        upgrade(url)
        store = EventStore(url, signer=signer)
        cid = uuid.uuid4().hex * 2
        store.append(cid, 0, [ev.ContainerCreated("b", "n", "/b", spec)],
                     command_id=uuid.uuid4().hex, command_type="container.create")
        return store, cid

    def one_per_txn(tmp: str) -> float:
        store, cid = fresh(tmp)
        with store:
            start = time.perf_counter()
            for i in range(events):
                store.append(cid, i + 1, [ev.Signalled(15)], command_id=uuid.uuid4().hex,
                             command_type="container.kill")
            return events / (time.perf_counter() - start)

    def batched(tmp: str) -> tuple[float, EventStore]:
        store, cid = fresh(tmp)
        n = events * 10
        start = time.perf_counter()
        for b in range(0, n, 100):
            store.append(cid, b + 1, [ev.Signalled(15)] * 100,
                         command_id=uuid.uuid4().hex, command_type="container.kill")
        return n / (time.perf_counter() - start), store

    def read(store: EventStore) -> float:
        start = time.perf_counter()
        count = sum(1 for _ in store.iter_all())  # paged, each event typed
        return count / (time.perf_counter() - start)

    with tempfile.TemporaryDirectory() as tmp:
        a = max(one_per_txn(tmp) for _ in range(runs))
        results = [batched(tmp) for _ in range(runs)]
        b = max(r for r, _ in results)
        c = max(read(results[0][1]) for _ in range(runs))
        for _, store in results:
            store.close()
    return {"1/tx": a, "100/tx": b, "read+decode": c}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000,
                        help="single-event transactions (10x that batched, 100 a txn)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--venv", type=Path, default=Path("/tmp/es-venv"))
    args = parser.parse_args()
    if args.events < 100 or args.runs < 1:
        parser.error("--events must be at least 100 and --runs at least 1")
    rows = {"berth, signed": berth(args.events, args.runs, True),
            "berth, no key": berth(args.events, args.runs, False),
            PEER: peer(args.venv, args.events, args.runs)}
    print(f"events/s, best of {args.runs} (1/tx: {args.events} events; 100/tx and "
          f"read+decode: {args.events * 10})")
    print(f"{'store':<22} {'1/tx':>10} {'100/tx':>10} {'read+decode':>12}")
    for name, r in rows.items():
        print(f"{name:<22} {r['1/tx']:>10,.0f} {r['100/tx']:>10,.0f} {r['read+decode']:>12,.0f}")


if __name__ == "__main__":
    main()
