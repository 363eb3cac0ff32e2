"""The Compose file read into the normalised stack, and the pure plan (no engine)."""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.compose import model, source
from engine.compose.checks import check_stack
from engine.compose.plan import Action, Observed, again, command_id, parse_name, plan
from engine.errors import InvalidArgument
from tests.budget import examples


def stack(text: str, project: str = "proj", base: str = "/srv/app",
          environ: dict[str, str] | None = None) -> dict[str, Any]:
    return model.normalise(source.load(text.encode(), where="compose.yaml"),
                           project=project, base_dir=base, environ=environ or {})


GOOD = """
services:
  db:
    image: ./rootfs
    command: ["sleep", "100"]
    environment: {A: 1, B: true, C: null}
    volumes: ["data:/var/lib/db", "./conf:/etc/conf:ro"]
    deploy: {resources: {limits: {memory: 64m, pids: 50}}}
  web:
    x-berth-rootfs: /opt/rootfs
    command: sleep 100
    environment: ["X=1", "Y="]
    ports: ["8080:80"]
    labels: {tier: front}
    depends_on: {db: {condition: service_started}}
    deploy: {replicas: 3}
volumes:
  data:
"""


def test_normalised_stack() -> None:
    s = stack(GOOD)
    db, web = s["services"]["db"], s["services"]["web"]
    assert s["name"] == "proj" and s["volumes"] == ["data"] and s["networks"] == {"default": ""}
    assert db["options"]["rootfs"] == "/srv/app/rootfs"
    assert db["options"]["env"] == ["A=1", "B=true"]  # C: null is the unset environment C
    assert db["options"]["volumes"] == ["proj_data:/var/lib/db", "/srv/app/conf:/etc/conf:ro"]
    assert db["options"]["memory"] == 64 * 1024 * 1024 and db["options"]["pids_limit"] == 50
    assert web["options"]["args"] == ["sleep", "100"] and web["replicas"] == 3
    assert web["options"]["env"] == ["X=1", "Y="] and web["depends_on"] == {
        "db": "service_started"}
    assert model.order(s) == ["db", "web"]
    assert model.digest(s) == model.digest(stack(GOOD)) != model.digest(stack(GOOD, "other"))
    opts = model.run_options(s, "web", 2)
    assert opts["labels"] == {"com.docker.compose.container-number": "2",
                              "com.docker.compose.config-hash": model.config_hash(s, "web"),
                              "com.docker.compose.project": "proj",
                              "com.docker.compose.service": "web", "tier": "front"}


def test_image_reference_and_env_file(tmp_path: Any) -> None:
    (tmp_path / "vars.env").write_text("# comment\nA=from-file\nB=2\n")
    s = stack("services:\n  a:\n    image: docker.io/library/busybox\n"
              "    env_file: vars.env\n    environment: {B: 3}\n", base=str(tmp_path))
    assert s["services"]["a"]["options"]["image"] == "docker.io/library/busybox"
    assert s["services"]["a"]["options"]["rootfs"] == ""
    assert s["services"]["a"]["options"]["env"] == ["A=from-file", "B=3"]


@pytest.mark.parametrize("name,expected", [("My App", "myapp"), ("_x.y-Z", "xy-z")])
def test_project_name(name: str, expected: str) -> None:
    assert model.project_name(name) == expected


def test_networks_with_a_subnet() -> None:
    s = stack("services:\n  a:\n    image: ./r\n    command: [x]\nnetworks:\n  front:\n"
              "  back: {ipam: {config: [{subnet: 10.91.3.0/24}]}}\n")
    assert s["networks"] == {"back": "10.91.3.0/24", "default": "", "front": ""}
    with pytest.raises(model.Unsupported) as err:
        stack("services:\n  a:\n    image: ./r\n    command: [x]\nnetworks:\n"
              "  n: {driver: macvlan, ipam: {driver: x}}\n")
    assert err.value.lines == ["networks.n.driver: not supported",
                               "networks.n.ipam: only config: [{subnet: CIDR}] is supported"]


def test_unsupported_keys_one_line_each() -> None:
    with pytest.raises(model.Unsupported) as err:
        stack("services:\n  a:\n    image: ./r\n    command: [x]\n    devices: [x]\n"
              "    privileged: true\n    deploy: {placement: {}}\nmodels: {}\n")
    assert err.value.lines == ["models: top-level key not supported",
                               "services.a.devices: not supported",
                               "services.a.privileged: not supported",
                               "services.a.deploy.placement: not supported"]
    assert err.value.exit_code == 125


def test_keys_of_options_the_spec_lacks_are_unsupported_until_it_has_them() -> None:
    """restart, healthcheck and networks map to run spec options other parts add: each
    is refused by name while the spec lacks them, carried once it has them."""
    from engine.compose.model import SPEC_MAPPING, _spec_fields

    text = ("services:\n  a:\n    image: ./r\n    command: [x]\n    restart: always\n"
            "    healthcheck: {test: [CMD, 'true'], interval: 1s, retries: 2}\n"
            "    networks: [back]\nnetworks:\n  back:\n")
    have = _spec_fields()
    lacking = [k for k, (needs, _) in SPEC_MAPPING.items() if not set(needs) <= have]
    if lacking:
        with pytest.raises(model.Unsupported) as err:
            stack(text)
        assert [line.split(":")[0] for line in err.value.lines] == [
            f"services.a.{k}" for k in lacking]
        assert all("not supported by this engine yet" in line for line in err.value.lines)
    else:
        opts = stack(text)["services"]["a"]["options"]
        assert opts["restart"] == "always" and opts["health_cmd"] == ["true"]
        assert opts["health_interval"] == 1.0 and opts["network"] == "proj_back"


