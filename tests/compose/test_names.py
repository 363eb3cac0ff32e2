"""Service names on a real stack's network: a web service reaches ``db`` by its
service name and by its alias (busybox ``nc``; its ``ping`` needs CAP_NET_RAW), two
replicas answer to one name, ``berth run --network-alias`` names a container, and a
member that goes is dropped from the others' /etc/hosts while one that comes is added."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

from tests.e2e.conftest import Engine
from tests.helpers import wait_until
from tests.networks.conftest import claimed_subnet

SERVE = ("mkdir -p /tmp/www && echo {what}-$(hostname) > /tmp/www/index.html "
         "&& exec httpd -f -p {port} -h /tmp/www")
STACK = """
services:
  db:
    image: {rootfs}
    command: [sh, -c, '{db}']
    networks:
      back:
        aliases: [database]
  api:
    image: {rootfs}
    command: [sh, -c, '{api}']
    deploy: {{replicas: 2}}
    networks: [back]
  web:
    image: {rootfs}
    command: [sleep, '300']
    depends_on: [db, api]
    networks: [back]
networks:
  back:
    ipam: {{config: [{{subnet: {subnet}}}]}}
"""


def _compose(engine: Engine, path: str, project: str, *args: str
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "berth", "compose", "-f", path, "-p", project,
                           *args], env=engine.env, capture_output=True, text=True,
                          timeout=120, check=False)


def _in(engine: Engine, name: str, script: str) -> str:
    done = engine.cli("exec", name, "sh", "-c", script)
    return done.stdout if done.returncode == 0 else ""


def _id(engine: Engine, name: str) -> str:
    with engine.client() as c:
        return str(c.inspect(name)["id"])[:12]


def _get(engine: Engine, name: str, host: str, port: int) -> str:
    """An HTTP GET with busybox nc from container ``name`` ("" until it answers)."""
    return _in(engine, name, f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 5 nc {host} {port}"
                             " | tail -n 1")


def test_services_reach_each_other_by_service_name_alias_and_replica(up: Engine) -> None:
    project = "r" + uuid.uuid4().hex[:8]
    path = os.path.join(up.root, "names.yaml")
    os.makedirs(up.root, exist_ok=True)
    with claimed_subnet("10.95") as subnet:
        with open(path, "w") as f:
            f.write(STACK.format(rootfs=up.rootfs, subnet=subnet,
                                 db=SERVE.format(what="db", port=5432),
                                 api=SERVE.format(what="api", port=80)))
        done = _compose(up, path, project, "up", "-d")
        assert done.returncode == 0, done.stderr
        web = f"{project}-web-1"
        ids = {n: _id(up, f"{project}-{n}") for n in ("db-1", "api-1", "api-2")}
        # by the service's name and by its alias, as a client in another service asks
        for host in ("db", "database", f"{project}-db-1"):
            answer = wait_until(lambda h=host: _get(up, web, h, 5432), 30, interval=0.2,
                                what=f"web reaching {host}:5432")
            assert answer.strip() == f"db-{ids['db-1']}"
        # two replicas behind one name: each is on a line with it, the name answers
        hosts = _in(up, web, "cat /etc/hosts")
        assert len([ln for ln in hosts.splitlines() if ln.split()[-1:] == ["api"]]) == 2, hosts
        answer = wait_until(lambda: _get(up, web, "api", 80), 30, interval=0.2,
                            what="web reaching api:80")
        assert answer.strip() in {f"api-{ids['api-1']}", f"api-{ids['api-2']}"}
        for n in ("api-1", "api-2"):
            assert _get(up, web, f"{project}-{n}", 80).strip() == f"api-{ids[n]}"
        # a container that comes with --network-alias is named at once; one that goes
        # is dropped from every other member's file
        extra = f"{project}-extra"
        ran = up.cli("run", "-d", "--name", extra, "--network", f"{project}_back",
                     "--network-alias", "cache", "--network-alias", "kv.local", up.rootfs,
                     "sh", "-c", SERVE.format(what="cache", port=6379))
        assert ran.returncode == 0, ran.stderr
        cache_id = _id(up, extra)
        for host in ("cache", "kv.local"):
            answer = wait_until(lambda h=host: _get(up, web, h, 6379), 30, interval=0.2,
                                what=f"web reaching {host}")
            assert answer.strip() == f"cache-{cache_id}"
        assert up.cli("rm", "-f", extra).returncode == 0
        assert "cache" not in _in(up, web, "cat /etc/hosts")
        assert _compose(up, path, project, "down").returncode == 0


def test_network_alias_is_refused_where_nobody_resolves_it(up: Engine) -> None:
    for args, words in ((("--network", "none", "--network-alias", "x"), "needs a user network"),
                        (("--network-alias", "bad name"), "invalid network alias")):
        done = up.cli("run", "-d", "--name", "c" + uuid.uuid4().hex[:8], *args, up.rootfs,
                      "true")
        assert done.returncode == 125 and words in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


PLAIN = """
services:
  db:
    image: {rootfs}
    command: [sh, -c, '{db}']
  web:
    image: {rootfs}
    command: [sleep, '300']
    depends_on: [db]
