"""The broker's admission rules that need no socket: actor, command-id owners, rates.

(Identities read off real connections, CURVE and the worker-node rule are tested
with real sockets in test_curve.py and test_ipc_identity.py.)
"""

from __future__ import annotations

import uuid

import pytest
import zmq

from bus.admission import Admission, Peer
from bus.protocol import Command, decode, encode, now_iso
from bus.security import RateLimit
from engine.errors import BerthError

IPC = "ipc:///nonexistent/berth-test.sock"


def admission(*, rate_limit: RateLimit | None = None, owners_size: int = 4) -> Admission:
    return Admission(IPC, IPC, IPC, security=None, rate_limit=rate_limit,
                     owners_size=owners_size)


def command(actor: str, command_id: str | None = None) -> Command:
    cid = command_id or str(uuid.uuid4())
    return Command(cid, "container.start", "web", "n1", {}, actor, cid, now_iso())


def test_ipc_endpoints_need_no_keys() -> None:
    gate = admission()
    assert not gate.curve and gate.security is None


def test_the_actor_is_the_peer_and_the_frame_says_so() -> None:
    gate, claimed = admission(), command("mallory")
    stamped, frame = gate.as_sent_by(claimed, encode(claimed), Peer("alice", "key:alice"))
    assert stamped.actor == "alice"
    assert decode(frame) == stamped
    same = command("alice")
    assert gate.as_sent_by(same, b"frame", Peer("alice", "key:alice")) == (same, b"frame")


def test_a_gateways_claim_is_kept_with_the_peer_that_vouched_for_it() -> None:
    gate = admission()
    claimed = command("docker-api uid=0 pid=42 docker-py/7.1.0")
    stamped, frame = gate.as_sent_by(claimed, encode(claimed), Peer("root(uid 0)", "uid:0"))
    assert stamped.actor == "docker-api uid=0 pid=42 docker-py/7.1.0 via root(uid 0)"
    assert decode(frame) == stamped
    # a retry of the stamped command is stamped the same, and a long claim is cut so
    # the broker's part always fits
    assert gate.as_sent_by(claimed, encode(claimed), Peer("root(uid 0)", "uid:0"))[0] == stamped
    long = command("docker-api " + "x" * 240)
    actor = gate.as_sent_by(long, encode(long), Peer("alice", "key:alice"))[0].actor
    assert actor.endswith(" via alice") and len(actor) <= 256
    # only a gateway's prefix is kept: any other claim is still replaced
    other = command("docker-apix pretending")
    assert gate.as_sent_by(other, encode(other), Peer("alice", "key:alice"))[0].actor == "alice"


def test_a_command_id_belongs_to_its_first_sender() -> None:
    gate, first = admission(), command("alice")
    assert gate.other_owner(first) is None
    gate.claim(first)
    assert gate.other_owner(first) is None  # alice's retry
    assert gate.other_owner(command("bob", first.id)) == "alice"


def test_the_oldest_owners_are_forgotten_first() -> None:
    gate = admission(owners_size=2)
    commands = [command("alice") for _ in range(3)]
    for each in commands:
        gate.claim(each)
    assert gate.other_owner(command("bob", commands[0].id)) is None
    assert gate.other_owner(command("bob", commands[2].id)) == "alice"


def test_each_peer_has_its_own_bucket() -> None:
    gate = admission(rate_limit=RateLimit(rate=1.0, burst=2))
    alice, bob = Peer("alice", "key:alice"), Peer("bob", "key:bob")
    assert [gate.within_rate(alice, 10.0) for _ in range(3)] == [True, True, False]
    assert gate.within_rate(bob, 10.0)
    assert gate.within_rate(alice, 11.0)  # one token a second comes back


def test_no_rate_limit_admits_everything() -> None:
    gate, peer = admission(), Peer("alice", "key:alice")
    assert all(gate.within_rate(peer, 0.0) for _ in range(10_000))


def test_a_network_endpoint_without_keys_is_refused_not_left_plain() -> None:
    """Admission loads keys whenever an endpoint needs them; if a caller still asks
    it to secure one without keys, it refuses rather than leave the socket plain."""
    gate = admission()
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.ROUTER)
    try:
        with pytest.raises(BerthError, match="needs CURVE keys"):
            gate.secure(sock, "tcp://127.0.0.1:5555", "berth.clients")
        gate.secure(sock, IPC, "berth.clients")  # ipc: the 0600 file guards it
        assert sock.getsockopt(zmq.CURVE_SERVER) == 0
    finally:
        sock.close(linger=0)
