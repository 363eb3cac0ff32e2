"""The Binary Star state machine, case by case (the ZeroMQ guide's table)."""

from __future__ import annotations

import pytest

from bus.binarystar import PEER_EXPIRY_BEATS, BinaryStar, DualActive, State

HB = 1.0


def test_the_primary_goes_active_on_seeing_the_backup_and_the_backup_passive() -> None:
    primary, backup = BinaryStar.start("primary", HB, 0.0), BinaryStar.start("backup", HB, 0.0)
    assert (primary.state, backup.state) == (State.PRIMARY, State.BACKUP)
    assert not primary.client_request(0.5) and not backup.client_request(0.5)
    primary.peer(backup.state, 1.0)
    assert primary.active
    backup.peer(primary.state, 1.0)
    assert backup.state is State.PASSIVE
    assert primary.client_request(1.1) and not backup.client_request(1.1)


def test_a_primary_alone_serves_once_the_peer_has_been_silent() -> None:
    primary = BinaryStar.start("primary", HB, 0.0)
    assert not primary.client_request(PEER_EXPIRY_BEATS * HB - 0.01)
    assert primary.client_request(PEER_EXPIRY_BEATS * HB)
    assert primary.active


def test_a_backup_alone_never_serves() -> None:
    backup = BinaryStar.start("backup", HB, 0.0)
    assert not backup.client_request(100.0)
    assert backup.state is State.BACKUP


def test_failover_needs_the_peer_silent_and_a_client_asking() -> None:
    backup = BinaryStar(State.PASSIVE, HB, 0.0)
    backup.peer(State.ACTIVE, 10.0)
    assert backup.peer_expiry == 10.0 + PEER_EXPIRY_BEATS * HB
    assert not backup.client_request(11.9)  # the primary may just be slow
    assert backup.state is State.PASSIVE
    assert backup.client_request(12.0)  # silent two beats, and a client asks
    assert backup.active


def test_a_restarted_peer_finds_the_survivor_active() -> None:
    survivor = BinaryStar(State.PASSIVE, HB, 0.0)
    survivor.peer(State.PRIMARY, 5.0)  # the primary came back and says so
    assert survivor.active
    restarted = BinaryStar.start("primary", HB, 5.0)
    restarted.peer(survivor.state, 5.5)
    assert restarted.state is State.PASSIVE


@pytest.mark.parametrize("mine, theirs", [(State.ACTIVE, State.ACTIVE),
                                          (State.PASSIVE, State.PASSIVE)])
def test_two_actives_or_two_passives_are_fatal(mine: State, theirs: State) -> None:
    with pytest.raises(DualActive):
        BinaryStar(mine, HB, 0.0).peer(theirs, 1.0)


def test_an_active_side_keeps_serving_whatever_else_it_hears() -> None:
    active = BinaryStar(State.ACTIVE, HB, 0.0)
    for peer in (State.PRIMARY, State.BACKUP, State.PASSIVE):
        active.peer(peer, 1.0)
        assert active.active


def test_wire_states_and_roles() -> None:
    for state in State:
        assert State.from_wire(state.wire) is state
    assert State.from_wire(b"") is None and State.from_wire(b"\x09") is None
    assert State.from_wire(b"\x01\x01") is None
    with pytest.raises(ValueError, match="role must be primary or backup"):
        BinaryStar.start("leader", HB, 0.0)
