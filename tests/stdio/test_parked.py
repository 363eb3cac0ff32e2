"""Attach sockets parked for a streamed exec's reader: taken once, or closed when
nobody takes them (so conmon stops waiting for a reader that never came)."""

from __future__ import annotations

import socket
import threading

from engine.runtime.attach import Parked


def _pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def test_a_parked_socket_is_taken_once_even_when_it_comes_late() -> None:
    parked = Parked(ttl=30)
    ours, theirs = _pair()
    threading.Timer(0.1, parked.park, ("s1", ours)).start()
    assert parked.take("s1", 5) is ours
    assert parked.take("s1", 0) is None
    assert parked.take("other", 0.05) is None
    ours.close()
    theirs.close()


def test_one_nobody_takes_is_closed_after_its_time() -> None:
    parked = Parked(ttl=0.2)
    ours, theirs = _pair()
    parked.park("s1", ours)
    theirs.settimeout(5)
    assert theirs.recv(10) == b""  # closed by the expiry: conmon's peer sees the end
    assert len(parked) == 0 and parked.take("s1", 0) is None
    theirs.close()


def test_a_taken_socket_is_not_closed_by_the_expiry() -> None:
    parked = Parked(ttl=0.1)
    ours, theirs = _pair()
    parked.park("s1", ours)
    assert parked.take("s1", 1) is ours
    threading.Event().wait(0.3)  # past the ttl
    theirs.send(b"x")
    assert ours.recv(10) == b"x"
    ours.close()
    theirs.close()
