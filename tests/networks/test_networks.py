"""Real container networks through the CNI plugins: a published port reached from the
host, containers reaching each other by name on a user network, ``--network none``
with only ``lo``, ``network rm`` refused while a container is attached, and nothing
left behind (veth, address, iptables rule, namespace) after ``rm``, after a failed
create, and after a worker killed -9 in the middle of a create."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess

from bus.client import Client
from engine.errors import BerthError
from engine.networks.rules import bridge_for
from engine.networks.setup import DEFAULT_IPAM_DIR
from tests.e2e.conftest import Engine
from tests.helpers import wait_until

HTTPD = ("mkdir -p /tmp/www && echo hello-from-$(hostname) > /tmp/www/index.html "
         "&& exec httpd -f -p 80 -h /tmp/www")


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"rc={result.returncode} stderr={result.stderr!r}"
    return result.stdout


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int) -> str:
    """A plain HTTP GET to 127.0.0.1:port; "" while nothing answers."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
            chunks = []
            while data := s.recv(4096):
                chunks.append(data)
        return b"".join(chunks).decode(errors="replace")
    except OSError:
        return ""


def _cid(up: Engine, name: str) -> str:
    return str(json.loads(_ok(up.cli("inspect", name)))[0]["id"])


def _leftovers(up: Engine, cid: str) -> list[str]:
    """Whatever of the container's network is still on the host."""
    found = []
    if os.path.exists(os.path.join(up.run, "runtime", "net", cid)):
        found.append("its network directory (namespace, record)")
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True,
                           check=True).stdout
    if cid in rules:
        found.append("iptables rules naming it")
    for root, _dirs, files in os.walk(DEFAULT_IPAM_DIR):
        for name in files:
            try:
                with open(os.path.join(root, name)) as f:
                    if cid in f.read():
                        found.append(f"address {name} in {root}")
            except OSError:
                pass
    return found


