"""The pure network rules (engine.networks.rules) and the CNI invocation protocol
(engine.networks.cni) with plugins that are real executables recording what the
runtime gave them."""

from __future__ import annotations

import json
import os
import stat

import pytest

from engine.containers.spec import PortMapping, RunSpec, check_aliases
from engine.errors import AlreadyExists, InvalidArgument, NotFound, Refused
from engine.networks import rules as nw
from engine.networks.cni import CNI, Invocation, PluginError


def test_plan_network_takes_a_free_subnet_and_its_first_address() -> None:
    existing = {"berth": nw.DEFAULT}
    net = nw.plan_network("web", None, None, existing, nw.free_subnet(existing.values()))
    assert (net.subnet, net.gateway) == ("10.89.1.0/24", "10.89.1.1")
    assert net.bridge.startswith("bn-") and len(net.bridge) <= 15
    assert net.bridge == nw.bridge_for("web") != nw.bridge_for("web2")
    custom = nw.plan_network("db", "10.90.7.0/24", "10.90.7.254", existing)
    assert custom.gateway == "10.90.7.254"


ROUTE_TABLE = (
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
    "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
    "bn-x\t0001590A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
    "vpn0\t0000590A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
    "garbage line\n"
)


def test_a_free_subnet_avoids_the_hosts_routes_but_not_its_default_route() -> None:
    """Another engine's bridge on 10.89.1.0/24 (a route of the host, not a network of
    this engine) is not taken again; the default route (0.0.0.0/0) blocks nothing."""
    routes = nw.routes_of(ROUTE_TABLE)
    assert [str(r) for r in routes] == ["0.0.0.0/0", "10.89.1.0/24", "10.89.0.0/16"]
    assert nw.free_subnet([nw.DEFAULT], routes[:2]) == "10.89.2.0/24"
    assert nw.free_subnet([], routes) is None  # all of 10.89/16 routed elsewhere
    assert nw.free_subnet([], routes[:1]) == "10.89.1.0/24"