@pytest.mark.parametrize("text,words", [
    ("services: [a]", "services"),
    ("services:\n  a: 3\n", "must be a mapping"),
    ("services:\n  a:\n    image: ./r\n", "needs a command"),
    ("services:\n  a:\n    command: [x]\n", "needs an image"),
    ("services:\n  a:\n    image: ./r\n    command: {x: 1}\n", "list of strings"),
    ("services:\n  a:\n    image: ./r\n    command: [x]\n    environment: 3\n", "mapping"),
    ("services:\n  a:\n    image: ./r\n    command: [x]\n    volumes: ['nope:/x']\n",
     "not declared"),
    ("services:\n  a:\n    image: ./r\n    command: [x]\n    deploy: {replicas: -1}\n",
     "non-negative"),
    ("services:\n  a:\n    image: ./r\n    command: [x]\n    depends_on: [b]\n", "no service"),
    ("services:\n  a:\n    image: ./r\n    command: [x]\n    depends_on: {a: {condition: x}}\n",
     "condition"),
    ("services:\n  a:\n    image: ./r\n    command: [x]\n    depends_on: [b]\n"
     "  b:\n    image: ./r\n    command: [x]\n    depends_on: [a]\n", "cycle"),
    ("services:\n  Bad Name:\n    image: ./r\n", "invalid service name"),
    ("services:\n  a:\n    image: ./r\n    command: [x]\n    networks: [nope]\n",
     "not declared"),
    ("services:\n  a:\n    image: ./r\n    command: [x]\nnetworks: [a]\n", "mapping"),
    ("services:\n  a:\n    image: ./r\n    command: [x]\nnetworks:\n  n: 3\n", "mapping"),
    ("a: [unclosed", "not valid YAML"),
    ("- a\n- b\n", "mapping"),
    ("x: !!python/object:os.system {}\n", "not valid YAML"),
])
def test_bad_input_is_one_sentence(text: str, words: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        stack(text)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_nul_huge_and_non_utf8_files_are_refused() -> None:
    for raw, words in ((b"services:\0\n", "NUL"),
                       (b"#" * (source.MAX_FILE_BYTES + 1), "larger than"),
                       (b"services: \xff\n", "UTF-8")):
        with pytest.raises(InvalidArgument, match=words):
            source.load(raw, where="f")


def _s(replicas: dict[str, int], deps: dict[str, dict[str, str]] | None = None
       ) -> dict[str, Any]:
    return {"name": "p", "volumes": [], "services": {
        n: {"replicas": r, "depends_on": (deps or {}).get(n, {}), "labels": {}, "options": {}}
        for n, r in replicas.items()}}


def test_plan_creates_in_dependency_order_and_waits() -> None:
    acts = plan(_s({"web": 2, "db": 1}, {"web": {"db": "service_started"}}), [])
    assert [(a.kind, a.container or a.service) for a in acts] == [
        ("create", "p-db-1"), ("start", "p-db-1"), ("wait", "db"),
        ("create", "p-web-1"), ("start", "p-web-1"),
        ("create", "p-web-2"), ("start", "p-web-2")]


HASH = model.config_hash(_s({"x": 1}), "x")
"""Every service of ``_s`` has the same (empty) options and labels."""


def test_plan_converged_is_empty_and_scale_down_removes_extras() -> None:
    running = [Observed(f"p-web-{n}", f"id{n}", "running", config_hash=HASH) for n in (1, 2, 3)]
    assert plan(_s({"web": 3}), running) == []
    acts = plan(_s({"web": 1}), running + [Observed("p-gone-1", "g", "running"),
                                            Observed("other-web-1", "o", "running")])
    assert acts == [Action("remove", "gone", 1, "p-gone-1"),
                    Action("remove", "web", 3, "p-web-3"), Action("remove", "web", 2, "p-web-2")]


def test_plan_restarts_stopped_replicas_but_not_completed_one_shots() -> None:
    s = _s({"init": 1, "web": 1}, {"web": {"init": "service_completed_successfully"}})
    seen = [Observed("p-init-1", "i", "exited", config_hash=HASH),
            Observed("p-web-1", "w", "exited", config_hash=HASH)]
    assert plan(s, seen) == [Action("wait", "init", condition="service_completed_successfully"),
                             Action("start", "web", 1, "p-web-1")]


def test_command_ids_are_deterministic() -> None:
    a = Action("create", "web", 1, "p-web-1")
    first = command_id("p", "sha256:x", a, "")
    assert first == command_id("p", "sha256:x", a, "")
    assert first != command_id("p", "sha256:y", a, "") != command_id("p", "sha256:x", a, "t")
    assert again(first) == again(first) != first
    uuid.UUID(first)


def test_parse_name() -> None:
    assert parse_name("p", "p-web-12") == ("web", 12)
    assert parse_name("p", "p-my-svc-1") == ("my-svc", 1)
    assert parse_name("p", "q-web-1") is None and parse_name("p", "p-web-0") is None


def test_paths_are_relative_to_the_file_not_the_cwd(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Any) -> None:
    monkeypatch.chdir(tmp_path)
    s = stack("services:\n  a:\n    image: ../r\n    command: [x]\n", base="/srv/app")
    assert s["services"]["a"]["options"]["rootfs"] == "/srv/r"


def test_stack_apply_is_checked_before_anything_is_recorded(tmp_path: Any) -> None:
    from engine.parsing import parse

    (tmp_path / "rootfs").mkdir()
    (tmp_path / "conf").mkdir()
    s = stack(GOOD.replace("/opt/rootfs", "./rootfs"), base=str(tmp_path))
    check_stack(s)
    ok = parse("stack.apply", None, {"project": "proj", "config": s, "digest": model.digest(s)})
    assert ok.digest == model.digest(s)  # type: ignore[union-attr]
    for args, words in (({"project": "Bad Name"}, "invalid project"),
                        ({"project": "other", "config": s, "digest": model.digest(s)},
                         "project named"),
                        ({"project": "proj", "config": s, "digest": "sha256:" + "0" * 64},
                         "not the configuration's"),
                        ({"project": "proj", "config": s, "digest": "md5:x"}, "sha256")):
        with pytest.raises(InvalidArgument, match=words):
            parse("stack.apply", None, args)


SHADOW = ("root:$6$Zq0cWs1l$3kQ9vJ2mX8pL7rT4yU6iO0aS5dF1gH2jK3lZ4xC5vB6nM7qW8eR9tY0uI1oP"
          "2aS3dF4gH5jK6lZ7xC8vB9nM0:19000:0:99999:7:::\n")
"""A line of /etc/shadow: a password hash that must never become a variable's name, be
recorded or be printed."""


@pytest.mark.parametrize("content,line", [
    (SHADOW, 1),
    ("# vars\n\nA=1\n" + SHADOW, 4),
    ("A=1\nnot a name=2\n", 2),
    ("A=1\n=value\n", 2),
    ("A=1\na:b=c\n", 2),
])
def test_env_file_lines_that_are_not_variables_are_refused_by_number(
        tmp_path: Any, content: str, line: int) -> None:
    (tmp_path / "vars.env").write_text(content)
    with pytest.raises(InvalidArgument) as err:
        stack("services:\n  a:\n    image: busybox\n    env_file: vars.env\n",
              base=str(tmp_path))
    message = str(err.value)
    assert message == (f"services.a.env_file: invalid line {line} in env file vars.env: "
                       "use KEY=VALUE with KEY a variable name")
    assert "$6$" not in message and "root" not in message and "name=2" not in message


def test_env_file_format(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """docker compose's: KEY=VALUE (trimmed), # comments, blank lines; a bare KEY is
    taken from the environment of ``berth compose`` (left out if unset), as docker
    compose and podman's --env-file take it."""
    monkeypatch.setenv("FROM_HOST", "h")
    monkeypatch.delenv("NOT_SET", raising=False)
    (tmp_path / "vars.env").write_text(
        "# c\n\n  A = spaced  \nB=a=b\nFROM_HOST\nNOT_SET\nexport_me=1\nC=\n")
    s = stack("services:\n  a:\n    image: busybox\n    env_file: [vars.env, vars.env]\n",
              base=str(tmp_path))
    assert s["services"]["a"]["options"]["env"] == [
        "A=spaced", "B=a=b", "FROM_HOST=h", "export_me=1", "C="]


def test_env_files_are_regular_bounded_files(tmp_path: Any) -> None:
    """A FIFO (which would block for ever), a device, a directory, a file too large or
    holding a NUL, or not UTF-8: one sentence naming the file, never its content."""
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    (tmp_path / "big").write_bytes(b"A=" + b"x" * (1024 * 1024))
    (tmp_path / "nul").write_bytes(b"A=secret\0\n")
    (tmp_path / "latin").write_bytes(b"A=s\xe9cret\n")
    for name, words in (("fifo", "env file fifo is not a regular file"),
                        ("/dev/zero", "env file /dev/zero is not a regular file"),
                        ("dir", "env file dir is not a regular file"),
                        ("big", "env file big is larger than 1048576 bytes"),
                        ("nul", "env file nul holds a NUL byte"),
                        ("latin", "env file latin is not UTF-8"),
                        ("none", "cannot read env file none: No such file or directory")):
        with pytest.raises(InvalidArgument) as err:
            stack(f"services:\n  a:\n    image: busybox\n    env_file: {name}\n",
                  base=str(tmp_path))
        assert str(err.value) == f"services.a.env_file: {words}"


def test_env_files_add_up_to_a_bound(tmp_path: Any) -> None:
    for n in range(5):
        (tmp_path / f"e{n}").write_text("# " + "x" * (1000 * 1000) + "\nA=1\n")
    text = "services:\n" + "".join(
        f"  s{n}:\n    image: busybox\n    env_file: [e{n}, e{n}]\n" for n in range(5))
    with pytest.raises(InvalidArgument, match="env files add up to more than"):
        stack(text, base=str(tmp_path))


@pytest.mark.parametrize("text", [
    "a: " + "[" * 100_000 + "]" * 100_000,
    "a: " + "{a: " * 100_000 + "1" + "}" * 100_000,
    "- " * 100_000 + "x\n",
    "".join("  " * n + f"k{n}:\n" for n in range(100)),
    "a: " + "[" * 65 + "]" * 65,
])
def test_deep_yaml_is_one_sentence(text: str) -> None:
    encoded = text.encode()
    if len(encoded) > source.MAX_FILE_BYTES:
        encoded = encoded[:source.MAX_FILE_BYTES]  # still deep at its start
    with pytest.raises(InvalidArgument) as err:
        source.load(encoded, where="deep.yaml")
    assert str(err.value) in ("deep.yaml: compose file nests deeper than 64 levels",
                              f"deep.yaml: compose file is larger than {source.MAX_FILE_BYTES}"
                              " bytes")


def test_depth_up_to_the_cap_loads() -> None:
    assert source.load(("a: " + "[" * 63 + "]" * 63).encode(), where="f")["a"]


def test_alias_bombs_and_self_containing_aliases_are_refused() -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{n}: &a{n} [" + ", ".join([f"*a{n - 1}"] * 10) + "]" for n in range(1, 9)]
    with pytest.raises(InvalidArgument, match=r"more than 200000 values \(its aliases "
                                              r"expanded\)$"):
        source.load("\n".join(lines).encode(), where="f")
    with pytest.raises(InvalidArgument, match="names a node that contains it"):
        source.load(b"a: &a [1, *a]\n", where="f")
    with pytest.raises(InvalidArgument, match="names a node that contains it"):
        source.load(b"a: &a {b: {c: *a}}\n", where="f")
    # a few aliases, as Compose files use them (x- fragments, merge keys), are fine
    data = source.load(b"x-env: &env {A: 1}\nservices:\n  s: {environment: *env, "
                      b"labels: {<<: *env, B: 2}}\n", where="f")
    assert data["services"]["s"]["labels"] == {"A": 1, "B": 2}


@pytest.mark.parametrize("text,words", [
    ("a: " + "1" * 5000, "out of range"),
    ("a: 0x" + "f" * 5000, "more than 18 digits"),
    ("a: [1, 2, 1000000000000000000]", "more than 18 digits"),
    ("a: 2001-13-45", "out of range"),
    ("a: [secret-token-abc", "not valid YAML at line 2, column 1"),
    ("a: *secret-alias-abc\n", "an anchor or alias is wrong"),
    ("a: !!python/name:os.system secret-tag-abc\n", "a tag or value cannot be built"),
    ("a: b: secret-value-abc\n", "not valid YAML at line 1, column 5"),
])
def test_yaml_refusals_never_quote_the_file(text: str, words: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        source.load(text.encode(), where="f")
    assert words in str(err.value) and "secret" not in str(err.value)
    assert "\n" not in str(err.value) and len(str(err.value)) < 120


def test_a_long_dependency_chain_does_not_recurse() -> None:
    n = 2000  # twice Python's recursion limit
    text = "services:\n" + "".join(
        f"  s{i}:\n    image: busybox\n" + (f"    depends_on: [s{i - 1}]\n" if i else "")
        for i in range(n))
    s = stack(text)
    assert model.order(s) == [f"s{i}" for i in range(n)]
    cyclic = text.replace("  s0:\n    image: busybox\n",
                          f"  s0:\n    image: busybox\n    depends_on: [s{n - 1}]\n")
    with pytest.raises(InvalidArgument, match="dependency cycle"):
        stack(cyclic)


def test_a_replica_count_is_bounded() -> None:
    with pytest.raises(InvalidArgument, match=r"deploy.replicas: at most 1000$"):
        stack("services:\n  a:\n    image: busybox\n    deploy: {replicas: 1000000000}\n")
    assert stack("services:\n  a:\n    image: busybox\n    deploy: {replicas: 1000}\n"
                 )["services"]["a"]["replicas"] == 1000
    many = "services:\n" + "".join(f"  s{n}:\n    image: busybox\n    deploy: {{replicas: "
                                   "1000}\n" for n in range(11))
    with pytest.raises(InvalidArgument, match=r"^services: more than 10000 replicas in all$"):
        stack(many)


def test_per_network_options_are_not_dropped_silently() -> None:
    with pytest.raises(InvalidArgument, match="services.a.networks.n: only aliases"):
        stack("services:\n  a:\n    image: busybox\n    networks: {n: {ipv4_address: x}}\n"
              "networks:\n  n:\n")
    assert stack("services:\n  a:\n    image: busybox\n    networks: {n: }\n"
                 "networks:\n  n:\n")["services"]["a"]["options"]["network"] == "proj_n"


def test_a_service_is_named_on_its_network_by_its_name_and_its_aliases() -> None:
    opts = stack("services:\n  db:\n    image: busybox\n    networks:\n      n:\n"
                 "        aliases: [database, db, pg.local]\nnetworks:\n  n:\n"
                 )["services"]["db"]["options"]
    assert opts["network"] == "proj_n"
    assert opts["network_aliases"] == ["db", "database", "pg.local"]  # once each
    with pytest.raises(InvalidArgument, match="aliases: must be a list of strings"):
        stack("services:\n  db:\n    image: busybox\n    networks:\n      n:\n"
              "        aliases: {a: 1}\nnetworks:\n  n:\n")


def test_long_keys_are_cut_short_in_the_report() -> None:
    with pytest.raises(model.Unsupported) as err:
        stack("services:\n  a:\n    image: busybox\n    " + "k" * 500 + ": 1\n")
    assert err.value.lines == ["services.a." + "k" * 37 + "...: not supported"]


@pytest.mark.parametrize("service,words", [
    ("    environment: ['NOT A NAME=1']\n", "services.a: invalid environment entry"),
    ("    ports: ['99999:80']\n", "invalid port"),
    ("    ports: ['8000-8010:80-90']\n", "invalid port mapping"),
    ("    ports: ['80:80', '80:81']\n", "given twice"),
    ("    ports: ['not-an-ip:80:80']\n", "services.a: invalid host IP 'not-an-ip'"),
    ("    ports: ['::1:80:80']\n", "invalid host IP"),
    ("    deploy: {resources: {limits: {pids: 999999999999}}}\n", "invalid pids limit"),
    ("    hostname: 'no spaces'\n", "services.a: invalid hostname"),
    ("    user: 'x y'\n", "services.a: invalid user"),
    ("    working_dir: relative\n", "must be an absolute path"),
    ("    stop_signal: SIGNOPE\n", "signal"),
    ("    labels: {'': x}\n", "invalid label"),
    ("    volumes: ['./missing:/x']\n", "does not exist on this host"),
    ("    volumes: ['./:relative']\n", "services.a:"),
    ("    volumes: ['data:/x:bogus']\n", "services.a:"),
    ("    deploy: {resources: {limits: {memory: 1k}}}\n", "invalid memory limit"),
    ("    healthcheck: {test: [CMD, x], interval: .inf}\n", "invalid duration"),
    ("    entrypoint: []\n    command: []\n", "services.a:"),
])
def test_a_service_the_engine_would_refuse_is_refused_by_check(
        tmp_path: Any, service: str, words: str) -> None:
    """``check`` is the engine's own create validation (engine.parsing.parse), so
    ``up`` refuses before it records ``stack.applied`` or sends anything."""
    (tmp_path / "rootfs").mkdir()
    text = ("services:\n  ok:\n    image: ./rootfs\n    command: ['true']\n"
            "  a:\n    image: ./rootfs\n    command: ['true']\n" + service
            + "volumes:\n  data:\n")
    with pytest.raises(InvalidArgument) as err:
        check_stack(stack(text, base=str(tmp_path)))
    assert words in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("text,words", [
    ("services:\n  a:\n    image: 'Not/A Reference'\n", "services.a:"),
    ("services:\n  a:\n    x-berth-rootfs: ../../../../../../../..\n    command: [sh]\n",
     "services.a: the root filesystem is the host's own root"),
    ("services:\n  a:\n    image: busybox\nvolumes:\n  " + "v" * 130 + ":\n",
     "invalid volume name"),
    ("services:\n  a:\n    image: busybox\nnetworks:\n  n: {ipam: {config: "
     "[{subnet: 10.0.0.1/24}]}}\n", "invalid subnet"),
    ("services:\n  " + "s" * 60 + ":\n    image: busybox\n", "invalid container name"),
])
def test_images_volumes_networks_and_names_the_engine_would_refuse(text: str,
                                                                    words: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        check_stack(stack(text))
    assert words in str(err.value)


def test_a_project_name_is_bounded_and_a_string() -> None:
    with pytest.raises(InvalidArgument, match="at most 63 characters"):
        stack("services:\n  a:\n    image: busybox\n", project="p" * 64)
    with pytest.raises(InvalidArgument, match="name: must be a string"):
        stack("name: {a: 1}\nservices:\n  a:\n    image: busybox\n")


@pytest.mark.parametrize("mangle", [
    lambda s: {**s, "extra": 1},
    lambda s: {**s, "services": {}},
    lambda s: {**s, "volumes": [3]},
    lambda s: {**s, "networks": {"n": 3}},
    lambda s: {**s, "services": {"a": {**s["services"]["a"], "replicas": 10 ** 6}}},
    lambda s: {**s, "services": {"a": {**s["services"]["a"], "replicas": True}}},
    lambda s: {**s, "services": {"a": {**s["services"]["a"], "depends_on": {"zz": "x"}}}},
    lambda s: {**s, "services": {"a": {**s["services"]["a"], "labels": [1]}}},
    lambda s: {**s, "services": {"a": {**s["services"]["a"], "options": {"env": 5}}}},
    lambda s: {**s, "services": {"a": {**s["services"]["a"], "options": {"volumes": [5]}}}},
    lambda s: {**s, "services": {"a": {**s["services"]["a"], "options": {"ports": [[1]]}}}},
    lambda s: {**s, "services": {"a": {**s["services"]["a"],
                                       "options": {"image": "busybox", "nope": 1}}}},
    lambda s: {**s, "services": {"a": {**s["services"]["a"], "labels": {"k": b"v"}}}},
    lambda s: {**s, "services": {"a": {**s["services"]["a"],
                                       "options": {"image": "busybox", "rootfs": "",
                                                   "env": ["X Y=1"]}}}},
    lambda s: {**s, "services": {"../x": s["services"]["a"]}},
    lambda s: {**s, "name": "P Q"},
])
def test_stack_apply_of_any_shape_is_one_sentence(mangle: Any) -> None:
    """A publisher other than berth compose may send any config: the worker refuses
    what the engine would not carry out, with one sentence (never an internal error)."""
    from engine.parsing import parse

    good = stack("services:\n  a:\n    image: busybox\n")
    bad = mangle(good)
    args = {"project": "proj", "config": bad}
    try:
        args["digest"] = model.digest(bad)
    except (TypeError, ValueError):
        args["digest"] = "sha256:" + "0" * 64
    with pytest.raises(InvalidArgument) as err:
        parse("stack.apply", None, args)
    assert "\n" not in str(err.value)


_KEYS = ["services", "volumes", "networks", "name", "a", "b", "image", "command", "entrypoint",
         "environment", "env_file", "ports", "labels", "depends_on", "deploy", "replicas",
         "resources", "limits", "memory", "pids", "restart", "healthcheck", "test",
         "interval", "retries", "working_dir", "user", "hostname", "stop_signal",
         "read_only", "condition", "ipam", "config", "subnet", "x-berth-rootfs", "disable"]
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10, 10 ** 6),
                     st.floats(allow_nan=True), st.sampled_from(
                         ["busybox", "./r", "a", "b", "1s", "80:80", "A=1", "/x", "x:/y",
                          "service_healthy", "always", "CMD", "", "=", "64m"]))
_YAML_DATA = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(st.sampled_from(_KEYS), st.integers(0, 3)),
                                            inner, max_size=5)),
    max_leaves=30)


