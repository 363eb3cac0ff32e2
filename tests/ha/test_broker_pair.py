"""A Binary Star pair of broker processes: the primary killed -9 under a command in
flight; the backup takes over when a client asks, the worker follows, the command is
carried out once and its reply reaches the publisher; the event feed goes on with no
gap; and a backup never serves while its primary is alive."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from bus.client import Client
from bus.protocol import EventMessage
from engine.errors import BerthError, Passive
from engine.runtime import OCIRuntime, RuntimeConfig
from engine.store.store import EventStore
from tests.helpers import wait_until

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class Pair:
    base: str
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def dir(self, name: str) -> str:
        return os.path.join(self.base, name)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
        env.update(PYTHONPATH=REPO, BERTH_ROOT=self.dir("root"), BERTH_RUN=self.dir("run"),
                   BERTH_DB=f"sqlite:///{self.dir('berth.db')}")
        return env

    def bus(self, name: str, sock: str = "bus.sock") -> str:
        return f"ipc://{self.dir(name)}/{sock}"

    @property
    def frontends(self) -> str:
        return f"{self.bus('a')},{self.bus('b')}"

    def start_broker(self, name: str, role: str) -> None:
        other = "b" if name == "a" else "a"
        with open(os.path.join(self.base, f"broker-{name}.log"), "ab") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "berth", "broker", "--bind", self.bus(name),
                 "--role", role, "--peer", self.bus(other, "state.sock")],
                env=self.env(), stdout=subprocess.DEVNULL, stderr=log)

    def start_worker(self) -> None:
        with open(os.path.join(self.base, "worker.log"), "ab") as log:
            self.procs["worker"] = subprocess.Popen(
                [sys.executable, "-m", "berth", "worker", "--node", "local", "--connect",
                 f"{self.bus('a', 'worker.sock')},{self.bus('b', 'worker.sock')}"],
                env=self.env(), stdout=subprocess.DEVNULL, stderr=log)

    def client(self, **kw: float) -> Client:
        return Client(self.frontends, **kw)  # type: ignore[arg-type]

    def state(self, name: str) -> str | None:
        try:
            with Client(self.bus(name), timeout=0.5, retries=0) as c:
                return str(c.ping()["pair"])
        except BerthError:
            return None

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        runtime = OCIRuntime(RuntimeConfig(state_dir=self.dir("root"),
                                           tmp_dir=os.path.join(self.dir("run"), "runtime")))
        containers = os.path.join(self.dir("root"), "containers")
        if os.path.isdir(containers):
            for cid in os.listdir(containers):
                with contextlib.suppress(BerthError):
                    runtime.delete(cid, force=True)
                runtime.cleanup(cid)


@pytest.fixture
def pair(short_tmp: str) -> Iterator[Pair]:
    p = Pair(short_tmp)
    p.start_broker("a", "primary")
    p.start_broker("b", "backup")
    try:
        wait_until(lambda: p.state("a") == "active" and p.state("b") == "passive", 30,
                   what="the pair settled: a active, b passive")
        p.start_worker()
        yield p
    finally:
        p.close()


def _serving(c: Client) -> bool:
    try:
        return bool(c.ping()["workers"])
    except BerthError:
        return False


def test_the_backup_turns_clients_away_while_the_primary_lives(pair: Pair) -> None:
    with (Client(pair.bus("b"), timeout=2, retries=0) as only_b,
          pytest.raises(Passive, match="passive one of its pair")):
        only_b.ps()
    assert pair.state("b") == "passive"
    with pair.client(timeout=2, retries=1) as c:
        wait_until(lambda: _serving(c), 30, what="the worker registered at a")
        assert c.ps() == []  # the list's first broker serves


def test_primary_killed_mid_command_backup_takes_over_exactly_once(
        pair: Pair, busybox_rootfs: str) -> None:
    c = pair.client(timeout=2, retries=5)
    wait_until(lambda: _serving(c), 30, what="the worker registered at a")
    cid = c.create(rootfs=busybox_rootfs, name="steady",
                   args=["sh", "-c", "trap 'sleep 2; exit 0' TERM; while true; do sleep 0.1; "
                                     "done"]).result["id"]
    c.start(cid)
    feed: list[EventMessage] = []
    subscription = c.subscribe(from_position=1)
    stop_feed = threading.Event()

    def follow() -> None:
        while not stop_feed.is_set():
            event = subscription.get(timeout=0.2)
            if event is not None:
                feed.append(event)

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    try:
        replies: list[object] = []
        stopping = threading.Thread(target=lambda: replies.append(c.stop(cid, timeout=10)))
        stopping.start()
        with EventStore(pair.env()["BERTH_DB"]) as store:
            wait_until(lambda: "container.stop_requested" in
                       [r.type for r in store.read_stream(cid)], 30, what="stop under way")
        killed = time.monotonic()
        os.kill(pair.procs["a"].pid, signal.SIGKILL)
        stopping.join(60)
        failover = time.monotonic() - killed
        assert replies, "the stop's reply never reached the publisher"
        assert pair.state("b") == "active"
        with EventStore(pair.env()["BERTH_DB"]) as store:
            types = [r.type for r in store.read_stream(cid)]
        assert types.count("container.stop_requested") == 1
        assert types.count("container.exited") == 1
        c.remove(cid)  # and the pair goes on serving through b
        wait_until(lambda: any(e.type == "container.removed" for e in feed), 30,
                   what="the feed shows the remove, through b")
        positions = [e.position for e in feed]
        assert positions == list(range(1, len(positions) + 1)), "a gap or a repeat in the feed"
        print(f"\nfailover: the stop's reply came {failover:.1f}s after the primary's kill "
              "(client timeout 2 s)")
    finally:
        stop_feed.set()
        follower.join(5)
        subscription.close()
        c.close()
