"""The fold against an independent oracle: every projected field, after every event.

The property tests in test_projection.py compare one fold path with another; a
transition that is wrong on every path passes them. Here ``apply`` and ``fold`` must
land on what the lifecycle table (tests/projection/oracle.py) says, field by field.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

from engine import events as ev
from engine.containers import projection as pj
from tests.budget import examples
from tests.projection import oracle
from tests.projection.machine import LifecycleMachine, MemoryLog, check


def test_the_oracle_covers_every_field() -> None:
    """A field added to ContainerState must be added to the oracle, or it goes unchecked."""
    assert oracle.FIELDS == pj.FIELDS


def test_every_event_type_has_a_row() -> None:
    covered = {event_type for _, event_type in oracle.TABLE}
    # command.refused is written in no container's stream (test_projection checks it
    # makes no container), so no container state meets it.
    # Volume, image and network events live in their own streams: no container state
    # meets them.
    images = {ev.IMAGE_PULLED, ev.IMAGE_LOADED, ev.IMAGE_TAGGED, ev.IMAGE_REMOVED}
    assert covered | {ev.CONTAINER_CREATED, ev.COMMAND_REFUSED, ev.VOLUME_CREATED,
                      ev.VOLUME_REMOVED, ev.NETWORK_CREATED, ev.NETWORK_REMOVED} | images \
        | {ev.STACK_APPLIED, ev.STACK_REMOVED} \
        == set(ev.EVENT_TYPES)


def test_restore_runs_again_with_no_exit_code() -> None:
    """The table's restore row on one worked example: a checkpointed container that
    stopped, restored, is running with the new pid and no trace of the exit."""
    log = MemoryLog()
    spec = ev.RunSpec(rootfs="/r", args=("sleep", "100"))
    recorded = log.append("a", [
        ev.ContainerCreated("web", "n1", "/b/a", spec), ev.PidReceived(42, 41), ev.Started(),
        ev.Checkpointed("/ck/1", False, False), ev.Exited(0, None, True, "checkpoint"),
        ev.Restored(77, 76),
    ])
    expected = None
    for item in recorded:
        expected = oracle.step(expected, item)
    assert expected is not None
    assert expected.fields["state"] == "running"
    assert (expected.fields["exit_code"], expected.fields["exit_reason"]) == (None, None)
    assert (expected.fields["pid"], expected.fields["conmon_pid"]) == (77, 76)
    assert expected.fields["started_at"] == recorded[-1].metadata.recorded_at
    assert expected.fields["checkpoint_path"] == "/ck/1"
    check(pj.fold_stream(recorded), expected, "fold_stream")


def test_the_lifecycle_follows_the_oracle() -> None:
    run_state_machine_as_test(
        LifecycleMachine,
        settings=settings(max_examples=examples(300), stateful_step_count=40, deadline=None),
    )