@settings(max_examples=examples(400), deadline=None)
@given(services=st.dictionaries(st.sampled_from(["a", "b", "Bad"]), st.one_of(
           st.dictionaries(st.sampled_from(_KEYS), _YAML_DATA, max_size=6), _YAML_DATA),
       max_size=3),
       top=st.dictionaries(st.sampled_from(_KEYS), _YAML_DATA, max_size=3))
def test_any_file_is_a_stack_or_one_sentence(services: dict[str, Any], top: dict[str, Any]
                                             ) -> None:
    """Whatever shapes a file holds, reading it and checking the stack raise nothing but
    InvalidArgument (one line per key for Unsupported): no TypeError, no traceback."""
    data = {**top, "services": services}
    try:
        check_stack(model.normalise(data, project="p", base_dir="/nonexistent"))
    except model.Unsupported:
        pass
    except InvalidArgument as exc:
        assert "\n" not in str(exc)


def test_stop_levels_put_dependants_first_and_a_level_at_once() -> None:
    """down/stop/restart stop a level's services at once, dependants before their
    dependencies; an orphan (a service the file no longer has) goes first."""
    from engine.compose.plan import grace, stop_levels

    s = stack("services:\n  db:\n    image: busybox\n    stop_grace_period: 1m30s\n"
              "  cache:\n    image: busybox\n"
              "  api:\n    image: busybox\n    depends_on: [db, cache]\n"
              "  web:\n    image: busybox\n    depends_on: [api]\n"
              "  worker:\n    image: busybox\n    depends_on: [db]\n")
    assert stop_levels(s, {"db", "cache", "api", "web", "worker", "gone"}) == [
        ["gone", "web"], ["api", "worker"], ["cache", "db"]]
    assert stop_levels(s, {"db", "web"}) == [["web"], ["db"]]
    assert stop_levels(s, set()) == []
    assert grace(s, "db", None) == 90.0 and grace(s, "web", None) == 10.0
    assert grace(s, "db", 0.0) == 0.0 and grace(s, "gone", None) == 10.0
    with pytest.raises(InvalidArgument, match="stop_grace_period: invalid duration"):
        stack("services:\n  a:\n    image: busybox\n    stop_grace_period: soon\n")