@pytest.mark.parametrize(("name", "subnet", "gateway", "error", "words"), [
    ("berth", None, None, AlreadyExists, "already exists"),
    ("a/b", "10.90.1.0/24", None, InvalidArgument, "invalid network name"),
    ("none", "10.90.1.0/24", None, InvalidArgument, "network mode"),
    ("x", "10.90.1.1/24", None, InvalidArgument, "host bits"),
    ("x", "fd00::/64", None, InvalidArgument, "IPv4"),
    ("x", "10.89.0.0/16", None, Refused, "overlaps"),
    ("x", "10.90.1.0/24", "10.90.2.1", InvalidArgument, "not a host address"),
    ("x", "10.90.1.0/24", "10.90.1.255", InvalidArgument, "not a host address"),
    ("x", "10.90.1.0/24", "nope", InvalidArgument, "invalid gateway"),
])
def test_plan_network_refuses_bad_input(name: str, subnet: str | None, gateway: str | None,
                                        error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        nw.plan_network(name, subnet, gateway, {"berth": nw.DEFAULT})


def test_removal_rules() -> None:
    net = nw.Network("n", "10.90.1.0/24", "10.90.1.1", nw.bridge_for("n"))
    assert nw.check_removable("n", {"n": net}, []) == net
    with pytest.raises(Refused, match="1 container"):
        nw.check_removable("n", {"n": net}, ["c" * 64])
    with pytest.raises(Refused, match="built in"):
        nw.check_removable("berth", {"n": net}, [])
    with pytest.raises(NotFound):
        nw.check_removable("gone", {"n": net}, [])


def test_conflist_chains_bridge_portmap_with_host_wide_ipam() -> None:
    conf = nw.conflist(nw.DEFAULT, "/run/berth-ipam")
    assert [p["type"] for p in conf["plugins"]] == ["bridge", "portmap"]
    bridge = conf["plugins"][0]
    assert bridge["bridge"] == "berth0" and bridge["isGateway"]
    assert bridge["ipMasq"] is False  # the network's rules masquerade, once for all
    assert bridge["ipam"]["dataDir"] == "/run/berth-ipam"
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.89.0.0/24", "gateway": "10.89.0.1"}]]
    assert conf["plugins"][1]["capabilities"] == {"portMappings": True}
    assert conf["plugins"][1]["snat"] is True
    bare = nw.conflist(nw.DEFAULT, "/run/berth-ipam", ports=False)  # nothing published
    assert [p["type"] for p in bare["plugins"]] == ["bridge"]
    assert nw.port_mappings([PortMapping("", 8080, 80, "tcp"),
                             PortMapping("127.0.0.1", 53, 53, "udp")]) == [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 53, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"}]


def test_check_leaves_portmap_out_only_for_ipv4_only_containers() -> None:
    conf = nw.conflist(nw.DEFAULT, "/d")
    v4 = {"ips": [{"address": "10.89.0.5/24"}]}
    v6 = {"ips": [{"address": "10.89.0.5/24"}, {"address": "fd00::5/64"}]}
    assert [p["type"] for p in nw.for_check(conf, v4)["plugins"]] == ["bridge"]
    assert len(nw.for_check(conf, v6)["plugins"]) == 2
    old = {**conf, "plugins": [*conf["plugins"], {"type": "firewall"}]}  # an older record's
    assert [p["type"] for p in nw.for_check(old, v4)["plugins"]] == ["bridge", "firewall"]


def test_network_rules_leave_the_subnet_alone_then_masquerade_and_forward_it() -> None:
    net = nw.Network("web", "10.94.7.0/24", "10.94.7.1", nw.bridge_for("web"))
    rules = nw.network_rules(net)
    tag = ("-m", "comment", "--comment", "berth network web")
    assert [(r.table, r.chain, r.first) for r in rules] == [
        ("nat", "POSTROUTING", False), ("nat", "POSTROUTING", False),
        ("filter", "FORWARD", True), ("filter", "FORWARD", True)]
    assert rules[0].spec == ("-s", "10.94.7.0/24", "-d", "10.94.7.0/24", *tag, "-j", "RETURN")
    assert rules[1].spec == ("-s", "10.94.7.0/24", "!", "-d", "224.0.0.0/4", *tag,
                             "-j", "MASQUERADE")
    assert rules[2].spec == ("-d", "10.94.7.0/24", "-m", "conntrack", "--ctstate",
                             "RELATED,ESTABLISHED", *tag, "-j", "ACCEPT")
    assert rules[3].spec == ("-s", "10.94.7.0/24", *tag, "-j", "ACCEPT")
    assert nw.network_rules(nw.DEFAULT)[0].spec[1] == "10.89.0.0/24"


RESULT = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "berth0", "mac": "aa:aa:aa:aa:aa:aa"},
                   {"name": "veth1", "mac": "bb:bb:bb:bb:bb:bb"},
                   {"name": "eth0", "mac": "cc:cc:cc:cc:cc:cc", "sandbox": "/run/netns/x"}],
    "ips": [{"interface": 2, "address": "10.89.0.7/24", "gateway": "10.89.0.1"}],
}


def test_attachment_from_a_cni_result() -> None:
    att = nw.attachment_from_result("berth", RESULT, [PortMapping("", 1, 2, "tcp")])
    assert att == nw.Attachment("berth", "eth0", ("10.89.0.7/24",), "10.89.0.1",
                                "cc:cc:cc:cc:cc:cc", (PortMapping("", 1, 2, "tcp"),))
    assert att.ip == "10.89.0.7"
    assert nw.Attachment.from_data(att.to_data()) == att
    event = nw.attached_event(att)
    assert event.addresses == att.addresses and event.ports == att.ports
    with pytest.raises(InvalidArgument, match="no address"):
        nw.attachment_from_result("berth", {"interfaces": [], "ips": []}, [])


def test_hosts_file_names_self_and_other_members() -> None:
    me = nw.Member("a" * 64, "web", "web", "10.90.1.2", ("site",))
    other = nw.Member("b" * 64, "db", "dbhost", "10.90.1.3", ("database", "db"))
    text = nw.hosts_file(me, "web", [me, other])
    assert text.splitlines() == [
        "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
        "10.90.1.2\tweb site", f"10.90.1.3\tdb dbhost {'b' * 12} database"]
    alone = nw.hosts_file(None, "box")
    assert alone.splitlines()[-1] == "127.0.1.1\tbox"


