"""Bounded resources under attack, measured on real broker and worker processes.

* A message of many frames, each under zmq's per-frame cap, is refused as a whole
  before the broker copies it (memory figures printed: run with ``-s``).
"""

from __future__ import annotations

import zmq

from bus.protocol import MAX_MESSAGE_SIZE, Reply, decode
from tests.faults.cluster import Cluster
from tests.faults.memory import MIB, peak_mib, rss_mib

FRAME = int(3.9 * MIB)  # just under the per-frame cap (zmq's MAXMSGSIZE)
FRAMES = 60
MESSAGES = 3


def test_a_message_of_many_large_frames_is_refused_before_it_is_copied(
        cluster: Cluster) -> None:
    proc = cluster.start_broker_process()
    before = peak_mib(proc.pid)
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(cluster.endpoints.frontend)
    chunk = bytes(FRAME)
    try:
        for _ in range(MESSAGES):
            sock.send_multipart([chunk] * FRAMES)
            assert sock.poll(60_000), "the broker did not answer an oversized message"
            reply = decode(sock.recv_multipart()[-1])
            assert isinstance(reply, Reply) and reply.error_code == "protocol_error"
            assert f"exceeds the bus limit of {MAX_MESSAGE_SIZE} bytes" in (reply.message or "")
    finally:
        sock.close(linger=0)
    health = cluster.health()
    assert health["oversized"] == MESSAGES
    message = FRAME * FRAMES / MIB
    grown = peak_mib(proc.pid) - before
    print(f"\nbroker peak RSS {before:.0f} -> {before + grown:.0f} MiB for {MESSAGES} messages "
          f"of {message:.0f} MiB; {rss_mib(proc.pid):.0f} MiB after")
    # libzmq assembles one message before it hands over a frame; the broker must not
    # hold a second copy (it did: twice the message, and more for messages queued).
    assert grown < 1.5 * message, f"broker grew by {grown:.0f} MiB for {message:.0f} MiB messages"