def test_common_keys_map_onto_run_options() -> None:
    svc = stack("""
services:
  a:
    image: busybox
    tty: true
    stdin_open: true
    init: false
    cap_add: [NET_ADMIN, CAP_SYS_TIME]
    cap_drop: [ALL]
    expose: ["80", "53/udp"]
    mem_limit: 64m
    cpus: "0.5"
    tmpfs: /run
    ulimits: {nofile: {soft: 1024, hard: 2048}, nproc: 64}
    logging: {driver: json-file, options: {max-size: 10m, max-file: "3"}}
    stop_grace_period: 1m
    depends_on: {b: {condition: service_started, restart: true}}
    ports:
      - "8080:80"
      - {target: 443, published: 8443, host_ip: 127.0.0.1, protocol: tcp, mode: host}
      - {target: 53, protocol: udp}
  b:
    image: busybox
""")["services"]["a"]
    o = svc["options"]
    assert o["terminal"] is True and o["stdin"] is True and "init" not in o
    assert o["cap_add"] == ["CAP_NET_ADMIN", "CAP_SYS_TIME"] and o["cap_drop"] == ["ALL"]
    assert o["expose"] == ["80/tcp", "53/udp"]
    assert o["memory"] == 64 * 1024 * 1024 and o["cpus"] == 0.5
    assert o["tmpfs"] == ["/run"]
    assert o["ulimits"] == ["nofile=1024:2048", "nproc=64:64"]
    assert o["log_size_max"] == 10_000_000
    assert o["ports"] == ["8080:80", "127.0.0.1:8443:443/tcp", "53/udp"]
    assert svc["stop_grace_period"] == 60.0 and svc["depends_on"] == {"b": "service_started"}


