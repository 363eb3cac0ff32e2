"""Containers joining one network at once: the CNI ADDs run in parallel (only a
configuration's first ADD runs alone) and the members' /etc/hosts are rewritten in
batches, so these tests check what that must not break: distinct addresses, every
member naming every other, connectivity, and nothing left after they go.

Real CNI plugins, real namespaces; the subnets come from 10.94.0.0/16."""

from __future__ import annotations

import itertools
import json
import os
import secrets
import subprocess
import threading
import time
import tracemalloc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import pytest

from engine.errors import NotFound
from engine.networks import rules as nw
from engine.networks.setup import (
    NetworkSetup,
    _Batch,
    make_netns,
    remove_bridge,
    remove_netns,
    remove_network_rules,
)
from tests.e2e.conftest import Engine
from tests.helpers import wait_until
from tests.networks.conftest import claimed_subnet
from tests.networks.test_networks import HTTPD, _cid, _leftovers, _ok, _veths_on

_counter = itertools.count()


@pytest.fixture
def fresh_network(short_tmp: str) -> Iterator[tuple[NetworkSetup, nw.Network]]:
    """A network whose bridge does not exist yet, and a NetworkSetup for it with
    addresses kept in the test's own directory."""
    name = f"cj{os.getpid()}x{next(_counter)}"
    with claimed_subnet("10.94") as subnet:
        gateway = subnet.rsplit(".", 1)[0] + ".1"
        net = nw.Network(name, subnet, gateway, nw.bridge_for(name))

        def lookup(wanted: str) -> nw.Network:
            if wanted != name:
                raise NotFound(f"no such network: {wanted}")
            return net

        setup = NetworkSetup(os.path.join(short_tmp, "runtime"), lookup,
                             ipam_dir=os.path.join(short_tmp, "ipam"))
        try:
            yield setup, net
        finally:
            for cid in setup.attached():
                setup.leave(cid)
            remove_bridge(net.bridge)
            remove_network_rules(net)


def _join_at_once(setup: NetworkSetup, net: nw.Network, ids: list[str]) -> dict[str, str]:
    """Every container joins in its own thread, released together; cid -> address."""
    gate = threading.Barrier(len(ids))

    def join(cid: str) -> str:
        gate.wait(30)
        joined = setup.join(cid, name=f"m{cid[:6]}", hostname=cid[:12], requested=net.name,
                            ports=())
        assert joined.attachment is not None
        return joined.attachment.ip

    with ThreadPoolExecutor(len(ids)) as pool:
        return dict(zip(ids, pool.map(join, ids), strict=True))


def _hosts_names(setup: NetworkSetup, cid: str) -> dict[str, str]:
    """The other members an /etc/hosts names: name -> address."""
    with open(os.path.join(setup.dir_of(cid), "hosts")) as f:
        lines = [line.split() for line in f.read().splitlines()]
    return {words[1]: words[0] for words in lines[3:]}


def _rules_of(network: str) -> list[str]:
    """The iptables rules (nat and filter) that name the network."""
    text = subprocess.run(["iptables-save"], capture_output=True, text=True,
                          check=True).stdout
    return sorted(line for line in text.splitlines() if f'"berth network {network}"' in line)


def _addresses_held(ipam_dir: str, ids: list[str]) -> list[str]:
    found = []
    for root, _dirs, files in os.walk(ipam_dir):
        for name in files:
            with open(os.path.join(root, name)) as f:
                text = f.read()
            found += [f"{name} held by {cid[:12]}" for cid in ids if cid in text]
    return found