"""


def test_a_file_without_networks_gets_a_project_network_made_and_removed_with_it(
        up: Engine) -> None:
    """No ``networks:`` key anywhere: ``up`` makes PROJECT_default on a subnet no route
    of the host has (another engine's bridge, the host's own), web reaches db by its
    name; a second ``up`` keeps the network; ``down`` removes it, bridge and all."""
    from engine.networks.rules import routes_of
    from tests.networks.conftest import network_left_behind

    project = "d" + uuid.uuid4().hex[:8]
    path = os.path.join(up.root, "plain.yaml")
    os.makedirs(up.root, exist_ok=True)
    with open(path, "w") as f:
        f.write(PLAIN.format(rootfs=up.rootfs, db=SERVE.format(what="db", port=5432)))
    with open("/proc/net/route") as f:
        before = [r for r in routes_of(f.read()) if r.prefixlen > 0]
    network = f"{project}_default"
    try:
        done = _compose(up, path, project, "up", "-d")
        assert done.returncode == 0, done.stderr
        with up.client() as c:
            made = c.network_inspect(network)
        import ipaddress
        subnet = ipaddress.ip_network(made["subnet"])
        assert not [r for r in before if r.overlaps(subnet)], (subnet, before)
        db = _id(up, f"{project}-db-1")
        answer = wait_until(lambda: _get(up, f"{project}-web-1", "db", 5432), 30,
                            interval=0.2, what="web reaching db:5432 by name")
        assert answer.strip() == f"db-{db}"
        again = _compose(up, path, project, "up", "-d")
        assert again.returncode == 0, again.stderr
        with up.client() as c:
            assert c.network_inspect(network)["subnet"] == made["subnet"]  # kept
    finally:
        down = _compose(up, path, project, "down")
    assert down.returncode == 0, down.stderr
    with up.client() as c:
        assert network not in {n.get("name") for n in c.networks()}
    assert network_left_behind(network) == []


def test_container_name_is_the_containers_name_and_a_name_on_the_network(up: Engine) -> None:
    """``container_name``: the container is called so, others reach it by it and by its
    service's name, a second ``up`` leaves it alone, ``down`` removes it."""
    project = "n" + uuid.uuid4().hex[:8]
    custom = f"{project}-the-db"
    path = os.path.join(up.root, "named.yaml")
    os.makedirs(up.root, exist_ok=True)
    with open(path, "w") as f:
        f.write(PLAIN.format(rootfs=up.rootfs, db=SERVE.format(what="db", port=5432))
                .replace("  db:\n", f"  db:\n    container_name: {custom}\n"))
    try:
        done = _compose(up, path, project, "up", "-d")
        assert done.returncode == 0, done.stderr
        db = _id(up, custom)
        for host in ("db", custom):
            answer = wait_until(lambda h=host: _get(up, f"{project}-web-1", h, 5432), 30,
                                interval=0.2, what=f"web reaching {host}")
            assert answer.strip() == f"db-{db}"
        again = _compose(up, path, project, "up", "-d")
        assert again.returncode == 0 and "created" not in again.stderr, again.stderr
        assert _id(up, custom) == db
        ps = _compose(up, path, project, "ps")
        assert custom in ps.stdout, ps.stdout
    finally:
        down = _compose(up, path, project, "down")
    assert down.returncode == 0, down.stderr
    with up.client() as c:
        assert not [r for r in c.ps(all=True) if r["name"] == custom
                    and r["state"] != "removed"]