@pytest.mark.parametrize("key,words", [
    ("logging: {driver: syslog}", "logging.driver: 'syslog' is not supported"),
    ("logging: {driver: json-file, options: {tag: x}}", "options.tag: not supported"),
    ("cpus: .nan", "cpus: a number from 0.01"), ("cpus: 5000", "cpus: a number"),
    ("mem_limit: [1]", "mem_limit: a size"), ("tty: 'yes'", "tty: must be true or false"),
    ("ports: [{target: x}]", "ports[0].target: a port number"),
    ("ports: [{target: 80, foo: 1}]", "unsupported key 'foo'"),
    ("ulimits: {nofile: {soft: 1}}", "ulimits.nofile: a number or"),
])
def test_common_keys_refuse_bad_values(key: str, words: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(words)):
        stack(f"services:\n  a:\n    image: busybox\n    {key}\n")


def test_services_naming_no_network_join_the_projects_default_network() -> None:
    """As docker compose: a service without ``networks:`` is on PROJECT_default, named
    there by its service name; one with ``networks:`` only on those; ``network_mode:
    none`` on none; a declared ``default`` keeps its subnet."""
    s = stack("services:\n  db:\n    image: busybox\n  web:\n    image: busybox\n"
              "  lone:\n    image: busybox\n    network_mode: none\n"
              "  back:\n    image: busybox\n    networks: [n]\nnetworks:\n  n:\n")
    assert s["networks"] == {"default": "", "n": ""}
    opts = {name: svc["options"] for name, svc in s["services"].items()}
    assert (opts["db"]["network"], opts["db"]["network_aliases"]) == ("proj_default", ["db"])
    assert opts["web"]["network_aliases"] == ["web"] and opts["back"]["network"] == "proj_n"
    assert opts["lone"]["network"] == "none" and "network_aliases" not in opts["lone"]
    only = stack("services:\n  a:\n    image: busybox\n    networks: [n]\nnetworks:\n  n:\n")
    assert only["networks"] == {"n": ""}  # nobody on default: none made
    sized = stack("services:\n  a:\n    image: busybox\nnetworks:\n  default: "
                  "{ipam: {config: [{subnet: 10.91.4.0/24}]}}\n")
    assert sized["networks"] == {"default": "10.91.4.0/24"}
    with pytest.raises(InvalidArgument, match="network_mode: only none"):
        stack("services:\n  a:\n    image: busybox\n    network_mode: host\n")


