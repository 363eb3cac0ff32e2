"""The service's rules end to end in one process: a real SQLite store, the in-memory
runtime (held to the real one by tests/runtime/test_contract.py), no broker.

Side effects are asserted on the runtime's own record of what it was asked to do,
so "runs once" means the action ran once, not only that one reply came back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import command_types as t
from engine import commands as c
from engine import events as ev
from engine.containers.recovery import reconcile, settle_conmon_gone
from engine.containers.service import ContainerService, system_command_id
from engine.containers.spec import RunSpec
from engine.errors import (
    AlreadyExists,
    InvalidArgument,
    InvalidState,
    NotFound,
    Refused,
    StoreError,
)
from engine.ids import new_uuid
from engine.runtime.memory import MemoryRuntime
from engine.runtime.types import Status
from engine.store.store import EventStore
from migrations.runner import upgrade


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    url = f"sqlite:///{tmp_path / 'berth.db'}"
    upgrade(url)
    s = EventStore(url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def runtime() -> MemoryRuntime:
    return MemoryRuntime()


@pytest.fixture
def service(store: EventStore, runtime: MemoryRuntime) -> ContainerService:
    return ContainerService(store, runtime, "local")


ROOTFS = "/"  # an existing directory: the spec's checks pass; nothing runs in it here


def cause(kind: str, command_id: str | None = None) -> c.Causation:
    cid = command_id or new_uuid()
    return c.Causation(cid, cid, "tester", kind)


def create(service: ContainerService, *args: str, **spec: object) -> str:
    run = RunSpec(rootfs=ROOTFS, args=args or ("sleep", "30"), **spec)  # type: ignore[arg-type]
    return str(service.handle(c.Create(run), cause(t.CREATE)).result["id"])


def types(store: EventStore, cid: str) -> list[str]:
    return [r.type for r in store.read_stream(cid)]


def test_run_stop_records_the_lifecycle_with_the_stop_as_reason(
        service: ContainerService, store: EventStore) -> None:
    cid = create(service)
    service.handle(c.Start(cid), cause(t.START))
    out = service.handle(c.Stop(cid, 1), cause(t.STOP))
    assert out.result == {"id": cid, "exit_code": 137}
    assert types(store, cid) == [ev.CONTAINER_CREATED, ev.CONTAINER_PID_RECEIVED,
                                 ev.CONTAINER_STARTED, ev.CONTAINER_STOP_REQUESTED,
                                 ev.CONTAINER_EXITED]
    exited = store.read_stream(cid)[-1].event
    assert isinstance(exited, ev.Exited) and (exited.reason, exited.expected) == ("stop", True)
    assert store.get_container(cid).state == "exited"


def test_a_resent_command_id_acts_once_even_on_a_new_service(
        store: EventStore, runtime: MemoryRuntime) -> None:
    """The store's dedupe is the last line: a restarted worker (a new service with no
    memory) must not deliver the signal a second time."""
    first = ContainerService(store, runtime, "local")
    cid = create(first)
    first.handle(c.Start(cid), cause(t.START))
    kill = cause(t.KILL)
    first.handle(c.Kill(cid, 10), kill)
    again = ContainerService(store, runtime, "local").handle(c.Kill(cid, 10), kill)
    assert again.result["replayed"] is True
    assert runtime.calls.count(("kill", cid)) == 1
    assert types(store, cid).count(ev.CONTAINER_SIGNALLED) == 1


def test_a_resent_command_whose_commands_row_was_deleted_is_refused_not_run_again(
        store: EventStore, runtime: MemoryRuntime) -> None:
    """Someone with write access to the database deletes the row of a start; the
    container exits; the publisher resends the start after a worker restart. Its
    events still name it: it is refused, and the container is not started again."""
    from sqlalchemy import delete

    from engine.store.schema import commands

    first = ContainerService(store, runtime, "local")
    cid = create(first)
    start = cause(t.START)
    first.handle(c.Start(cid), start)
    runtime.crash(cid, 3)
    first.record_exit(cid)
    with store._engine.begin() as conn:
        conn.execute(delete(commands).where(commands.c.command_id == start.command_id))
    before = types(store, cid)
    with pytest.raises(StoreError, match=f"command {start.command_id} was carried out "
                                         "before .* it is not run again"):
        ContainerService(store, runtime, "local").handle(c.Start(cid), start)
    assert runtime.calls.count(("start", cid)) == 1
    assert types(store, cid) == before  # nothing recorded either


def test_a_resent_failure_is_answered_with_the_recorded_error(
        service: ContainerService, store: EventStore) -> None:
    cid = create(service)
    pause = cause(t.PAUSE)
    before = types(store, cid)
    with pytest.raises(Refused) as refused:
        service.handle(c.Pause(cid), pause)
    service.fail(t.PAUSE, cid, pause, refused.value)
    replay = service.handle(c.Pause(cid), pause)
    assert replay.error is not None and replay.error.code == "invalid_state"
    # A refusal is audited outside the container's stream: its version does not move.
    assert types(store, cid) == before
    assert types(store, ev.REFUSALS_STREAM) == [ev.COMMAND_REFUSED]


def test_an_exit_reported_by_two_paths_is_recorded_once(
        service: ContainerService, store: EventStore, runtime: MemoryRuntime) -> None:
    cid = create(service)
    service.handle(c.Start(cid), cause(t.START))
    runtime.crash(cid, 3)
    first = service.record_exit(cid)
    second = service.record_exit(cid, wait=True)
    assert len(first) == 1 and second == []
    exited = first[0].event
    assert isinstance(exited, ev.Exited) and (exited.exit_code, exited.reason) == (3, "crash")


def test_rm_container_is_removed_when_its_exit_is_recorded(
        service: ContainerService, store: EventStore, runtime: MemoryRuntime) -> None:
    cid = create(service, "true", auto_remove=True)
    service.handle(c.Start(cid), cause(t.START))
    recorded = service.record_exit(cid)
    assert [r.type for r in recorded] == [ev.CONTAINER_EXITED, ev.CONTAINER_REMOVED]
    assert cid not in runtime.containers and cid not in runtime.container_ids()
    with pytest.raises(NotFound):
        service.container(cid)


def test_remove_force_of_a_paused_container_thaws_stops_and_removes(
        service: ContainerService, store: EventStore, runtime: MemoryRuntime) -> None:
    cid = create(service)
    service.handle(c.Start(cid), cause(t.START))
    service.handle(c.Pause(cid), cause(t.PAUSE))
    with pytest.raises(InvalidState):
        service.handle(c.Remove(cid), cause(t.REMOVE))
    service.handle(c.Remove(cid, force=True), cause(t.REMOVE))
    assert types(store, cid)[-2:] == [ev.CONTAINER_EXITED, ev.CONTAINER_REMOVED]
    assert [a for a, x in runtime.calls if x == cid][-3:] == ["unpause", "stop", "delete"]
    assert cid not in runtime.container_ids()


def test_a_name_in_use_is_refused_and_leaves_no_runtime_container(
        service: ContainerService, runtime: MemoryRuntime) -> None:
    spec = RunSpec(rootfs=ROOTFS, args=("sleep", "30"))
    service.handle(c.Create(spec, "web"), cause(t.CREATE))
    with pytest.raises(AlreadyExists):
        service.handle(c.Create(spec, "web"), cause(t.CREATE))
    assert len(runtime.containers) == 1 and len(runtime.container_ids()) == 1


def test_a_lost_conmon_with_a_live_process_is_killed_and_recorded(
        service: ContainerService, store: EventStore, runtime: MemoryRuntime) -> None:
    cid = create(service)
    service.handle(c.Start(cid), cause(t.START))
    conmon = service.container(cid).conmon_pid
    runtime.lose_conmon(cid)
    recorded = settle_conmon_gone(service, cid, conmon)
    assert [r.type for r in recorded] == [ev.CONTAINER_SIGNALLED, ev.CONTAINER_EXITED]
    exited = recorded[-1].event
    assert isinstance(exited, ev.Exited) and exited.reason == "conmon_lost"
    assert settle_conmon_gone(service, cid, conmon) == []  # settled once


def test_reconcile_records_what_happened_while_no_worker_watched(
        store: EventStore, runtime: MemoryRuntime) -> None:
    before = ContainerService(store, runtime, "local")
    ended, running = create(before), create(before)
    for cid in (ended, running):
        before.handle(c.Start(cid), cause(t.START))
    runtime.crash(ended, 2)                            # while the worker was down
    orphan = "f" * 64                                  # created, never recorded
    runtime.create(orphan, RunSpec(rootfs=ROOTFS, args=("sleep", "1")))
    report = reconcile(ContainerService(store, runtime, "local"))
    assert (report.checked, report.exits, report.lost, report.orphans) == (2, 1, 0, 1)
    assert store.get_container(ended).exit_code == 2
    assert store.get_container(running).state == "running"
    assert orphan not in runtime.containers


def test_exec_records_start_and_end_and_a_resend_after_a_crash_is_not_rerun(
        service: ContainerService, store: EventStore, runtime: MemoryRuntime) -> None:
    cid = create(service)
    service.handle(c.Start(cid), cause(t.START))
    out = service.handle(c.Exec(cid, ("echo", "hi")), cause(t.EXEC))
    assert out.result["output"] == "hi\n" and out.result["exit_code"] == 0
    assert types(store, cid)[-2:] == [ev.CONTAINER_EXEC_STARTED, ev.CONTAINER_EXEC_EXITED]
    assert types(store, cid)[-3] == ev.CONTAINER_EXEC_REQUESTED  # the intent came first
    # A worker that died after starting the session: the resend follows that session
    # (never a second process) and records its real exit code.
    crashed = cause(t.EXEC)
    session = system_command_id(crashed.command_id, "session")
    service.append(cid, service.container(cid).version,
                   [ev.ExecRequested(session, ("sh", "-c", "exit 5"))], crashed,
                   step="requested")
    runtime.exec_start(cid, ["sh", "-c", "exit 5"], session_id=session)
    execs = runtime.calls.count(("exec", cid))
    again = service.handle(c.Exec(cid, ("sh", "-c", "exit 5")), crashed)
    assert again.result == {"exit_code": 5, "output": "", "session_id": session}
    assert runtime.calls.count(("exec", cid)) == execs
    assert types(store, cid)[-2:] == [ev.CONTAINER_EXEC_STARTED, ev.CONTAINER_EXEC_EXITED]
    assert service.container(cid).exec_sessions == ()
    # Sent once more: the recorded outcome, nothing new.
    before = types(store, cid)
    service.handle(c.Exec(cid, ("sh", "-c", "exit 5")), crashed)
    assert types(store, cid) == before


def test_a_session_id_names_one_session_for_good(service: ContainerService,
                                                 store: EventStore) -> None:
    cid = create(service)
    service.handle(c.Start(cid), cause(t.START))
    service.handle(c.Exec(cid, ("true",), session_id="mine"), cause(t.EXEC))
    before = types(store, cid)
    with pytest.raises(InvalidArgument, match="already used"):
        service.handle(c.Exec(cid, ("false",), session_id="mine"), cause(t.EXEC))
    assert types(store, cid) == before


def test_reconciliation_closes_sessions_from_their_files(
        service: ContainerService, store: EventStore, runtime: MemoryRuntime) -> None:
    cid = create(service)
    service.handle(c.Start(cid), cause(t.START))
    ended, never = "ended-session", "never-session"
    for session in (ended, never):
        service.append(cid, service.container(cid).version,
                       [ev.ExecRequested(session, ("sh", "-c", "exit 6"))], cause(t.EXEC),
                       step="requested")
    runtime.exec_start(cid, ["sh", "-c", "exit 6"], session_id=ended)
    report = reconcile(ContainerService(store, runtime, "local"))
    assert report.execs == 2 and report.running_execs == []
    codes = {r.event.session_id: r.event.exit_code for r in store.read_stream(cid)
             if isinstance(r.event, ev.ExecExited)}
    assert codes == {ended: 6, never: -1}
    assert store.get_container(cid).exec_sessions == ()


def _refuse_next_append(store: EventStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store refuses the next append (a full disk), then works again."""
    real = store.append

    def refuse(*args: object, **kw: object) -> object:
        monkeypatch.setattr(store, "append", real)
        raise StoreError("the event store is full: nothing was written")

    monkeypatch.setattr(store, "append", refuse)


