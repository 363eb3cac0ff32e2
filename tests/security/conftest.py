"""Real keys in private directories and real brokers on loopback tcp with CURVE.

Every broker binds ``tcp://127.0.0.1:*`` (random ports, read back from the
socket), every key is made by ``bus.keys.generate`` (which uses zmq's own
certificate writer), and everything started here is stopped at teardown.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bus import keys
from bus.broker import Broker
from bus.client import Client
from bus.keys import ClientKeys
from bus.security import BrokerSecurity
from bus.worker_link import Handler, WorkerLink
from tests.bus.helpers import HEARTBEAT

LOOPBACK = "tcp://127.0.0.1:*"


@dataclass
class KeyStore:
    """A broker's key directory laid out as in production: its own pair, and the
    authorised workers' and publishers' public keys in separate directories."""

    root: Path
    peers: dict[str, ClientKeys] = field(default_factory=dict)

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def broker_secret(self) -> Path:
        return self.keys_dir / "broker.key_secret"

    @property
    def broker_public(self) -> Path:
        return self.keys_dir / "broker.key"

    def authorized(self, role: str) -> Path:
        return self.keys_dir / "authorized" / role

    def security(self) -> BrokerSecurity:
        return BrokerSecurity.load(self.broker_secret, self.authorized(keys.WORKERS),
                                   self.authorized(keys.PUBLISHERS))

    def peer(self, name: str, role: str | None = None) -> ClientKeys:
        """A new key pair for ``name`` (kept outside the broker's directory, as on
        another host), authorised for ``role`` (workers, publishers or None)."""
        own = self.root / "peers" / name
        public, secret = keys.generate(name, own)
        if role is not None:
            keys.authorize(public, role)
        self.peers[name] = keys.client_keys(secret, self.broker_public)
        return self.peers[name]

    def secret_file(self, name: str) -> Path:
        return self.root / "peers" / name / f"{name}.key_secret"


@pytest.fixture
def keystore(monkeypatch: pytest.MonkeyPatch) -> Iterator[KeyStore]:
    root = Path(tempfile.mkdtemp(prefix="bsec", dir="/tmp"))
    monkeypatch.setenv("BERTH_ROOT", str(root))
    for name in ("BERTH_KEY", "BERTH_SERVER_KEY", "BERTH_BROKER_KEY",
                 "BERTH_AUTHORIZED_WORKERS", "BERTH_AUTHORIZED_PUBLISHERS", "BERTH_BUS",
                 "BERTH_BUS_WORKERS", "BERTH_BUS_EVENTS"):
        monkeypatch.delenv(name, raising=False)
    store = KeyStore(root)
    keys.generate("broker", store.keys_dir)
    for role in keys.ROLES:
        keys.ensure_private_dir(store.authorized(role))
    yield store
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def make_tcp_broker(keystore: KeyStore) -> Iterator[Callable[..., Broker]]:
    started: list[Broker] = []

    def make(**options: Any) -> Broker:
        options.setdefault("heartbeat_interval", HEARTBEAT)
        options.setdefault("security", keystore.security())
        broker = Broker(LOOPBACK, LOOPBACK, LOOPBACK, **options)
        broker.start()
        started.append(broker)
        return broker

    yield make
    for broker in started:
        broker.stop()


@pytest.fixture
def tcp_broker(make_tcp_broker: Callable[..., Broker]) -> Broker:
    return make_tcp_broker()


@pytest.fixture
def connect(tcp_broker: Broker) -> Iterator[Callable[..., Client]]:
    """Clients of ``tcp_broker`` with the given keys (None: no keys at all)."""
    clients: list[Client] = []

    def make(curve: ClientKeys | None, **options: Any) -> Client:
        options.setdefault("timeout", 1.0)
        options.setdefault("retries", 0)
        client = Client(tcp_broker.frontend_endpoint, events_endpoint=tcp_broker.events_endpoint,
                        curve=curve, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def attach(tcp_broker: Broker) -> Iterator[Callable[..., WorkerLink]]:
    """Worker links to ``tcp_broker``'s backend with the given keys."""
    links: list[WorkerLink] = []

    def make(node: str, handler: Handler, curve: ClientKeys | None) -> WorkerLink:
        link = WorkerLink(tcp_broker.backend_endpoint, node, handler, curve=curve,
                          heartbeat_interval=HEARTBEAT)
        link.start()
        links.append(link)
        return link

    yield make
    for link in links:
        link.stop(timeout=2)
