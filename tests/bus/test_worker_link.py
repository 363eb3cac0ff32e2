"""WorkerLink: per-container order, concurrency across containers, once per id."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import zmq

from bus.broker import Broker
from bus.client import Client
from bus.endpoints import Endpoints
from bus.protocol import Command, EventMessage, Reply, decode, encode
from bus.worker_link import WorkerLink
from tests.bus.helpers import MemoryLog, wait_until


@contextmanager
def _publisher(endpoints: Endpoints) -> Iterator[zmq.Socket[bytes]]:
    """A raw DEALER on the broker's frontend: commands leave at once, without waiting
    for each other's replies, which come back in whatever order they are answered."""
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoints.frontend)
    try:
        yield sock
    finally:
        sock.close(linger=0)


def _replies(sock: zmq.Socket[bytes], count: int, timeout_ms: int = 15000,
             ) -> dict[str, Reply]:
    """The next ``count`` replies by command id; each must come within ``timeout_ms``."""
    answered: dict[str, Reply] = {}
    while len(answered) < count:
        assert sock.poll(timeout_ms), "replies stopped"
        reply = decode(sock.recv())
        assert isinstance(reply, Reply), reply
        answered[reply.command_id] = reply
    return answered


class Ordered:
    """Records per-container arrival order; c1's first command waits for c2 to run,
    which only finishes if different containers really run concurrently."""

    def __init__(self) -> None:
        self.seen: dict[str, list[int]] = {}
        self.lock = threading.Lock()
        self.c2_ran = threading.Event()
        self.active: dict[str, int] = {}
        self.overlap = False

    def __call__(self, command: Command) -> Reply:
        key = command.container or "-"
        with self.lock:
            self.active[key] = self.active.get(key, 0) + 1
            if self.active[key] > 1:
                self.overlap = True  # two commands of one container at once: wrong
        try:
            if key == "c1" and command.args["seq"] == 0:
                assert self.c2_ran.wait(5), "c2 never ran while c1 was busy"
            if key == "c2":
                self.c2_ran.set()
            with self.lock:
                self.seen.setdefault(key, []).append(int(command.args["seq"]))
        finally:
            with self.lock:
                self.active[key] -= 1
        return Reply(command.id, True)


def test_per_container_order_with_concurrency_across_containers(
        broker: Broker, client: Client, endpoints: Endpoints,
        make_worker: Callable[..., WorkerLink]) -> None:
    handler = Ordered()
    make_worker("a", handler, concurrency=4)
    with _publisher(endpoints) as sock:
        sent = []
        for seq in range(20):
            for ctr in ("c1", "c2"):
                cmd = client.command("container.kill", ctr, "a", {"seq": seq})
                sent.append(cmd.id)
                sock.send(encode(cmd))
        replies = _replies(sock, len(sent), 5000)
        assert all(r.ok for r in replies.values()), replies
        assert handler.seen == {"c1": list(range(20)), "c2": list(range(20))}
        assert not handler.overlap


def test_a_duplicate_delivery_is_answered_from_the_link_s_memory(
        broker: Broker, client: Client, endpoints: Endpoints) -> None:
    calls: list[str] = []

    def handler(command: Command) -> Reply:
        calls.append(command.id)
        return Reply(command.id, True, result={"n": len(calls)})

    # a bare ROUTER stands in for a broker that re-sends a command (as after a
    # wrongly presumed death); the link must not run it twice
    router: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    link = WorkerLink(f"tcp://127.0.0.1:{port}", "a", handler, heartbeat_interval=0.1)
    link.start()
    try:
        assert router.poll(5000)
        identity, _ready = router.recv_multipart()
        cmd = encode(client.command("container.start", "web", "a"))
        replies = []
        for _ in range(2):
            router.send_multipart([identity, cmd])
            def got_reply() -> bool:
                while router.poll(50):
                    msg = decode(router.recv_multipart()[1])
                    if isinstance(msg, Reply):
                        replies.append(msg)
                        return True
                return False
            wait_until(got_reply, what="reply from the link")
        assert len(calls) == 1 and replies[0] == replies[1]
        assert link.stats["duplicates"] == 1
    finally:
        link.stop()
        router.close(linger=0)


def test_events_published_from_many_threads_all_arrive(
        broker: Broker, endpoints: Endpoints, make_worker: Callable[..., WorkerLink]) -> None:

    log = MemoryLog()
    link = make_worker("n1", log)
    sub: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoints.events)
    try:
        probe = log.append("probe.ping", publish=False)
        def live() -> bool:
            link.publish_event(probe)
            return bool(sub.poll(20))

        wait_until(live, what="subscription live")
        while sub.poll(50):
            sub.recv_multipart()
        events = [log.append("container.started", f"c{i % 5}", publish=False) for i in range(200)]
        def publish(share: list[EventMessage]) -> None:
            for event in share:
                link.publish_event(event)

        threads = [threading.Thread(target=publish, args=(events[k::4],)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        got: set[int] = set()
        while len(got) < 200:
            assert sub.poll(5000), f"only {len(got)} events arrived"
            event = decode(sub.recv_multipart()[1])
            assert isinstance(event, EventMessage)
            got.add(event.position)
        assert got == {e.position for e in events}
    finally:
        sub.close(linger=0)


def test_an_exec_waits_for_earlier_changes_but_not_later_ones_wait_for_it(
        broker: Broker, client: Client, endpoints: Endpoints,
        make_worker: Callable[..., WorkerLink]) -> None:
    """An exec lasts as long as its process; a stop of its container sent after it
    runs at once (it waited behind the exec), while a start sent before it still
    comes first."""
    stopped = threading.Event()
    order: list[str] = []

    def handler(command: Command) -> Reply:
        if command.type == "container.start":
            assert not order, "the start ran after something sent behind it"
        elif command.type == "container.exec":
            # ends only once the stop sent behind it has run
            assert stopped.wait(10), "the stop waited for the exec"
        elif command.type == "container.stop":
            stopped.set()
        order.append(command.type)
        return Reply(command.id, True)

    make_worker("a", handler, concurrency=4)
    with _publisher(endpoints) as sock:
        sent = [client.command(t, "c1", "a", {}) for t in
                ("container.start", "container.exec", "container.stop")]
        for cmd in sent:
            sock.send(encode(cmd))
        replies = _replies(sock, len(sent))
        assert all(r.ok for r in replies.values()), replies
        assert order == ["container.start", "container.stop", "container.exec"]


def test_long_execs_leave_the_command_pool_to_the_stop_that_ends_them(
        broker: Broker, client: Client, endpoints: Endpoints,
        make_worker: Callable[..., WorkerLink]) -> None:
    """A regression: execs ran on the command pool's threads, so as many long execs
    as the worker's concurrency (interactive shells) left no thread for any other
    command, the stop meant to end them included."""
    release = threading.Event()
    stopped = threading.Event()

    def handler(command: Command) -> Reply:
        if command.type == "container.exec":
            assert release.wait(20), "never released"
        elif command.type == "container.stop":
            stopped.set()
        return Reply(command.id, True)

    make_worker("a", handler, concurrency=2)
    with _publisher(endpoints) as sock:
        try:
            execs = [client.command("container.exec", f"c{i}", "a", {}) for i in range(4)]
            for cmd in execs:
                sock.send(encode(cmd))
            stop = client.command("container.stop", "c9", "a", {})
            sock.send(encode(stop))
            # answered while the execs still run
            assert set(_replies(sock, 1, 10000)) == {stop.id}
            assert stopped.is_set()
            release.set()
            assert set(_replies(sock, len(execs))) == {cmd.id for cmd in execs}
        finally:
            release.set()