def test_extra_hosts_and_dns_in_a_stack_and_on_berth_run(up: Engine) -> None:
    """``extra_hosts`` are lines of the container's /etc/hosts (kept when the network's
    members change and the file is rewritten), ``dns`` its nameservers; ``berth run
    --add-host/--dns`` the same; a bad one is one sentence, exit 125, nothing made."""
    project = "e" + uuid.uuid4().hex[:8]
    path = os.path.join(up.root, "hosts.yaml")
    os.makedirs(up.root, exist_ok=True)
    with open(path, "w") as f:
        f.write(PLAIN.format(rootfs=up.rootfs, db=SERVE.format(what="db", port=5432))
                + "    extra_hosts: ['legacy.example:192.0.2.10', 'other=192.0.2.11']\n"
                  "    dns: 192.0.2.53\n")
    try:
        done = _compose(up, path, project, "up", "-d")
        assert done.returncode == 0, done.stderr
        web = f"{project}-web-1"
        # db joined first, web after: web's file was written with db in it, and db's
        # was rewritten when web came; each keeps its own lines
        hosts = _in(up, web, "cat /etc/hosts")
        assert "192.0.2.10\tlegacy.example" in hosts and "192.0.2.11\tother" in hosts, hosts
        extra = up.cli("run", "-d", "--name", f"{project}-x", "--network",
                       f"{project}_default", up.rootfs, "sleep", "300")
        assert extra.returncode == 0, extra.stderr
        hosts = wait_until(lambda: (h := _in(up, web, "cat /etc/hosts")) and
                           f"{project}-x" in h and h, 10, what="web's hosts rewritten")
        assert "192.0.2.10\tlegacy.example" in hosts
        resolv = _in(up, web, "cat /etc/resolv.conf")
        assert [ln for ln in resolv.splitlines() if ln.startswith("nameserver")] == [
            "nameserver 192.0.2.53"], resolv
        assert "legacy" not in _in(up, f"{project}-db-1", "cat /etc/hosts")
        ran = up.cli("run", "--rm", "--network", "none", "--add-host", "a.b:192.0.2.1",
                     "--dns", "192.0.2.2", up.rootfs, "sh", "-c",
                     "cat /etc/hosts /etc/resolv.conf")
        assert ran.returncode == 0 and "192.0.2.1\ta.b" in ran.stdout, ran
        assert "nameserver 192.0.2.2" in ran.stdout
        bad = up.cli("run", "-d", "--name", f"{project}-bad", "--add-host", "nope",
                     up.rootfs, "true")
        assert bad.returncode == 125 and "invalid extra host" in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
        assert up.cli("rm", "-f", f"{project}-x").returncode == 0
    finally:
        down = _compose(up, path, project, "down")
    assert down.returncode == 0, down.stderr


def test_sysctls_and_domainname_in_a_stack_and_on_berth_run(up: Engine) -> None:
    """``sysctls`` of the container's own network namespace are set in it (the host's
    stays as it was), ``domainname`` is its NIS domain; a host sysctl, or a net.* one
    with ``--network host``, is one sentence, exit 125."""
    key = "/proc/sys/net/ipv4/ip_unprivileged_port_start"
    with open(key) as f:
        host_before = f.read()
    project = "s" + uuid.uuid4().hex[:8]
    path = os.path.join(up.root, "sysctl.yaml")
    os.makedirs(up.root, exist_ok=True)
    with open(path, "w") as f:
        f.write(PLAIN.format(rootfs=up.rootfs, db=SERVE.format(what="db", port=5432))
                + "    sysctls: {net.ipv4.ip_unprivileged_port_start: 80}\n"
                  "    domainname: corp.example\n")
    try:
        done = _compose(up, path, project, "up", "-d")
        assert done.returncode == 0, done.stderr
        web = f"{project}-web-1"
        assert _in(up, web, f"cat {key} /proc/sys/kernel/domainname").split() == [
            "80", "corp.example"]
        with open(key) as f:
            assert f.read() == host_before
        ran = up.cli("run", "--rm", "--network", "none", "--sysctl",
                     "net.ipv4.ping_group_range=0 0", up.rootfs, "cat",
                     "/proc/sys/net/ipv4/ping_group_range")
        assert ran.returncode == 0 and ran.stdout.split() == ["0", "0"], ran
        for args, words in ((("--sysctl", "kernel.hostname=x"), "invalid sysctl"),
                            (("--network", "host", "--sysctl", "net.ipv4.ip_forward=1"),
                             "not with --network host")):
            bad = up.cli("run", "-d", "--name", f"{project}-bad", *args, up.rootfs, "true")
            assert bad.returncode == 125 and words in bad.stderr, bad.stderr
            assert len(bad.stderr.strip().splitlines()) == 1
    finally:
        down = _compose(up, path, project, "down")
    assert down.returncode == 0, down.stderr