def test_hosts_file_spreads_the_replicas_of_a_name_over_its_readers() -> None:
    """Replicas share their service's name: each reader lists them in an order of its
    own (a client takes the first address), stable while the membership stands, and a
    word that is not a host name (a forged line) never gets in."""
    replicas = [nw.Member(f"{n:064x}", f"p-api-{n}", f"h{n}", f"10.90.1.{n}", ("api",))
                for n in range(1, 5)]
    firsts = set()
    for reader in range(100, 140):
        me = nw.Member(f"{reader:064x}", f"c{reader}", f"c{reader}", f"10.90.2.{reader}")
        text = nw.hosts_file(me, me.hostname, [me, *replicas])
        assert text == nw.hosts_file(me, me.hostname, [*reversed(replicas), me])
        lines = [line for line in text.splitlines() if line.endswith(" api")]
        assert len(lines) == 4
        firsts.add(lines[0].split("\t")[0])
    assert len(firsts) == 4  # every replica is some reader's first
    bad = nw.Member("c" * 64, "x", "x", "10.90.1.9", ("ok", "evil\n1.2.3.4 bank"))
    assert nw.hosts_file(None, "box", [bad]).splitlines()[-1] == f"10.90.1.9\tx {'c' * 12} ok"


def test_resolv_conf_drops_loopback_nameservers() -> None:
    host = "search example.org\nnameserver 127.0.0.53\nnameserver 10.0.0.2\noptions ndots:1\n"
    assert nw.resolv_conf(host) == "search example.org\nnameserver 10.0.0.2\noptions ndots:1\n"
    assert nw.resolv_conf("nameserver 127.0.0.53\n") == \
        "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
    assert "127.0.0.53" in nw.resolv_conf(host, keep_loopback=True)


def test_run_spec_network_is_checked_and_stored() -> None:
    spec = RunSpec.from_data({"rootfs": "/r", "args": ["true"], "network": "web"})
    assert spec.network == "web" and spec.to_data()["network"] == "web"
    assert RunSpec.from_data({"rootfs": "/r", "args": ["true"]}).network == ""
    with pytest.raises(InvalidArgument, match="network name"):
        nw.check_reference("bad/name")
    assert nw.check_reference("none") == "none"
    assert nw.effective("", "berth") == "berth" and nw.effective("none", "x") == "none"


def test_network_aliases_are_host_names_on_a_user_network() -> None:
    spec = RunSpec.from_data({"rootfs": "/r", "args": ["true"], "network": "web",
                              "network_aliases": ["db", "pg.local"]})
    assert spec.network_aliases == ("db", "pg.local")
    assert spec.to_data()["network_aliases"] == ["db", "pg.local"]
    assert "network_aliases" not in RunSpec.from_data(
        {"rootfs": "/r", "args": ["true"]}).to_data()  # earlier records stay as they were
    check_aliases(("db",), "")  # the node's default may be a user network
    for aliases, network, words in (
            (("bad name",), "web", "invalid network alias 'bad name'"),
            (("evil\n1.2.3.4",), "web", "invalid network alias"),
            (("-x",), "web", "invalid network alias"),
            (("db",), "none", "needs a user network"),
            (("db",), "berth", "needs a user network"),
            (tuple(f"a{n}" for n in range(65)), "web", "too many network aliases")):
        with pytest.raises(InvalidArgument, match=words):
            check_aliases(aliases, network)
    with pytest.raises(InvalidArgument, match="network_aliases"):
        RunSpec.from_data({"rootfs": "/r", "args": ["true"], "network_aliases": "db"})


# -- the CNI protocol, with recording plugins -------------------------------------------

PLUGIN = """#!/bin/sh
# records its environment and stdin, then answers as a CNI plugin would
conf=$(cat)
echo "$CNI_COMMAND $CNI_CONTAINERID $CNI_NETNS $CNI_IFNAME $CNI_PATH" >> "{log}"
echo "$conf" >> "{log}"
{fail}
if [ "$CNI_COMMAND" = ADD ]; then
  echo '{{"cniVersion":"1.0.0","ips":[{{"address":"10.0.0.{n}/24"}}]}}'
fi
"""


def _plugins(tmp: str, fail: str = "") -> str:
    log = os.path.join(tmp, "log")
    for n, name in enumerate(("one", "two"), start=1):
        path = os.path.join(tmp, name)
        with open(path, "w") as f:
            f.write(PLUGIN.format(log=log, n=n, fail=fail if name == "two" else ""))
        os.chmod(path, stat.S_IRWXU)
    return log