def test_secrets_and_configs_are_read_only_files_of_the_project_directory(
        tmp_path: Path) -> None:
    """A secret at /run/secrets/NAME, a config at /NAME (or where target says), each a
    read-only bind mount of a regular file inside the project directory: a path or a
    link leading out of it, and the non-file forms, one sentence each."""
    (tmp_path / "pw.txt").write_text("hunter2")
    (tmp_path / "app.conf").write_text("x=1")
    (tmp_path / "out").symlink_to("/etc/passwd")
    text = ("services:\n  a:\n    image: busybox\n    secrets: [pw, {source: pw, target: "
            "alt}]\n    configs: [{source: conf, target: /etc/app.conf}, conf]\n"
            "secrets:\n  pw: {file: ./pw.txt}\nconfigs:\n  conf: {file: app.conf}\n")
    opts = model.normalise(yaml.safe_load(text), project="p", base_dir=str(tmp_path))[
        "services"]["a"]["options"]
    assert opts["volumes"] == [f"{tmp_path}/pw.txt:/run/secrets/pw:ro",
                               f"{tmp_path}/pw.txt:/run/secrets/alt:ro",
                               f"{tmp_path}/app.conf:/etc/app.conf:ro",
                               f"{tmp_path}/app.conf:/conf:ro"]
    assert "hunter2" not in json.dumps(opts)
    for bad, words in (("secrets:\n  pw: {file: ../../etc/passwd}\n", "outside the project"),
                       ("secrets:\n  pw: {file: out}\n", "outside the project"),
                       ("secrets:\n  pw: {file: nope}\n", "not a regular file"),
                       ("secrets:\n  pw: {environment: PW}\n", "only file: PATH"),
                       ("secrets:\n  other: {file: pw.txt}\n", "not declared")):
        with pytest.raises(InvalidArgument, match=words):
            model.normalise(yaml.safe_load("services:\n  a:\n    image: busybox\n"
                                           "    secrets: [pw]\n" + bad),
                            project="p", base_dir=str(tmp_path))


