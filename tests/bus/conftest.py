"""Fixtures that start real brokers, worker links and clients on private endpoints.

Every part started here is stopped at teardown. Endpoints are ipc sockets in a
short private directory (ipc paths are limited to ~107 bytes, so not tmp_path).
Waits are on conditions with deadlines, never on sleeps.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bus.broker import Broker
from bus.client import Client
from bus.endpoints import Endpoints, from_run_dir
from bus.worker_link import Handler, WorkerLink
from tests.bus.helpers import HEARTBEAT, wait_until, worker_count


@pytest.fixture
def run_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bb", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def endpoints(run_dir: Path) -> Endpoints:
    return from_run_dir(run_dir / "run")


@pytest.fixture
def make_broker(endpoints: Endpoints) -> Iterator[Callable[..., Broker]]:
    started: list[Broker] = []

    def make(**options: Any) -> Broker:
        options.setdefault("heartbeat_interval", HEARTBEAT)
        broker = Broker(endpoints.frontend, endpoints.backend, endpoints.events, **options)
        broker.start()
        started.append(broker)
        return broker

    yield make
    for broker in started:
        broker.stop()


@pytest.fixture
def broker(make_broker: Callable[..., Broker]) -> Broker:
    return make_broker()


@pytest.fixture
def make_client(endpoints: Endpoints) -> Iterator[Callable[..., Client]]:
    clients: list[Client] = []

    def make(**options: Any) -> Client:
        options.setdefault("timeout", 2.0)
        options.setdefault("retries", 1)
        client = Client(endpoints.frontend, events_endpoint=endpoints.events, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(make_client: Callable[..., Client]) -> Client:
    return make_client()


@pytest.fixture
def make_worker(endpoints: Endpoints, make_client: Callable[..., Client]
                ) -> Iterator[Callable[..., WorkerLink]]:
    links: list[WorkerLink] = []
    probe = make_client()

    def make(node: str, handler: Handler, **options: Any) -> WorkerLink:
        options.setdefault("heartbeat_interval", HEARTBEAT)
        before = worker_count(probe)
        link = WorkerLink(endpoints.backend, node, handler, **options)
        link.start()
        links.append(link)
        wait_until(lambda: worker_count(probe) > before, what=f"worker of {node} registered")
        return link

    yield make
    for link in links:
        link.stop(timeout=2)
