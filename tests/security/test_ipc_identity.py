"""Over ipc the actor is the peer's uid as the kernel reports it (SO_PEERCRED, read by
libzmq into each message's Peer-Address), never the name the client claims."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus.admission import uid_identity
from bus.broker import Broker
from bus.client import Client
from bus.endpoints import Endpoints, from_run_dir
from bus.worker_link import WorkerLink
from tests.bus.helpers import HEARTBEAT, Recorder, wait_until, worker_count

REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534


@pytest.fixture
def ipc_bus() -> Iterator[tuple[Endpoints, Recorder]]:
    run = Path(tempfile.mkdtemp(prefix="bsi", dir="/tmp"))
    endpoints = from_run_dir(run / "run")
    broker = Broker(endpoints.frontend, endpoints.backend, endpoints.events,
                    heartbeat_interval=HEARTBEAT)
    broker.start()
    recorder = Recorder()
    link = WorkerLink(endpoints.backend, "n1", recorder, heartbeat_interval=HEARTBEAT)
    link.start()
    try:
        yield endpoints, recorder
    finally:
        link.stop(timeout=2)
        broker.stop()
        shutil.rmtree(run, ignore_errors=True)


def test_the_ipc_actor_is_the_peer_uid(ipc_bus: tuple[Endpoints, Recorder]) -> None:
    endpoints, recorder = ipc_bus
    with Client(endpoints.frontend, actor="mallory", timeout=2, retries=0) as client:
        wait_until(lambda: worker_count(client, "n1") == 1, what="worker registered")
        assert not client.ping()["curve"]
        client.send("container.start", "web", "n1")
    assert [c.actor for c in recorder.commands] == [uid_identity(os.getuid())]
    assert recorder.commands[0].actor == "root(uid 0)"


def test_another_uid_is_recorded_as_itself(ipc_bus: tuple[Endpoints, Recorder]) -> None:
    """Open the (normally 0600, root-only) socket to ``nobody`` for this test only:
    what it sends is recorded as nobody, whatever actor it claims."""
    endpoints, recorder = ipc_bus
    socket_file = Path(endpoints.frontend[len("ipc://"):])
    for directory in (socket_file.parent, socket_file.parent.parent):
        directory.chmod(0o711)
    socket_file.chmod(0o666)
    with Client(endpoints.frontend, timeout=2, retries=0) as client:
        wait_until(lambda: worker_count(client, "n1") == 1, what="worker registered")
    # Python itself lives under 0700 /root here: import as root (the client's lazy
    # imports too, which a real user's readable stdlib would give it), then become nobody.
    script = ("import os, sys, socket; from bus.client import Client; "
              f"os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY}); "
              "c = Client(sys.argv[1], actor='root@trusted', timeout=5, retries=0); "
              "print(c.send('container.start', 'web', 'n1').ok)")
    done = subprocess.run([sys.executable, "-c", script, endpoints.frontend], cwd="/",
                          env={"PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert [c.actor for c in recorder.commands] == [uid_identity(NOBODY)]
    assert recorder.commands[0].actor.endswith(f"(uid {NOBODY})")


def test_a_user_who_may_not_use_the_socket_is_told_so(ipc_bus: tuple[Endpoints, Recorder]) -> None:
    """With the socket as the broker leaves it (0600 root), another user gets a
    clear permission error, not a silent wait."""
    endpoints, _ = ipc_bus
    script = ("import os, sys; from bus.client import Client; "
              f"os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY}); "
              "from engine.errors import PermissionDenied\n"
              "try: Client(sys.argv[1], actor='x', timeout=1, retries=0).ping()\n"
              "except PermissionDenied as e: print(e)")
    Path(endpoints.frontend[len("ipc://"):]).parent.parent.chmod(0o711)  # the run dir stays 0700
    done = subprocess.run([sys.executable, "-c", script, endpoints.frontend], cwd="/",
                          env={"PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                          timeout=30, check=False)
    assert "only root may use the berth bus" in done.stdout, done.stderr