def test_containers_joining_at_once_get_distinct_addresses_and_name_each_other(
        fresh_network: tuple[NetworkSetup, nw.Network], busybox_rootfs: str) -> None:
    setup, net = fresh_network
    ids = [secrets.token_hex(32) for _ in range(10)]
    ips = _join_at_once(setup, net, ids)
    assert len(set(ips.values())) == len(ids)
    prefix = net.subnet.rsplit(".", 1)[0] + "."
    assert all(ip.startswith(prefix) and ip != net.gateway for ip in ips.values())
    # Ten first ADDs at once made the network's rules once: no rule twice.
    rules = _rules_of(net.name)
    assert len(rules) == len(nw.network_rules(net)) == len(set(rules)), rules
    for cid in ids:
        expected = {f"m{o[:6]}": ips[o] for o in ids if o != cid}
        assert _hosts_names(setup, cid) == expected, f"/etc/hosts of {cid[:12]}"
    # Each namespace reaches the next one's address over the bridge.
    busybox = os.path.join(busybox_rootfs, "bin", "busybox")
    for cid, nxt in zip(ids, ids[1:] + ids[:1], strict=True):
        done = subprocess.run(["nsenter", f"--net={setup.netns_path(cid)}", busybox, "ping",
                               "-c", "1", "-W", "5", ips[nxt]], capture_output=True,
                              text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    # Half leave at once: the rest name exactly the rest.
    going, staying = ids[:5], ids[5:]
    with ThreadPoolExecutor(len(going)) as pool:
        assert list(pool.map(setup.leave, going)) == [[]] * len(going)
    for cid in staying:
        assert _hosts_names(setup, cid) == {f"m{o[:6]}": ips[o] for o in staying if o != cid}
    with ThreadPoolExecutor(len(staying)) as pool:
        assert list(pool.map(setup.leave, staying)) == [[]] * len(staying)
    # Nothing left: no state, no address, no rule, no veth.
    assert setup.attached() == []
    assert _addresses_held(setup.ipam_dir, ids) == []
    saved = subprocess.run(["iptables-save"], capture_output=True, text=True,
                           check=True).stdout
    assert [cid[:12] for cid in ids if cid in saved] == []
    assert _veths_on(net.bridge) == []


def test_a_member_leaving_while_others_join_is_dropped_from_every_hosts_file(
        fresh_network: tuple[NetworkSetup, nw.Network]) -> None:
    setup, net = fresh_network
    first = secrets.token_hex(32)
    _join_at_once(setup, net, [first])
    later = [secrets.token_hex(32) for _ in range(4)]
    with ThreadPoolExecutor(2) as pool:
        left = pool.submit(setup.leave, first)
        ips = pool.submit(_join_at_once, setup, net, later).result()
        assert left.result() == []
    for cid in later:
        assert _hosts_names(setup, cid) == {f"m{o[:6]}": ips[o] for o in later if o != cid}


def _pages_from(up: Engine, me: str, others: list[str], wanted: list[str]) -> bool:
    """Whether ``me`` gets each other's page by its name (httpd may still start)."""
    script = "; ".join(f"timeout 5 wget -q -O - http://{n}/ || echo no-{n}" for n in others)
    return _ok(up.cli("exec", me, "sh", "-c", script)).split() == wanted


def test_a_member_reaches_a_host_that_knows_no_route_back_through_the_masquerade(
        fresh_network: tuple[NetworkSetup, nw.Network], short_tmp: str,
        busybox_rootfs: str) -> None:
    """An "outside" namespace linked to the host by a veth, with no route to the
    network's subnet: its answers come back only if the host masqueraded the member."""
    setup, net = fresh_network
    busybox = os.path.join(busybox_rootfs, "bin", "busybox")
    cid = secrets.token_hex(32)
    _join_at_once(setup, net, [cid])
    outside = os.path.join(short_tmp, "outside")
    host_end, far_end = f"vh{os.getpid() % 100000}x{next(_counter)}", "eth0"
    with claimed_subnet("10.94") as link:
        near, far = link.rsplit(".", 1)[0] + ".1", link.rsplit(".", 1)[0] + ".2"
        make_netns(outside)
        holder = subprocess.Popen(["nsenter", f"--net={outside}", "sleep", "120"])
        try:
            for argv in (["ip", "link", "add", host_end, "type", "veth", "peer", "name",
                          f"{host_end}p"],
                         ["ip", "link", "set", f"{host_end}p", "netns", str(holder.pid)],
                         ["ip", "addr", "add", f"{near}/24", "dev", host_end],
                         ["ip", "link", "set", host_end, "up"],
                         ["nsenter", f"--net={outside}", "ip", "link", "set", f"{host_end}p",
                          "name", far_end],
                         ["nsenter", f"--net={outside}", "ip", "addr", "add", f"{far}/24",
                          "dev", far_end],
                         ["nsenter", f"--net={outside}", "ip", "link", "set", far_end, "up"]):
                subprocess.run(argv, capture_output=True, check=True)

            def ping() -> subprocess.CompletedProcess[str]:
                return subprocess.run(["nsenter", f"--net={setup.netns_path(cid)}", busybox,
                                       "ping", "-c", "1", "-W", "3", far],
                                      capture_output=True, text=True, check=False)

            done = ping()
            assert done.returncode == 0, done.stdout + done.stderr
            masquerade = nw.network_rules(net)[1]
            subprocess.run(["iptables", "-w", "-t", "nat", "-D", masquerade.chain,
                            *masquerade.spec], check=True)
            assert ping().returncode != 0  # the control: unmasqueraded, no answer
        finally:
            holder.kill()
            holder.wait()
            subprocess.run(["ip", "link", "delete", host_end], capture_output=True,
                           check=False)
            remove_netns(outside)


def test_a_bridge_removed_behind_its_back_has_its_rules_made_again(
        fresh_network: tuple[NetworkSetup, nw.Network]) -> None:
    setup, net = fresh_network
    first = secrets.token_hex(32)
    _join_at_once(setup, net, [first])
    assert setup.leave(first) == []
    # What another berth root's `network rm` of the same network does.
    remove_bridge(net.bridge)
    remove_network_rules(net)
    assert _rules_of(net.name) == []
    _join_at_once(setup, net, [secrets.token_hex(32)])
    assert len(_rules_of(net.name)) == len(nw.network_rules(net))


def test_run_at_once_on_a_user_network_reach_each_other_by_name(up: Engine) -> None:
    name = f"cj{os.getpid()}e{next(_counter)}"
    with claimed_subnet("10.94") as subnet:
        _ok(up.cli("network", "create", "--subnet", subnet, name))
        try:
            names = [f"web{i}" for i in range(5)]
            with ThreadPoolExecutor(len(names)) as pool:
                runs = list(pool.map(lambda n: up.cli("run", "-d", "--network", name,
                                                      "--name", n, up.rootfs, "sh", "-c",
                                                      HTTPD), names))
            for done in runs:
                _ok(done)
            ids = {n: _cid(up, n) for n in names}
            inspect = json.loads(_ok(up.cli("network", "inspect", name)))
            assert len({c["ip"] for c in inspect["containers"]}) == len(names)
            for me in names:
                others = [n for n in names if n != me]
                wanted = [f"hello-from-{ids[n][:12]}" for n in others]
                wait_until(partial(_pages_from, up, me, others, wanted), 30, interval=0.2,
                           what=f"{me} reaching the others by name")
            _ok(up.cli("rm", "-f", *names))
            for n in names:
                assert _leftovers(up, ids[n]) == [], n
            assert _veths_on(nw.bridge_for(name)) == []
            assert len(_rules_of(name)) == 4  # the network's, while it exists
            _ok(up.cli("network", "rm", name))
            assert _rules_of(name) == []
        finally:
            up.cli("rm", "-f", *[f"web{i}" for i in range(5)])
            up.cli("network", "rm", name)
            remove_bridge(nw.bridge_for(name))


def test_make_netns_makes_a_new_namespace_and_leaves_the_process_in_its_own(
        short_tmp: str, busybox_rootfs: str) -> None:
    before = os.stat("/proc/thread-self/ns/net").st_ino
    paths = [os.path.join(short_tmp, f"ns{i}") for i in range(3)]
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(make_netns, paths))
    try:
        inodes = {os.stat(p).st_ino for p in paths}
        assert len(inodes) == 3 and before not in inodes
        assert os.stat("/proc/thread-self/ns/net").st_ino == before
        assert os.stat("/proc/self/ns/net").st_ino == before
        make_netns(paths[0])  # already there: kept
        assert os.stat(paths[0]).st_ino in inodes
        busybox = os.path.join(busybox_rootfs, "bin", "busybox")
        links = subprocess.run(["nsenter", f"--net={paths[1]}", busybox, "ip", "-o", "link"],
                               capture_output=True, text=True, check=True).stdout
        assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"]
    finally:
        for p in paths:
            remove_netns(p)
    assert not any(os.path.exists(p) for p in paths)


