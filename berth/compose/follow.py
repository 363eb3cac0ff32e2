"""``berth compose up`` in the foreground: the reconciler kept running until interrupted.

After its first pass it follows the event log from the head taken *before* that pass
(a catch-up subscription, so nothing between the observation and the subscription is
missed), and plans again whenever an event touches the project
(``engine.compose.plan.touches``): a replica whose conmon or process was killed from
outside is started again, one removed is made again. Events are never queued here:
however many arrive, they set one "plan again" flag and one pass serves them all. A lost
subscription is opened again from the last position it delivered, not from the start.

The passes keep the deterministic command ids of ``berth.compose.reconciler``: an exit is an
incarnation (the start's id names the container and its last exit), so a reconciler
killed -9 and started again sends the same ids and the engine answers a repeat with its
recorded outcome. SIGINT/SIGTERM stop the stack's containers (dependants first), as
docker compose's attached ``up`` does, and return 0; a second signal returns at once.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import TYPE_CHECKING, Any

from berth.compose.lines import Lines, write_lines
from berth.compose.reconciler import observe, remove_containers
from bus.client import Client
from engine.errors import BerthError, NotFound

if TYPE_CHECKING:
    from berth.compose.reconciler import Reconciler
    from bus.protocol import EventMessage
    from bus.subscription import Subscription
    from engine.compose.plan import Observed

POLL = 0.2
"""Seconds one wait for an event lasts before the loop looks at its flags again."""
MAX_BATCH = 1000
"""Events read before a pass is made however many more are waiting (a flood of events
delays the pass by at most this many, it never grows a queue)."""
RESYNC = 30.0
"""A pass at least this often even with no event (a safety net, not the mechanism)."""
RETRY = 1.0
"""Seconds before a pass that failed (or a lost subscription) is tried again."""
STOPPERS = 8
"""Containers stopped at once when interrupted (each with its own connection)."""


def clone(client: Client) -> Client:
    """Another connection like ``client`` (a Client is one thread's)."""
    return Client(",".join(client.endpoints), events_endpoint=client.events_endpoint,
                  actor=client.actor, timeout=client.timeout, retries=client.retries,
                  curve=client.curve)


class LogPrinter(threading.Thread):
    """Prints the project's containers' log lines, prefixed with their names, on its
    own connection, so a slow log never delays a replacement."""

    def __init__(self, client: Client) -> None:
        super().__init__(name="compose-logs", daemon=True)
        self._client = client
        self._lock = threading.Lock()
        self._offsets: dict[str, tuple[str, int]] = {}
        self._lines = Lines()
        self._seen: dict[str, str] = {}  # id -> the finished_at it was last tracked with
        self._active: set[str] = set()
        self._wake = threading.Event()
        self.finishing = False

    def track(self, observed: list[Observed]) -> None:
        """The project's containers now: a new one, a live one or one that ended again
        since is read until it has ended and said everything."""
        with self._lock:
            ids = {o.id for o in observed}
            for gone in set(self._offsets) - ids - self._active:
                del self._offsets[gone]
                self._seen.pop(gone, None)
            for o in observed:
                if (o.id not in self._offsets or o.state != "exited"
                        or self._seen.get(o.id) != o.finished_at):
                    self._active.add(o.id)
                self._offsets.setdefault(o.id, (o.name, 0))
                self._seen[o.id] = o.finished_at
        self._wake.set()

    def finish(self, timeout: float) -> None:
        """Print what is left of every tracked container, then return."""
        self.finishing = True
        self._wake.set()
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        try:
            while True:
                with self._lock:
                    ids = sorted(self._active)
                if not ids:
                    if self.finishing:
                        return
                    self._wake.wait(POLL)
                    self._wake.clear()
                    continue
                for cid in ids:
                    try:
                        self._read(cid)
                    except BerthError as exc:  # the bus is away: read it again later
                        print(f"berth: compose logs: {exc}", file=sys.stderr)
                        self._wake.wait(RETRY)
        finally:
            self._client.close()

    def _read(self, cid: str) -> None:
        with self._lock:
            name, offset = self._offsets[cid]
        try:
            chunk = self._client.logs(cid, offset=offset,
                                      wait_ms=0 if self.finishing else int(POLL * 1000))
        except NotFound:
            chunk = {"lines": [], "offset": offset, "state": "removed"}
        lines = chunk.get("lines", [])
        # whole lines only: a partial piece waits for the rest of its line
        write_lines(self._lines.feed(cid, f"{name} | ", lines))
        with self._lock:
            self._offsets[cid] = (name, int(chunk["offset"]))
            if not lines and chunk["state"] in ("exited", "removed"):
                write_lines(self._lines.rest(cid, f"{name} | "))
                self._active.discard(cid)


class Foreground:
    """The loop of a foreground ``up``: one reconciler, its log printer, its signals."""

    def __init__(self, client: Client, reconciler: Reconciler, *, stop_timeout: float) -> None:
        self.client, self.rec = client, reconciler
        self.project = reconciler.project
        self.stop_timeout = stop_timeout
        self.signals = 0
        self.names: dict[str, str] = {}  # id -> name of the project's containers
        self.known: frozenset[str] = frozenset()  # their ids

    @property
    def stopping(self) -> bool:
        return self.signals > 0

    def _signalled(self, signum: int, frame: FrameType | None) -> None:
        """Only counts (a handler that takes a lock can deadlock the thread it
        interrupts); the second signal gives up at once, as docker compose's does."""
        self.signals += 1
        if self.signals > 1:
            raise KeyboardInterrupt

    def run(self) -> int:
        previous = {s: signal.signal(s, self._signalled)
                    for s in (signal.SIGINT, signal.SIGTERM)}
        self.rec.stopping = lambda: self.stopping
        try:
            _, head = self.client.events(after=0, limit=1)  # before the first look
            self.rec.converge()
            logs = LogPrinter(clone(self.client))
            logs.start()
            self._refresh(logs)
            outcome = "interrupted" if self.stopping else self._follow(head + 1, logs)
            if outcome == "removed":
                print(f"stack {self.project} removed: removing what is left",
                      file=sys.stderr)
                remove_containers(self.client, self.rec.stack)
            elif outcome == "interrupted":
                print(f"stopping stack {self.project}", file=sys.stderr)
                self._stop_stack()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        logs.finish(timeout=self.stop_timeout + 5.0)
        return 0

    def _refresh(self, logs: LogPrinter) -> list[Observed]:
        observed = observe(self.client, self.project)
        self.names = {o.id: o.name for o in observed}
        self.known = frozenset(self.names)
        logs.track(observed)
        return observed

    def _follow(self, position: int, logs: LogPrinter) -> str:
        """Until interrupted ("interrupted"), the stack removed ("removed") or every
        container ended by its own doing ("ended")."""
        from engine.compose.plan import BACKOFF_WINDOW, all_ended, hold_until

        sub: Subscription | None = None
        dirty, last_pass, retry_at, wake_at = True, time.monotonic(), 0.0, None
        revived: dict[str, deque[float]] = {}  # name -> when it was last made to run
        try:
            while not self.stopping:
                try:
                    if sub is None:
                        sub = self.client.subscribe(from_position=position)
                    verdict = self._read(sub)
                    position = sub.last_position + 1
                except BerthError as exc:
                    print(f"berth: compose: lost the event log ({exc}); following again "
                          f"from position {position}", file=sys.stderr)
                    if sub is not None:
                        sub.close()
                    sub, dirty = None, True
                    self._pause(RETRY)
                    continue
                if verdict == "removed":
                    return "removed"
                now = time.monotonic()
                due = wake_at is not None and now >= wake_at
                dirty = dirty or verdict == "again" or due or now - last_pass >= RESYNC
                if not dirty or now < retry_at or self.stopping:
                    continue
                dirty, last_pass = False, now
                revived = {name: times for name, times in revived.items()
                           if now - times[-1] < BACKOFF_WINDOW}  # bounded: recent ones
                holds = {name: hold_until(times) for name, times in revived.items()}
                try:
                    actions = self.rec.converge(following=True, holds=holds)
                    observed = self._refresh(logs)
                except BerthError as exc:
                    print(f"berth: compose: {exc} (trying again)", file=sys.stderr)
                    dirty, retry_at = True, now + RETRY
                    continue
                wake_at = self.rec.due
                for action in actions:
                    if action.kind in ("create", "start"):
                        revived.setdefault(action.container, deque(maxlen=16)).append(now)
                if not actions and wake_at is None and all_ended(observed):
                    return "ended"
            return "interrupted"
        finally:
            if sub is not None:
                sub.close()

    def _read(self, sub: Subscription) -> str:
        """Read what has arrived (at most ``MAX_BATCH`` events): "removed" if the stack
        was removed, "again" if a pass is due, "" if nothing touched the project."""
        verdict = ""
        event = sub.get(POLL)
        for _ in range(MAX_BATCH):
            if event is None:
                break
            judged = self._judge(event)
            if judged == "removed":
                return judged
            verdict = verdict or judged
            event = None if self.stopping else sub.get(0)
        return verdict

    def _judge(self, event: EventMessage) -> str:
        from engine.compose.plan import touches
        from engine.compose.stacks import stream_of

        if not touches(self.project, self.known, event.type, event.stream, event.data):
            return ""
        if event.stream == stream_of(self.project):
            if event.type == "stack.removed":
                return "removed"
            config = event.data.get("config")
            if isinstance(config, dict) and event.data.get("digest") != self.rec.digest:
                print(f"stack {self.project} changed ({event.data.get('digest')}): "
                      "converging to it", file=sys.stderr)
                self.rec.adopt(config)
        elif event.type == "container.exited" and event.stream in self.names:
            data = event.data
            print(f"{self.names[event.stream]} exited (code {data.get('exit_code')}, "
                  f"reason {data.get('reason')})", file=sys.stderr)
        return "again"

    def _pause(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(0.05)  # a pause between retries, cut short by a signal

    def _stop_stack(self) -> None:
        """Stop the running containers, dependants before what they depend on, the
        replicas of one service at once."""
        from engine.compose.model import order

        live = [o for o in observe(self.client, self.project)
                if o.state in ("running", "paused")]
        by_service: dict[str, list[Observed]] = {}
        for o in live:
            parsed = o.replica
            by_service.setdefault(parsed[0] if parsed else "", []).append(o)
        wanted = order(self.rec.stack)
        ranks = {s: i for i, s in enumerate(wanted)}
        for service in sorted(by_service, key=lambda s: -ranks.get(s, len(wanted))):
            group = by_service[service]
            with ThreadPoolExecutor(min(STOPPERS, len(group))) as pool:
                list(pool.map(self._stop_one, group))

    def _stop_one(self, o: Observed) -> Any:
        with clone(self.client) as c:
            try:
                c.stop(o.id, timeout=self.stop_timeout)
            except BerthError as exc:
                print(f"berth: stopping {o.name}: {exc}", file=sys.stderr)
                return None
        print(f"stopped {o.name}", file=sys.stderr)
        return None
