"""``container.run`` (issue 24): ``berth run --rm`` as one command on the bus, carried
out by the worker as create, start, wait and remove, each step recorded as before, and
never twice, even when the worker is killed -9 in the middle of it."""

from __future__ import annotations

import os
from collections import Counter

import pytest

from engine.commands import run_step_id
from engine.errors import InvalidArgument
from engine.events import RecordedEvent
from tests.e2e.conftest import Engine


@pytest.fixture
def default_network() -> str | None:
    return "none"


def _containers(engine: Engine) -> dict[str, list[RecordedEvent]]:
    """Every container's recorded events, by container id."""
    with engine.store() as store:
        records = store.read_all()
    out: dict[str, list[RecordedEvent]] = {}
    for r in records:
        if r.type.startswith("container."):
            out.setdefault(r.stream, []).append(r)
    return out


def _lifecycle(events: list[RecordedEvent]) -> Counter[str]:
    return Counter(r.type for r in events if r.type in (
        "container.created", "container.started", "container.exited", "container.removed"))


def _nothing_left(engine: Engine) -> None:
    ps = engine.cli("ps", "-a", "-q")
    assert ps.returncode == 0 and ps.stdout.strip() == "", ps
    containers = os.path.join(engine.root, "containers")
    assert not os.path.isdir(containers) or os.listdir(containers) == []


def test_run_rm_is_one_command_with_every_step_recorded(up: Engine) -> None:
    before = up.broker.stats["commands_received"]
    out = up.cli("run", "--rm", up.rootfs, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert out.returncode == 3, out
    assert out.stdout == "out\n" and out.stderr == "err\n"
    assert up.broker.stats["commands_received"] - before == 1, "one round trip on the bus"
    (events,) = _containers(up).values()
    assert _lifecycle(events) == Counter({"container.created": 1, "container.started": 1,
                                          "container.exited": 1, "container.removed": 1})
    # Each step is its own command (its id derived from the run's), all under the
    # run's correlation id; the exit is the worker's own record.
    run_id = events[0].metadata.correlation_id
    steps = {r.type: r.metadata.causation_id for r in events}
    assert steps["container.created"] == run_step_id(run_id, "create")
    assert steps["container.started"] == run_step_id(run_id, "start")
    assert steps["container.removed"] == run_step_id(run_id, "remove")
    assert all(r.metadata.correlation_id == run_id for r in events
               if r.type != "container.exited")
    _nothing_left(up)


def test_run_rm_of_a_missing_program_records_the_failed_step(up: Engine) -> None:
    """runc create finds the program missing: the create step's failure is recorded
    under the step's own id (a resend replays it), 127 as podman, nothing left."""
    out = up.cli("run", "--rm", up.rootfs, "/no/such/program")
    assert out.returncode == 127, out
    assert "/no/such/program" in out.stderr
    with up.store() as store:
        failed = [r for r in store.read_all() if r.type == "command.failed"]
    assert len(failed) == 1
    meta = failed[0].metadata
    assert meta.causation_id == run_step_id(meta.correlation_id, "create")
    _nothing_left(up)


def test_run_rm_refuses_auto_remove_in_its_spec(up: Engine) -> None:
    with up.client() as c, pytest.raises(InvalidArgument, match="auto_remove"):
        c.run(rootfs=up.rootfs, args=["/bin/true"], auto_remove=True)
    assert _containers(up) == {}


@pytest.mark.parametrize("point", ["container.run.created", "container.start.acted",
                                   "container.run.exited"])
def test_worker_killed_mid_run_leaves_no_step_done_twice(engine: Engine, point: str) -> None:
    """The worker dies -9 after the create, after runc start, after the exit; the CLI
    resends the same run id to the next worker, which carries on: the exit code is
    the container's, every step is recorded exactly once, nothing is left."""
    engine.start_worker_process()
    out = engine.through_crash(point, "run", "--rm", engine.rootfs, "sh", "-c", "exit 4")
    assert out.returncode == 4, out
    (events,) = _containers(engine).values()
    # Killed between runc start and recording it, the start is never recorded (a
    # start has no intent: as for a plain container.start); the program still ran once.
    started = 0 if point == "container.start.acted" else 1
    assert _lifecycle(events) == Counter({"container.created": 1, "container.started": started,
                                          "container.exited": 1, "container.removed": 1}), \
        " ".join(f"{r.position}:{r.type}" for r in events)
    assert sum(r.type == "container.pid_received" for r in events) == 1, "the program ran once"
    _nothing_left(engine)


def test_exec_by_name_is_one_command(up: Engine) -> None:
    """``exec NAME``: the worker resolves the name itself (the stream socket beside the
    bus names the one worker), so no ``query.resolve`` round trip comes first."""
    started = up.cli("run", "-d", "--name", "onetrip-exec", up.rootfs, "sleep", "100")
    assert started.returncode == 0, started
    before = up.broker.stats["commands_received"]
    out = up.cli("exec", "onetrip-exec", "sh", "-c", "echo hi; exit 5")
    assert out.returncode == 5 and out.stdout == "hi\n", out
    assert up.broker.stats["commands_received"] - before == 1
    assert up.cli("rm", "-f", "onetrip-exec").returncode == 0
