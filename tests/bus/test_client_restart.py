"""A client and a broker that restarts: nobody listens on its ipc socket for a moment
(the file left by the old one is refused, then missing while the new one binds) while
a worker of the engine is up; the client waits for it (bounded) instead of saying that
the engine is not running. A real broker, a real worker and its stream socket."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from bus.broker import Broker
from bus.client import RESTART_WAIT, Client
from bus.endpoints import is_reachable
from engine.errors import Unavailable
from tests.e2e.conftest import Engine, engine
from tests.helpers import wait_until

__all__ = ["engine"]


@pytest.fixture
def default_network() -> str | None:
    return "none"


@pytest.fixture
def restarted(engine: Engine) -> Iterator[list[Broker]]:
    """Brokers a test starts in place of the engine's (stopped at teardown)."""
    brokers: list[Broker] = []
    yield brokers
    for broker in brokers:
        broker.stop()


def test_a_client_waits_for_a_restarting_broker_while_the_worker_is_up(
        engine: Engine, restarted: list[Broker]) -> None:
    engine.start_worker_process()
    engine.broker.stop()
    wait_until(lambda: not is_reachable(engine.endpoints.frontend), 5,
               what="nobody listening on the broker's socket")

    def restart() -> None:
        time.sleep(1.0)  # systemd's RestartSec=1s
        broker = Broker(engine.endpoints.frontend, engine.endpoints.backend,
                        engine.endpoints.events)
        broker.start()
        restarted.append(broker)

    threading.Thread(target=restart, daemon=True).start()
    with Client(engine.endpoints.frontend, timeout=5) as client:
        started = time.monotonic()
        assert client.ping()  # not "berth engine is not running"
        assert 0.9 < time.monotonic() - started < RESTART_WAIT
        # The worker comes back to the new broker, and commands go through it.
        wait_until(lambda: _lists(client), 30, what="the worker at the new broker")


def _lists(client: Client) -> bool:
    try:
        client.ps(all=True)
    except Unavailable:
        return False
    return True


def test_a_broker_that_does_not_come_back_is_said_so_within_a_bound(engine: Engine) -> None:
    engine.start_worker_process()
    engine.broker.stop()
    wait_until(lambda: not is_reachable(engine.endpoints.frontend), 5,
               what="nobody listening on the broker's socket")
    with Client(engine.endpoints.frontend, timeout=5) as client:
        started = time.monotonic()
        with pytest.raises(Unavailable, match=r"^no broker listens at ipc://.*: the worker "
                           r"listening on .*stream-local\.sock is up and waits for its "
                           r"broker, but no broker listened within 5s; retry"):
            client.ping()
        assert RESTART_WAIT <= time.monotonic() - started < RESTART_WAIT + 2
    assert engine.worker_proc is not None
    engine.worker_proc.terminate()
    engine.worker_proc.wait(20)
    # Nothing of the engine is live any more: said at once, as before.
    with Client(engine.endpoints.frontend, timeout=5) as client:
        started = time.monotonic()
        with pytest.raises(Unavailable, match="^berth engine is not running at ipc://"):
            client.ping()
        assert time.monotonic() - started < 0.5