def test_every_runtime_action_the_store_refuses_is_undone_or_never_taken(
        service: ContainerService, store: EventStore, runtime: MemoryRuntime,
        monkeypatch: pytest.MonkeyPatch) -> None:
    cid = create(service)
    service.handle(c.Start(cid), cause(t.START))
    # pause: done by runc, refused by the store, taken back.
    _refuse_next_append(store, monkeypatch)
    with pytest.raises(StoreError):
        service.handle(c.Pause(cid), cause(t.PAUSE))
    assert runtime.containers[cid].status == Status.RUNNING
    assert service.container(cid).state == "running"
    # kill: recorded before it is sent, so a refusal means it was never sent.
    _refuse_next_append(store, monkeypatch)
    with pytest.raises(StoreError):
        service.handle(c.Kill(cid, 9), cause(t.KILL))
    assert ("kill", cid) not in runtime.calls
    assert runtime.containers[cid].status == Status.RUNNING
    # restore: the restored container is discarded, the image kept for another try.
    service.handle(c.Checkpoint(cid), cause(t.CHECKPOINT))
    _refuse_next_append(store, monkeypatch)
    with pytest.raises(StoreError):
        service.handle(c.Restore(cid), cause(t.RESTORE))
    assert cid not in runtime.containers and service.container(cid).state == "exited"
    assert service.handle(c.Restore(cid), cause(t.RESTORE)).result["pid"]
    assert runtime.containers[cid].status == Status.RUNNING


