"""A Binary Star pair split by a network partition: each broker in its own network
namespace, the link between them dropped (iptables in one namespace), the link from
the clients to both kept.

What Binary Star promises, and what it does not (docs/operations.md, "Broker
pair"): the backup, though it no longer hears its primary, stays passive as long as
clients reach the primary, because it takes over only when a client asks it. A
client that can reach only the backup does make it active: then both serve (split
brain). When the partition heals, each sees the other active and both stop, rather
than go on as two engines; the operator restarts them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from bus.client import Client
from engine.errors import BerthError, Passive, Unavailable
from tests import netns
from tests.helpers import wait_until
from tests.multihost.cluster import Curve

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PORT = 5555  # each broker has its own namespace and address: no clash


@pytest.fixture
def split_pair(short_tmp: str) -> Iterator[tuple[netns.Network, dict[str, subprocess.Popen[bytes]],
                                                 Curve]]:
    curve = Curve.generate(os.path.join(short_tmp, "keys"), workers=["nobody"])
    with netns.network(["pa", "pb"]) as net:
        procs: dict[str, subprocess.Popen[bytes]] = {}
        try:
            for name, role, other in (("pa", "primary", "pb"), ("pb", "backup", "pa")):
                env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
                env.update(PYTHONPATH=REPO, BERTH_ROOT=os.path.join(short_tmp, name, "root"),
                           BERTH_RUN=os.path.join(short_tmp, name, "run"))
                log = open(os.path.join(short_tmp, f"{name}.log"), "ab")  # noqa: SIM115
                procs[name] = net[name].popen(
                    [sys.executable, "-m", "berth", "broker", "--bind",
                     f"tcp://{net[name].address}:{PORT}", "--role", role, "--peer",
                     f"tcp://{net[other].address}:{PORT + 3}", *curve.broker_args()],
                    env, stdout=subprocess.DEVNULL, stderr=log)
                log.close()
            yield net, procs, curve
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                proc.wait(10)


def _state(net: netns.Network, curve: Curve, name: str) -> str | None:
    try:
        with Client(f"tcp://{net[name].address}:{PORT}", timeout=0.5, retries=0,
                    curve=curve.client_keys()) as c:
            return str(c.ping()["pair"])
    except BerthError:
        return None


def _partition(net: netns.Network, heal: bool = False) -> None:
    other = net["pb"].address
    for chain, side in (("INPUT", "-s"), ("OUTPUT", "-d")):
        done = net["pa"].run(["iptables", "-D" if heal else "-I", chain, side, other,
                              "-j", "DROP"])
        assert done.returncode == 0, done.stderr


def test_a_partitioned_backup_stays_passive_until_a_client_asks_it(
        split_pair: tuple[netns.Network, dict[str, subprocess.Popen[bytes]], Curve]) -> None:
    net, procs, curve = split_pair
    wait_until(lambda: (_state(net, curve, "pa"), _state(net, curve, "pb"))
               == ("active", "passive"), 60, what="the pair settled over tcp")
    _partition(net)
    both = (f"tcp://{net['pa'].address}:{PORT},tcp://{net['pb'].address}:{PORT}")
    with Client(both, timeout=1.5, retries=0, curve=curve.client_keys()) as c:
        for _ in range(3):  # served by the primary: held for a worker, then unavailable
            with pytest.raises(Unavailable, match="waited for one"):
                c.ps()
    assert _state(net, curve, "pb") == "passive", "the backup took over with its primary alive"
    assert _state(net, curve, "pa") == "active"

    # A client that reaches only the backup makes it take over: split brain.
    with Client(f"tcp://{net['pb'].address}:{PORT}", timeout=1.5, retries=0,
                curve=curve.client_keys()) as only_b:
        with pytest.raises(Unavailable) as err:
            only_b.ps()
        assert not isinstance(err.value, Passive)
    assert (_state(net, curve, "pa"), _state(net, curve, "pb")) == ("active", "active")

    # Healed, each sees the other active: both stop rather than go on as two.
    _partition(net, heal=True)
    for proc in procs.values():
        assert proc.wait(30) == 1
