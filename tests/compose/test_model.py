"""The Compose file read into the normalised stack, and the pure plan (no engine)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from engine.compose import model
from engine.compose.plan import Action, Observed, again, command_id, parse_name, plan
from engine.errors import InvalidArgument


def stack(text: str, project: str = "proj", base: str = "/srv/app") -> dict[str, Any]:
    return model.normalise(model.load(text.encode(), where="compose.yaml"),
                           project=project, base_dir=base)


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
    assert s["name"] == "proj" and s["volumes"] == ["data"] and s["networks"] == {}
    assert db["options"]["rootfs"] == "/srv/app/rootfs"
    assert db["options"]["env"] == ["A=1", "B=true", "C="]
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
    assert s["networks"] == {"back": "10.91.3.0/24", "front": ""}
    with pytest.raises(model.Unsupported) as err:
        stack("services:\n  a:\n    image: ./r\n    command: [x]\nnetworks:\n"
              "  n: {driver: macvlan, ipam: {driver: x}}\n")
    assert err.value.lines == ["networks.n.driver: not supported",
                               "networks.n.ipam: only config: [{subnet: CIDR}] is supported"]


def test_unsupported_keys_one_line_each() -> None:
    with pytest.raises(model.Unsupported) as err:
        stack("services:\n  a:\n    image: ./r\n    command: [x]\n    cap_drop: [ALL]\n"
              "    privileged: true\n    deploy: {placement: {}}\nconfigs: {}\n")
    assert err.value.lines == ["configs: top-level key not supported",
                               "services.a.cap_drop: not supported",
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
                       (b"#" * (model.MAX_FILE_BYTES + 1), "larger than"),
                       (b"services: \xff\n", "UTF-8")):
        with pytest.raises(InvalidArgument, match=words):
            model.load(raw, where="f")


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


def test_stack_apply_is_checked_before_anything_is_recorded() -> None:
    from engine.commands import parse

    s = stack(GOOD)
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