def test_pull_policy_is_carried_and_checked() -> None:
    s = stack("services:\n  a:\n    image: busybox\n    pull_policy: if_not_present\n"
              "  b:\n    image: busybox\n    pull_policy: never\n")
    assert [s["services"][n]["pull_policy"] for n in "ab"] == ["missing", "never"]
    check_stack(s)
    with pytest.raises(InvalidArgument, match="pull_policy: use always, missing or never"):
        stack("services:\n  a:\n    image: busybox\n    pull_policy: daily\n")
    with pytest.raises(InvalidArgument, match="pull_policy"):
        check_stack({**s, "services": {"a": {**s["services"]["a"], "pull_policy": "x"}}})


def test_long_form_volumes_and_the_project_directory_itself() -> None:
    """``type: bind``/``volume`` with read_only mean their short forms; ``.`` is the
    project directory (as docker compose's ``.:/code``); other options are refused."""
    opts = stack("services:\n  a:\n    image: busybox\n    volumes:\n      - .:/code\n"
                 "      - {type: bind, source: ./conf/nginx.conf, target: /etc/n.conf, "
                 "read_only: true}\n      - {type: volume, source: data, target: /d}\n"
                 "volumes:\n  data:\n")["services"]["a"]["options"]
    assert opts["volumes"] == ["/srv/app:/code", "/srv/app/conf/nginx.conf:/etc/n.conf:ro",
                               "proj_data:/d"]
    for bad, words in (("{type: tmpfs, target: /t}", "type 'tmpfs' is not supported"),
                       ("{type: bind, source: ., target: /c, bind: {}}", "'bind' is not"),
                       ("{type: volume, target: /d}", "source and target are required"),
                       ("/only/a/target", "without a source is not supported")):
        with pytest.raises(InvalidArgument, match=words):
            stack(f"services:\n  a:\n    image: busybox\n    volumes: [{bad}]\n")


