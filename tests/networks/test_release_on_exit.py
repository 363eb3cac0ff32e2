"""A container's network goes when its process ends and comes back when it starts
again (issue 21, B7), as podman and Docker do: an exited container holds no address,
veth or port forward, so a small network is not used up by containers that ended.
The release is recorded (``container.network_detached``), the new attachment of a
start too, and a worker killed -9 leaves nothing held: recovery releases the network
of a container that exited while no worker watched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator

import pytest

from engine.networks.rules import Network, bridge_for
from engine.networks.setup import remove_network_rules
from tests.e2e.conftest import Engine
from tests.helpers import wait_until
from tests.networks.conftest import _counter, claimed_subnet
from tests.networks.test_networks import _get, _leftovers, _unused_port, _veths_on

HTTPD = "mkdir -p /tmp/www && echo up > /tmp/www/index.html && exec httpd -f -p 80 -h /tmp/www"


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"rc={result.returncode} stderr={result.stderr!r}"
    return result.stdout


def _cid(up: Engine, name: str) -> str:
    return str(json.loads(_ok(up.cli("inspect", name)))[0]["id"])


def _types(up: Engine, cid: str) -> list[str]:
    store = up.store()
    try:
        return [r.type for r in store.read_stream(cid)]
    finally:
        store.close()


@pytest.fixture
def small_network(engine: Engine) -> Iterator[tuple[Engine, str, str]]:
    """A worker process (so it can be killed -9) and a /28 network of the test's own:
    13 addresses for containers."""
    engine.start_worker_process()
    name = f"t{os.getpid()}s{next(_counter)}"
    with claimed_subnet() as subnet24:
        subnet = subnet24.replace("/24", "/28")
        _ok(engine.cli("network", "create", "--subnet", subnet, name))
        try:
            yield engine, name, subnet
        finally:
            for row in json.loads(engine.cli("ps", "-a", "--format", "json").stdout or "[]"):
                engine.cli("rm", "-f", row["id"])
            engine.cli("network", "rm", name)
            subprocess.run(["ip", "link", "delete", bridge_for(name)], capture_output=True,
                           check=False)
            remove_network_rules(Network(name, subnet, "", bridge_for(name)))


def test_exited_containers_hold_no_address_and_get_one_again_on_start(
        small_network: tuple[Engine, str, str]) -> None:
    up, net, subnet = small_network
    prefix = subnet.rsplit(".", 1)[0] + "."
    for i in range(16):  # more than the 13 addresses a /28 has for containers
        _ok(up.cli("run", "-d", "--network", net, "--name", f"c{i}", up.rootfs, "true"))
        _ok(up.cli("wait", f"c{i}"))
    cid = _cid(up, "c0")
    wait_until(lambda: _leftovers(up, cid) == [], 10, what="c0's network released")
    assert wait_until(lambda: _veths_on(bridge_for(net)) == [], 10, what="no veth left")
    types = _types(up, cid)
    assert types[-2:] == ["container.exited", "container.network_detached"], types
    assert json.loads(_ok(up.cli("network", "inspect", net)))["containers"] == []
    # started again: an address on the network again, recorded as such
    port = _unused_port()
    _ok(up.cli("run", "-d", "--network", net, "--name", "web", "-p", f"{port}:80",
               up.rootfs, "sh", "-c", HTTPD))
    web = _cid(up, "web")
    assert "up" in wait_until(lambda: _get(port), 30, interval=0.1, what="httpd")
    _ok(up.cli("stop", "-t", "1", "web"))
    wait_until(lambda: _leftovers(up, web) == [], 10, what="web's network released")
    assert _get(port) == ""  # no forward left to a container that is not there
    assert _ok(up.cli("port", "web")) == ""
    _ok(up.cli("start", "web"))
    assert "up" in wait_until(lambda: _get(port), 30, interval=0.1, what="httpd again")
    assert _ok(up.cli("port", "web")).strip() == f"80/tcp -> 0.0.0.0:{port}"
    inside = _ok(up.cli("exec", "web", "ip", "-4", "-o", "addr", "show", "eth0"))
    assert prefix in inside, inside
    member = json.loads(_ok(up.cli("network", "inspect", net)))["containers"]
    assert [m["name"] for m in member] == ["web"] and member[0]["ip"].startswith(prefix)
    types = _types(up, web)
    assert types.count("container.network_attached") == 2
    assert types.count("container.network_detached") == 1


def test_a_restart_policy_takes_the_network_again(
        small_network: tuple[Engine, str, str]) -> None:
    up, net, subnet = small_network
    prefix = subnet.rsplit(".", 1)[0] + "."
    _ok(up.cli("run", "-d", "--network", net, "--name", "again", "--restart",
               "on-failure:2", up.rootfs, "sh", "-c",
               "ip -4 -o addr show eth0 | grep -q ' inet " + prefix + "' || exit 3; "
               "sleep 0.3; exit 1"))
    cid = _cid(up, "again")

    def settled() -> bool:
        row = json.loads(_ok(up.cli("inspect", "again")))[0]
        return bool(row["state"] == "exited" and row["restart_count"] == 2)

    wait_until(settled, 60, interval=0.2, what="two restarts, then exited")
    assert json.loads(_ok(up.cli("inspect", "again")))[0]["exit_code"] == 1  # never 3
    types = _types(up, cid)
    assert types.count("container.network_attached") == 3
    assert types.count("container.network_detached") == 3
    wait_until(lambda: _leftovers(up, cid) == [], 10, what="its network released")


def test_an_exit_while_the_worker_is_down_releases_the_network_at_recovery(
        small_network: tuple[Engine, str, str]) -> None:
    up, net, _subnet = small_network
    _ok(up.cli("run", "-d", "--network", net, "--name", "late", up.rootfs, "sleep", "2"))
    cid = _cid(up, "late")
    assert up.worker_proc is not None
    up.worker_proc.send_signal(signal.SIGKILL)
    up.worker_proc.wait(30)
    exit_file = os.path.join(up.run, "runtime", "exits", cid)
    wait_until(lambda: os.path.exists(exit_file), 30, what="the container's exit")
    assert _leftovers(up, cid), "nothing held while the worker was down: proves nothing"
    up.start_worker_process()  # recovery records the exit and releases
    wait_until(lambda: _leftovers(up, cid) == [], 10, what="released at recovery")
    types = _types(up, cid)
    assert types[-2:] == ["container.exited", "container.network_detached"], types