def _calls(log: str) -> list[tuple[list[str], dict[str, object]]]:
    with open(log) as f:
        lines = f.read().splitlines()
    return [(lines[i].split(), json.loads(lines[i + 1])) for i in range(0, len(lines), 2)]


LIST = {"cniVersion": "1.0.0", "name": "net",
        "plugins": [{"type": "one", "capabilities": {"portMappings": True}}, {"type": "two"}]}
CALL = Invocation("c1", "/run/ns", "eth0", {"portMappings": [{"hostPort": 1}]})


def test_add_chains_prev_results_del_runs_in_reverse(tmp_path: object) -> None:
    tmp = str(tmp_path)
    log = _plugins(tmp)
    cni = CNI(tmp)
    result = cni.add(LIST, CALL)
    assert result["ips"] == [{"address": "10.0.0.2/24"}]
    (env1, conf1), (env2, conf2) = _calls(log)
    assert env1 == ["ADD", "c1", "/run/ns", "eth0", tmp]
    assert conf1["name"] == "net" and conf1["cniVersion"] == "1.0.0"
    assert "prevResult" not in conf1
    assert conf1["runtimeConfig"] == {"portMappings": [{"hostPort": 1}]}
    assert conf2["prevResult"]["ips"] == [{"address": "10.0.0.1/24"}]  # type: ignore[index]
    assert "runtimeConfig" not in conf2  # it declares no capability
    os.unlink(log)
    assert cni.delete(LIST, CALL, result) == []
    calls = _calls(log)
    assert [c[0][0] for c in calls] == ["DEL", "DEL"]
    assert [c[1]["type"] for c in calls] == ["two", "one"]
    assert all(c[1]["prevResult"] == result for c in calls)
    os.unlink(log)
    cni.check(LIST, CALL, result)
    assert [(c[0][0], c[1]["type"]) for c in _calls(log)] == [("CHECK", "one"),
                                                              ("CHECK", "two")]


def test_a_plugin_error_is_read_from_its_json(tmp_path: object) -> None:
    tmp = str(tmp_path)
    _plugins(tmp, fail="""echo '{"cniVersion":"1.0.0","code":11,"msg":"no luck","details":"d"}'
exit 1""")
    with pytest.raises(PluginError, match=r"two ADD failed \(code 11\): no luck: d"):
        CNI(tmp).add(LIST, CALL)
    errors = CNI(tmp).delete(LIST, CALL, None)  # every plugin is tried, errors returned
    assert len(errors) == 1 and "no luck" in errors[0]
    with pytest.raises(PluginError, match="not found"):
        CNI(tmp).add({**LIST, "plugins": [{"type": "missing"}]}, CALL)


def test_extra_hosts_and_dns_servers_are_checked_and_written() -> None:
    from engine.networks.names import parse_add_host, parse_dns

    assert parse_add_host("db.local:10.0.0.5") == ("db.local", "10.0.0.5")
    assert parse_add_host("v6=[::1]") == ("v6", "::1")
    assert parse_add_host("v6:fe80::1") == ("v6", "fe80::1")
    for bad in ("nocolon", "a b:1.2.3.4", "x:host-gateway", ":1.2.3.4", "x:1.2.3.4\n", 5):
        with pytest.raises(InvalidArgument, match="invalid extra host"):
            parse_add_host(bad)
    assert parse_dns("9.9.9.9") == "9.9.9.9"
    with pytest.raises(InvalidArgument, match="invalid DNS server"):
        parse_dns("dns.example")
    me = nw.Member("c" * 64, "web", "web", "10.89.1.2", (), (("db.local", "10.0.0.5"),))
    lines = nw.hosts_file(me, "web").splitlines()
    assert lines[2] == "10.0.0.5\tdb.local" and lines[3].startswith("10.89.1.2\t")
    assert "1.1.1.1\tx" in nw.hosts_file(None, "h", extra=[("x", "1.1.1.1")])
    host = "nameserver 192.0.2.53\nsearch corp.example\noptions ndots:2\n"
    assert nw.resolv_conf(host, dns=["9.9.9.9", "1.1.1.1"]) == (
        "nameserver 9.9.9.9\nnameserver 1.1.1.1\nsearch corp.example\noptions ndots:2\n")
    assert nw.resolv_conf(host) == host
