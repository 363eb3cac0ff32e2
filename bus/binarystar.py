"""Binary Star: a primary and a backup broker, one of them active (the ZeroMQ guide,
chapter 4, "High-Availability Pair").

Pure rules, no sockets: the broker feeds this machine the peer's state as it hears
it (each side publishes its own every heartbeat) and every client request, and asks
it whether to serve. Failover follows the pattern's rule against split brain: the
backup takes over only when the primary has been silent for two heartbeats **and** a
client asks the backup, so a backup that merely lost sight of its peer does not
start serving while clients still reach the primary. Two actives, or two passives,
is a fatal configuration error (``DualActive``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final

PEER_EXPIRY_BEATS: Final = 2
"""The peer is gone after this many heartbeat intervals without its state."""


class State(Enum):
    PRIMARY = 1
    """Primary, waiting to see the peer (or a client) before serving."""
    BACKUP = 2
    """Backup, waiting to see the peer."""
    ACTIVE = 3
    """Serving clients and workers."""
    PASSIVE = 4
    """Standing by: clients and workers are turned away."""

    @property
    def wire(self) -> bytes:
        return bytes([self.value])

    @classmethod
    def from_wire(cls, frame: bytes) -> State | None:
        if len(frame) != 1:
            return None
        try:
            return cls(frame[0])
        except ValueError:
            return None


class DualActive(RuntimeError):
    """Both brokers believe they are active (or both passive): stop rather than
    split the engine in two."""


@dataclass
class BinaryStar:
    """One broker's side of the pair."""

    state: State
    heartbeat: float
    peer_expiry: float = 0.0

    @classmethod
    def start(cls, role: str, heartbeat: float, now: float) -> BinaryStar:
        if role not in ("primary", "backup"):
            raise ValueError(f"role must be primary or backup, got {role!r}")
        state = State.PRIMARY if role == "primary" else State.BACKUP
        return cls(state, heartbeat, now + PEER_EXPIRY_BEATS * heartbeat)

    @property
    def active(self) -> bool:
        return self.state is State.ACTIVE

    def peer(self, peer_state: State, now: float) -> None:
        """The peer said its state."""
        self.peer_expiry = now + PEER_EXPIRY_BEATS * self.heartbeat
        if self.state is State.PRIMARY:
            if peer_state is State.BACKUP:
                self.state = State.ACTIVE
            elif peer_state is State.ACTIVE:
                self.state = State.PASSIVE
        elif self.state is State.BACKUP:
            if peer_state is State.ACTIVE:
                self.state = State.PASSIVE
        elif self.state is State.ACTIVE:
            if peer_state is State.ACTIVE:
                raise DualActive("both brokers of the pair are active")
        elif self.state is State.PASSIVE:
            if peer_state in (State.PRIMARY, State.BACKUP):
                self.state = State.ACTIVE  # the peer restarted: it will go passive
            elif peer_state is State.PASSIVE:
                raise DualActive("both brokers of the pair are passive")

    def client_request(self, now: float) -> bool:
        """A client asks: whether to serve it (and become active if it is time)."""
        if self.state is State.ACTIVE:
            return True
        if self.state in (State.PRIMARY, State.PASSIVE) and now >= self.peer_expiry:
            self.state = State.ACTIVE  # the peer is gone and a client wants service
            return True
        return False