def test_container_name_names_the_one_replica_and_the_plan_knows_it_by_its_labels() -> None:
    s = stack("services:\n  db:\n    image: busybox\n    container_name: my-db\n"
              "  web:\n    image: busybox\n")
    assert s["services"]["db"]["container_name"] == "my-db"
    check_stack(s)
    assert [(a.kind, a.container) for a in plan(s, []) if a.kind == "create"] == [
        ("create", "my-db"), ("create", "proj-web-1")]
    labels = model.run_options(s, "db", 1)["labels"]
    row = {"name": "my-db", "id": "c1", "state": "running", "labels": labels}
    seen = Observed.from_row(row, "proj")
    assert seen.replica == ("db", 1)
    web = Observed.from_row({"name": "proj-web-1", "id": "c2", "state": "running",
                             "labels": model.run_options(s, "web", 1)["labels"]}, "proj")
    assert plan(s, [seen, web]) == []  # converged: nothing to do
    # renamed in the file: made again under the new name, the old one removed
    renamed = stack("services:\n  db:\n    image: busybox\n    container_name: db2\n"
                    "  web:\n    image: busybox\n")
    steps = [(a.kind, a.container) for a in plan(renamed, [seen, web])]
    assert steps[:3] == [("remove", "my-db"), ("create", "db2"), ("start", "db2")]
    # another project's container, or a one-off, is no replica of this one
    assert Observed.from_row({**row, "labels": {**labels, "com.docker.compose.project":
                                                "other"}}, "proj").replica is None
    assert Observed.from_row({**row, "labels": {**labels, "com.docker.compose.oneoff":
                                                "True"}}, "proj").replica is None
    for text, words in (
            ("  a:\n    image: busybox\n    container_name: x\n    deploy: {replicas: 2}\n",
             "replicas must be 1"),
            ("  a:\n    image: busybox\n    container_name: x\n  b:\n    image: busybox\n"
             "    container_name: x\n", "services.a's too"),
            ("  a:\n    image: busybox\n    container_name: 'bad name'\n", "invalid")):
        with pytest.raises(InvalidArgument, match=words):
            check_stack(stack("services:\n" + text))


def test_extra_hosts_and_dns_become_run_options() -> None:
    opts = stack("services:\n  a:\n    image: busybox\n    extra_hosts: {x.local: 10.0.0.1, "
                 "y: [10.0.0.2, '::1']}\n    dns: [9.9.9.9]\n")["services"]["a"]["options"]
    assert opts["add_hosts"] == ["x.local=10.0.0.1", "y=10.0.0.2", "y=::1"]
    assert opts["dns"] == ["9.9.9.9"]
    assert stack("services:\n  a:\n    image: busybox\n    dns: 1.1.1.1\n    extra_hosts: "
                 "['h:10.0.0.3']\n")["services"]["a"]["options"]["dns"] == ["1.1.1.1"]
    for bad, words in (("extra_hosts: [nope]", "invalid extra host"),
                       ("dns: resolver.example", "invalid DNS server")):
        with pytest.raises(InvalidArgument, match=words):
            check_stack(stack(f"services:\n  a:\n    image: busybox\n    {bad}\n"))


def test_sysctls_and_domainname_become_run_options() -> None:
    opts = stack("services:\n  a:\n    image: busybox\n    domainname: corp.example\n"
                 "    sysctls: [net.core.somaxconn=1024]\n")["services"]["a"]["options"]
    assert opts["sysctls"] == ["net.core.somaxconn=1024"]
    assert opts["domainname"] == "corp.example"
    for bad, words in (("sysctls: {vm.swappiness: 1}", "invalid sysctl"),
                       ("domainname: 'a b'", "invalid domain name"),
                       ("network_mode: none\n    sysctls: {kernel.hostname: x}",
                        "invalid sysctl")):
        with pytest.raises(InvalidArgument, match=words):
            check_stack(stack(f"services:\n  a:\n    image: busybox\n    {bad}\n"))
