"""The store's read model and time travel against the lifecycle oracle.

The same state machine as tests/projection/test_oracle.py, with its events appended to
a real database: every row the append transaction writes or a rebuild replays, and
every past state ``state_at`` computes from the log, must say what the oracle's table
says.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import pytest
from hypothesis import settings
from hypothesis.stateful import invariant, rule, run_state_machine_as_test

from engine import events as ev
from engine.errors import NotFound
from engine.store.store import EventStore
from tests.projection.machine import LifecycleMachine, MemoryLog, check


class StoreLifecycle(LifecycleMachine):
    store: EventStore  # set on the subclass each test makes

    def append(self, cid: str, events: Sequence[ev.Event]) -> None:
        version = self.expected[cid].fields["version"] if cid in self.expected else 0
        self.take(self.store.append(cid, version, events, command_id=uuid.uuid4().hex,
                                    command_type="container.any", actor="tester",
                                    node="node1"))

    def refuse_in(self, stream: str, code: str) -> None:
        self.take(self.store.record_failure(uuid.uuid4().hex, "container.any", stream, code,
                                            "refused", actor="tester", node="node1"))

    def make_log(self) -> MemoryLog:
        return MemoryLog()  # unused: the store numbers the events

    def check_past(self, index: int) -> None:
        super().check_past(index)
        position = self.recorded[index].position
        for cid, then in self.history[index].items():
            past = self.store.state_at(position=position, container=cid)
            check(past.get(cid), then, f"state_at(position={position}), {cid}")

    @rule()
    def rebuild(self) -> None:
        """Rows written by a replay of the whole log, not by the appends."""
        self.store.rebuild_read_model()

    @invariant()
    def read_model_agrees(self) -> None:
        for cid, expected in self.expected.items():
            row = self.store.get_container(cid, include_removed=True)
            check(row, expected, f"read model row of {cid}")
        for ghost in self.ghosts:
            with pytest.raises(NotFound):
                self.store.get_container(ghost, include_removed=True)


def test_read_model_and_time_travel_follow_the_oracle(store: EventStore) -> None:
    machine = type("Bound", (StoreLifecycle,), {"store": store})
    run_state_machine_as_test(
        machine, settings=settings(max_examples=30, stateful_step_count=30, deadline=None))
    assert store.verify_read_model() == []
