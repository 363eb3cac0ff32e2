"""Real handlers and condition waits shared by the bus tests."""

from __future__ import annotations

import threading
from collections.abc import Callable

from bus.client import Client
from bus.protocol import Command, EventMessage, Reply, now_iso
from bus.results import events_result
from bus.worker_link import WorkerLink
from engine.errors import InvalidState, NotFound, Unavailable
from tests.helpers import wait_until

__all__ = ["wait_until"]  # re-exported: the bus tests import it from here

HEARTBEAT = 0.1




class Recorder:
    """A real handler: records commands and answers ok; args steer it for tests.

    ``gate``: block until the named gate (a threading.Event in ``gates``) is set;
    ``fail``: raise the engine error with that code; ``crash``: raise a bug;
    ``unavailable_once``: answer ``unavailable`` the first time an id arrives (a worker
    cut off by its drain deadline), and run it when it comes again.
    """

    def __init__(self, name: str = "worker") -> None:
        self.name = name
        self.commands: list[Command] = []
        self.started: list[str] = []
        self.gates: dict[str, threading.Event] = {}
        self.lock = threading.Lock()

    def gate(self, name: str) -> threading.Event:
        with self.lock:
            return self.gates.setdefault(name, threading.Event())

    def __call__(self, command: Command) -> Reply:
        with self.lock:
            self.started.append(command.id)
        gate = command.args.get("gate")
        if isinstance(gate, str) and not self.gate(gate).wait(10):
            raise InvalidState(f"gate {gate} never opened")
        if command.args.get("unavailable_once"):
            with self.lock:
                first = self.started.count(command.id) == 1
            if first:
                raise Unavailable("the worker stopped before this command finished")
        if command.args.get("fail") == "not_found":
            raise NotFound(f"no such container {command.container}")
        if command.args.get("crash"):
            raise RuntimeError("handler bug")
        with self.lock:
            self.commands.append(command)
        return Reply(command.id, True, result={"worker": self.name, "node": command.node})

    def count(self, command_id: str) -> int:
        with self.lock:
            return sum(1 for c in self.commands if c.id == command_id)


class MemoryLog:
    """A real event log in memory, serving query.events and publishing on the bus."""

    def __init__(self) -> None:
        self.events: list[EventMessage] = []
        self.lock = threading.Lock()
        self.link: WorkerLink | None = None
        self.on_query: Callable[[int], None] | None = None

    def append(self, type: str, container: str = "c1", *, publish: bool = True) -> EventMessage:
        with self.lock:
            position = len(self.events) + 1
            version = 1 + sum(1 for e in self.events if e.stream == f"container-{container}")
            event = EventMessage(position, f"container-{container}", version, type,
                                 {"n": position}, now_iso(), None, None, "test", "n1")
            self.events.append(event)
        if publish and self.link is not None:
            self.link.publish_event(event)
        return event

    def __call__(self, command: Command) -> Reply:
        if command.type == "query.events":
            after, limit = int(command.args["after"]), int(command.args["limit"])
            if self.on_query is not None:
                self.on_query(after)
            with self.lock:
                page = [e for e in self.events if e.position > after][:limit]
                head = len(self.events)
            return Reply(command.id, True, result=events_result(page, head))
        return Reply(command.id, True)


def worker_count(client: Client, node: str | None = None) -> int:
    return sum(1 for w in client.ping()["workers"] if node is None or w["node"] == node)