def test_a_copy_resent_after_its_container_was_removed_is_not_answered_done(
        service: ContainerService, store: EventStore) -> None:
    """A regression: a copy whose worker died after its intent, resent once the
    container had been removed, was answered "ok" though nothing was written."""
    import hashlib

    cid = create(service)
    data = b"tar bytes"
    copy = cause(t.COPY_IN)
    state = service.container(cid)
    service.append(cid, state.version,
                   [ev.CopiedIn("/x", len(data), hashlib.sha256(data).hexdigest())], copy)
    service.handle(c.Remove(cid), cause(t.REMOVE))
    with pytest.raises(NotFound, match="removed before this copy was written"):
        service.handle(c.CopyIn(cid, "/x", data), copy)
    assert types(store, cid)[-2:] == [ev.CONTAINER_COPIED_IN, ev.CONTAINER_REMOVED]


def test_a_wait_cut_short_by_a_stopping_worker_is_handed_back(
        service: ContainerService) -> None:
    """A wait has no result while its container runs; when the worker stops it is
    handed back (``handed_back``), so the broker holds it for the node's next
    worker. Answered ``unavailable``, it was cached under its id and every resend
    was refused again (the refusals of tests/faults/test_rolling_restart.py)."""
    import threading

    from engine.containers.queries import Queries
    from engine.errors import HandedBack

    cid = create(service)
    service.handle(c.Start(cid), cause(t.START))
    queries = Queries(service)
    raised: list[BaseException] = []

    def wait() -> None:
        try:
            queries.wait(c.Wait(cid, timeout=20))
        except BaseException as exc:  # noqa: BLE001 - the test looks at it below
            raised.append(exc)

    waiting = threading.Thread(target=wait)
    waiting.start()
    service.begin_shutdown()
    waiting.join(10)
    assert not waiting.is_alive()
    assert len(raised) == 1 and isinstance(raised[0], HandedBack), raised
    assert raised[0].code == "handed_back"