def test_batch_serves_every_request_with_a_run_that_began_after_it() -> None:
    version = 0
    seen: list[int] = []
    lock = threading.Lock()
    batch = _Batch()

    def job() -> None:
        with lock:
            at_start = version
        time.sleep(0.01)  # a job that takes a while, so requests pile up meanwhile
        seen.append(at_start)

    def ask(_: int) -> None:
        nonlocal version
        with lock:
            version += 1
            mine = version
        batch.run(job)
        assert seen and max(seen) >= mine  # a run saw this request's change

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(ask, range(48)))
    assert 1 <= len(seen) < 48  # batched: fewer runs than requests


def test_batch_after_a_failed_run_runs_again_for_the_waiters() -> None:
    batch = _Batch()
    runs: list[str] = []

    def failing() -> None:
        runs.append("failed")
        raise OSError("disk full")

    with pytest.raises(OSError):
        batch.run(failing)
    batch.run(lambda: runs.append("ok"))
    assert runs == ["failed", "ok"]  # the failure served nobody


def test_a_members_huge_hosts_file_is_not_read_whole_when_another_joins(
        fresh_network: tuple[NetworkSetup, nw.Network]) -> None:
    # /etc/hosts is the container's to write (a bind mount of the worker's file): a
    # hostile one grew it (here 256 MiB of holes), and the next join's rewrite pass
    # read it whole into the worker's memory to compare it with the new text
    setup, net = fresh_network
    first, second = secrets.token_hex(32), secrets.token_hex(32)
    _join_at_once(setup, net, [first])
    with open(os.path.join(setup.dir_of(first), "hosts"), "r+b") as f:
        f.truncate(256 << 20)
    tracemalloc.start()
    try:
        ips = _join_at_once(setup, net, [second])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20
    assert _hosts_names(setup, first) == {f"m{second[:6]}": ips[second]}
