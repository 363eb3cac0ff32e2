"""Publishers for the bounded-resources tests, each run as its own process:
``python -m tests.faults.flood MODE ENDPOINT SECONDS [UID]``.

* ``flood``: pipelines valid ``query.ps`` commands through one DEALER socket as
  fast as the broker takes them (up to 5,000 unanswered), then drains the answers
  for a moment;
* ``steady``: one ``query.ps`` at a time through the client library, 20 a second.

Either prints one JSON line: how many it sent and how many answers of each kind
it got (``ok``, ``busy`` for a worker's full queue, else the error code). With
UID the process becomes that user after its imports (the interpreter may live
where that user cannot read), so the broker sees another identity.
"""

from __future__ import annotations

import errno  # noqa: F401 - imported before the process becomes UID (see main)
import json
import os
import socket  # noqa: F401 - bus.endpoints imports it lazily, which UID may not be able to
import sys
import time
from collections import Counter

import zmq

from bus.client import Client
from bus.protocol import Reply, decode, encode
from engine.command_types import PS
from engine.errors import BerthError

_WINDOW = 5000
_DRAIN = 3.0
_STEADY_INTERVAL = 0.05


def kind(code: str | None, message: str | None) -> str:
    """How a test counts an answer: a worker's full queue apart from a sender's rate."""
    if code is None:
        return "ok"
    if code == "rate_limited" and "busy" in (message or ""):
        return "busy"
    return code


def flood(endpoint: str, seconds: float) -> dict[str, int]:
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    builder = Client(endpoint)  # builds commands only; never connects
    answers: Counter[str] = Counter()
    sent = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            while sent - answers.total() < _WINDOW:
                try:
                    sock.send(encode(builder.command(PS)), zmq.NOBLOCK)
                except zmq.Again:
                    break
                sent += 1
            _receive(sock, answers, 10)
        drain_until = time.monotonic() + _DRAIN
        while answers.total() < sent and time.monotonic() < drain_until:
            _receive(sock, answers, 100)
    finally:
        sock.close(linger=0)
    return {"sent": sent, **answers}


def _receive(sock: zmq.Socket[bytes], answers: Counter[str], timeout_ms: int) -> None:
    if not sock.poll(timeout_ms):
        return
    while True:
        try:
            frame = sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return
        reply = decode(frame)
        if isinstance(reply, Reply):
            answers[kind(reply.error_code, reply.message)] += 1


def steady(endpoint: str, seconds: float) -> dict[str, int]:
    answers: Counter[str] = Counter()
    sent = 0
    deadline = time.monotonic() + seconds
    with Client(endpoint, timeout=5, retries=0) as client:
        while time.monotonic() < deadline:
            sent += 1
            try:
                client.send(PS)
                answers["ok"] += 1
            except BerthError as exc:
                answers[kind(exc.code, exc.message)] += 1
            time.sleep(_STEADY_INTERVAL)  # a pace, not synchronisation
    return {"sent": sent, **answers}


def main() -> None:
    mode, endpoint, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    if len(sys.argv) > 4:
        uid = int(sys.argv[4])
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    run = {"flood": flood, "steady": steady}[mode]
    print(json.dumps(run(endpoint, seconds)), flush=True)


if __name__ == "__main__":
    main()