def _veths_on(bridge: str) -> list[str]:
    path = f"/sys/class/net/{bridge}/brif"
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def test_published_port_reaches_httpd_from_the_host(up: Engine) -> None:
    port = _unused_port()
    _ok(up.cli("run", "-d", "--name", "web", "-p", f"{port}:80", up.rootfs,
               "sh", "-c", HTTPD))
    cid = _cid(up, "web")
    answer = wait_until(lambda: _get(port), 30, interval=0.1, what="httpd via the port")
    assert "200 OK" in answer.splitlines()[0]
    assert f"hello-from-{cid[:12]}" in answer
    # The attachment is in the log: an address of the default network and the port.
    store = up.store()
    try:
        attached = [r.event for r in store.read_stream(cid)
                    if r.type == "container.network_attached"]
    finally:
        store.close()
    assert len(attached) == 1
    event = attached[0]
    assert event.network == "berth" and event.gateway == "10.89.0.1"
    assert event.addresses[0].startswith("10.89.0.")
    assert [tuple(p) for p in event.ports] == [("", port, 80, "tcp")]
    # The default network's /etc files make sense.
    out = _ok(up.cli("exec", "web", "cat", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf"))
    assert out.startswith(cid[:12] + "\n")
    assert f"{event.addresses[0].split('/')[0]}\t{cid[:12]} web" in out
    assert "nameserver 127." not in out and "nameserver" in out
    _ok(up.cli("rm", "-f", "web"))
    assert _leftovers(up, cid) == []
    assert wait_until(lambda: not _get(port), 10, what="the port closed after rm")


def test_containers_on_a_user_network_reach_each_other_by_name(
        up: Engine, user_network: tuple[str, str]) -> None:
    net, subnet = user_network
    prefix = subnet.rsplit(".", 1)[0] + "."
    _ok(up.cli("run", "-d", "--network", net, "--name", "srv", up.rootfs, "sh", "-c", HTTPD))
    _ok(up.cli("run", "-d", "--network", net, "--name", "cli", up.rootfs, "sleep", "300"))
    srv = _cid(up, "srv")
    # (busybox wget's -T crashes this static build: bounded by timeout(1) instead.)
    page = wait_until(lambda: _ok(up.cli("exec", "cli", "sh", "-c",
                                         "timeout 5 wget -q -O - http://srv/ || true")),
                      30, interval=0.2, what="cli reaching srv by name")
    assert page.strip() == f"hello-from-{srv[:12]}"
    hosts = _ok(up.cli("exec", "srv", "cat", "/etc/hosts"))
    assert "\tcli " in hosts and prefix in hosts  # srv learnt of cli, which came later
    inspect = json.loads(_ok(up.cli("network", "inspect", net)))
    assert inspect["subnet"] == subnet
    assert sorted(c["name"] for c in inspect["containers"]) == ["cli", "srv"]
    assert all(c["ip"].startswith(prefix) for c in inspect["containers"])
    # A member that leaves is dropped from the others' /etc/hosts.
    _ok(up.cli("rm", "-f", "srv"))
    assert "srv" not in _ok(up.cli("exec", "cli", "cat", "/etc/hosts"))
    assert _leftovers(up, srv) == []
    assert len(_veths_on(bridge_for(net))) == 1  # only cli's


def test_network_none_has_only_loopback(up: Engine) -> None:
    out = _ok(up.cli("run", "--rm", "--network", "none", up.rootfs, "cat", "/proc/net/dev"))
    names = sorted(line.split(":")[0].strip() for line in out.splitlines() if ":" in line)
    assert names == ["lo"]
    out = _ok(up.cli("run", "--rm", up.rootfs, "cat", "/proc/net/dev"))
    names = sorted(line.split(":")[0].strip() for line in out.splitlines() if ":" in line)
    assert names == ["eth0", "lo"]  # the default network, for contrast


def test_network_rm_is_refused_while_a_container_is_attached(
        up: Engine, user_network: tuple[str, str]) -> None:
    net, _subnet = user_network
    _ok(up.cli("create", "--network", net, "--name", "held", up.rootfs, "true"))
    refused = up.cli("network", "rm", net)
    assert refused.returncode != 0
    assert "attached" in refused.stderr and refused.stderr.count("\n") == 1
    assert net in _ok(up.cli("network", "ls"))
    _ok(up.cli("rm", "held"))
    _ok(up.cli("network", "rm", net))
    assert net not in _ok(up.cli("network", "ls"))
    assert not os.path.exists(f"/sys/class/net/{bridge_for(net)}")
    assert not os.path.exists(os.path.join(DEFAULT_IPAM_DIR, f"berth-{net}"))
    # The log holds both facts on the network's own stream.
    store = up.store()
    try:
        types = [r.type for r in store.read_stream(f"network:{net}")]
    finally:
        store.close()
    assert types == ["network.created", "network.removed"]


def test_bad_network_input_is_refused_with_nothing_written(up: Engine) -> None:
    for args, words in ((("network", "create", "--subnet", "10.90.0.0/33", "bad1"), "subnet"),
                        (("network", "create", "--subnet", "10.89.0.0/24", "bad2"), "overlaps"),
                        (("network", "create", "no/slash"), "invalid network name"),
                        (("network", "rm", "berth"), "built in"),
                        (("run", "--network", "missing0", up.rootfs, "true"), "no such network")):
        result = up.cli(*args)
        assert result.returncode != 0 and words in result.stderr, (args, result.stderr)
    assert [n["name"] for n in map(json.loads, _ok(up.cli(
        "network", "ls", "--format", "json")).splitlines())] == ["berth"]
    assert os.listdir(os.path.join(up.run, "runtime", "net")) == []


def test_failed_create_leaves_no_network(up: Engine, user_network: tuple[str, str]) -> None:
    net, _ = user_network
    taken = socket.socket()
    taken.bind(("0.0.0.0", 0))
    taken.listen(1)
    try:
        port = taken.getsockname()[1]
        result = up.cli("run", "-d", "--network", net, "-p", f"{port}:80", up.rootfs,
                        "sleep", "30")
    finally:
        taken.close()
    assert result.returncode != 0 and "port" in result.stderr
    assert os.listdir(os.path.join(up.run, "runtime", "net")) == []
    assert _veths_on(bridge_for(net)) == []  # a user network's bridge is the test's own


def _answers(client: Client) -> bool:
    try:
        client.ps()
        return True
    except BerthError:
        return False


def test_worker_killed_mid_create_leaves_nothing_after_restart(engine: Engine) -> None:
    up = engine
    proc = up.start_armed_worker("container.create.network_added")
    try:
        client = up.client(timeout=1, retries=0)
        wait_until(lambda: _answers(client), 30, what="the armed worker answering")
        command = client.command("container.create", "doomed", None,
                                 {"rootfs": up.rootfs, "args": ["sleep", "30"],
                                  "network": "", "name": "doomed"})
        try:
            client.request(command, reply_timeout=30)
        except Exception:  # noqa: BLE001 (the worker dies under it: no reply)
            pass
        wait_until(lambda: proc.poll() is not None, 60, what="the worker's crash point")
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    netdir = os.path.join(up.run, "runtime", "net")
    half = os.listdir(netdir)
    assert len(half) == 1, "the create should have died with its network added"
    cid = half[0]
    assert _leftovers(up, cid), "the crash left nothing to clean: the test proves nothing"
    up.start_worker_process()  # reconciles before it takes commands
    assert _leftovers(up, cid) == []
    # The broker may hand the create to the new worker (no lost command): that makes
    # a container with a new id; the one that died half-made is gone for good.
    assert cid not in os.listdir(netdir)
    assert up.cli("inspect", cid).returncode != 0


def test_publish_all_puts_exposed_ports_on_free_host_ports(up: Engine) -> None:
    fixed = _unused_port()
    _ok(up.cli("run", "-d", "--name", "all", "-P", "--expose", "80", "--expose", "81/udp",
               "--expose", "82", "-p", f"{fixed}:82", up.rootfs, "sh", "-c", HTTPD))
    lines = sorted(_ok(up.cli("port", "all")).splitlines())
    assert len(lines) == 3, lines
    assert lines[2] == f"82/tcp -> 0.0.0.0:{fixed}"  # -p wins over -P for its port
    assert lines[1].startswith("81/udp -> 0.0.0.0:")
    assert lines[0].startswith("80/tcp -> 0.0.0.0:")
    port = int(lines[0].rsplit(":", 1)[1])
    assert port not in (fixed, 80)
    answer = wait_until(lambda: _get(port), 30, interval=0.1, what="httpd via the -P port")
    assert "hello-from-" in answer
    bad = up.cli("run", "--expose", "70000", up.rootfs, "true")
    assert bad.returncode != 0 and "invalid exposed port" in bad.stderr


def test_inspect_format_reads_docker_names_and_berths(
        up: Engine, user_network: tuple[str, str]) -> None:
    """``inspect --format`` reads Docker's shape (State.Status, State.Pid,
    Config.Image, NetworkSettings) as well as berth's own keys (.State, .Pid)."""
    net, subnet = user_network
    _ok(up.cli("run", "-d", "--network", net, "--name", "fmt", up.rootfs, "sleep", "300"))
    shown = _ok(up.cli("inspect", "--format", "{{.State.Status}} {{.State}} {{.State.Pid}} "
                       "{{.Pid}} {{.Config.Image}}|{{.HostConfig.NetworkMode}}", "fmt")).split()
    assert shown[0] == shown[1] == "running" and shown[2] == shown[3] and int(shown[2]) > 0
    assert shown[4] == f"{up.rootfs}|{net}"
    nets = json.loads(_ok(up.cli("inspect", "--format", "{{json .NetworkSettings.Networks}}",
                                 "fmt")))
    assert list(nets) == [net]
    assert nets[net]["IPAddress"].startswith(subnet.rsplit(".", 1)[0] + ".")
    assert up.cli("inspect", "--format", "{{.State.Nope}}", "fmt").stdout.strip() == "<no value>"
    _ok(up.cli("stop", "-t", "1", "fmt"))
    assert _ok(up.cli("inspect", "--format", "{{.State.Status}}:{{.State}}", "fmt")).strip() \
        == "exited:exited"
