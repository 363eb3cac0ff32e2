"""Variables and several files, as the Compose specification's interpolation.md and
merge.md say: the spec's own examples, .env files, refusals that never quote a value,
and the CLI's default files, overrides, --env-file and COMPOSE_PROJECT_NAME."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from engine.compose.interpolate import interpolate, interpolate_text, parse_dotenv
from engine.compose.merge import merge_files
from engine.errors import InvalidArgument

ENV = {"SET": "value", "EMPTY": "", "TAG": "v1.5", "PORT": "8080"}


@pytest.mark.parametrize("text,expected", [
    # interpolation.md's forms, on a set, an empty and an unset variable
    ("${SET}", "value"), ("$SET", "value"), ("${UNSET}", ""), ("$UNSET", ""),
    ("${SET:-default}", "value"), ("${EMPTY:-default}", "default"),
    ("${UNSET:-default}", "default"),
    ("${SET-default}", "value"), ("${EMPTY-default}", ""), ("${UNSET-default}", "default"),
    ("${SET:+alt}", "alt"), ("${EMPTY:+alt}", ""), ("${UNSET:+alt}", ""),
    ("${SET+alt}", "alt"), ("${EMPTY+alt}", "alt"), ("${UNSET+alt}", ""),
    ("${SET:?err}", "value"), ("${EMPTY?err}", ""),
    # nested defaults, as the spec allows
    ("${UNSET:-${TAG}}", "v1.5"), ("${UNSET:-${ALSO_UNSET:-deep}}", "deep"),
    ("${SET:+${TAG}-x}", "v1.5-x"),
    # $$ is a literal $, and '$' before no name stays '$'
    ("$$", "$"), ("$$(hostname)", "$(hostname)"), ("$${SET}", "${SET}"),
    ("cost $5", "cost $5"), ("end$", "end$"),
    ("busybox:${TAG}", "busybox:v1.5"), ("${PORT}:80", "8080:80"),
    ("a}b", "a}b"), ("$SET_x", ""), ("${SET}_x", "value_x"),
])
def test_the_specifications_forms(text: str, expected: str) -> None:
    assert interpolate_text(text, ENV, "services.a.image") == expected


@pytest.mark.parametrize("text,words", [
    ("${UNSET:?the tag is required}", "required variable UNSET is unset or empty: the tag "
                                      "is required"),
    ("${EMPTY:?}", "required variable EMPTY is unset or empty"),
    ("${UNSET?x}", "required variable UNSET is unset: x"),
    ("${SET", "not closed"), ("${SET:-abc", "not closed"), ("${}", "variable name"),
    ("${1A}", "variable name"), ("${SET!x}", "unexpected character"),
])
def test_errors_are_one_sentence_naming_the_variable_and_never_a_value(
        text: str, words: str) -> None:
    secret = {"SET": "hunter2-secret", "EMPTY": ""}
    with pytest.raises(InvalidArgument) as err:
        interpolate_text(text, secret, "services.db.environment.PASSWORD")
    message = err.value.message
    assert message.startswith("services.db.environment.PASSWORD: ") and words in message
    assert "hunter2" not in message and "\n" not in message


def test_values_are_interpolated_keys_are_not() -> None:
    data = {"services": {"${SET}": {"image": "x:${TAG}", "ports": ["${PORT}:80"],
                                    "deploy": {"replicas": 2}, "read_only": True}}}
    assert interpolate(data, ENV) == {"services": {"${SET}": {
        "image": "x:v1.5", "ports": ["8080:80"], "deploy": {"replicas": 2},
        "read_only": True}}}
    with pytest.raises(InvalidArgument, match=r"^services.web.ports\[1\]: required variable"):
        interpolate({"services": {"web": {"ports": ["1:1", "${NOPE:?}"]}}}, {})


def test_nested_defaults_and_growth_are_bounded() -> None:
    deep = "${U:-" * 20 + "x" + "}" * 20
    with pytest.raises(InvalidArgument, match="nested more than 16 deep"):
        interpolate_text(deep, {}, "v")
    big = {"B": "x" * 600_000}
    with pytest.raises(InvalidArgument, match="longer than"):
        interpolate_text("${B}${B}", big, "v")


def test_dotenv_lines_as_docker_compose_reads_them() -> None:
    text = ("# comment\n\nA=1\nexport B=two words  # a comment\nC='single $X # kept'\n"
            'D="line\\nnext \\"q\\""\nE=\nF="multi\nline"\nBARE\n')
    assert parse_dotenv(text, ".env") == {"A": "1", "B": "two words",
                                          "C": "single $X # kept", "D": 'line\nnext "q"',
                                          "E": "", "F": "multi\nline"}
    for bad in ("PASSWORD hunter2\n", "A='open\n"):
        with pytest.raises(InvalidArgument) as err:
            parse_dotenv(bad, ".env")
        assert "hunter2" not in err.value.message and "line 1" in err.value.message


def test_merge_follows_merge_md() -> None:
    base = {"services": {"web": {
        "image": "web:1", "command": ["a", "b"], "ports": ["80:80", "443:443"],
        "environment": ["A=1", "B=2"], "labels": {"x": "1"},
        "volumes": ["data:/data", "./conf:/etc/conf:ro"],
        "healthcheck": {"test": ["CMD", "a"], "interval": "5s"}, "dns": ["1.1.1.1"]}},
        "volumes": {"data": None}}
    over = {"services": {"web": {
        "image": "web:2", "command": ["c"], "ports": ["443:443", "8080:80"],
        "environment": {"B": "3", "C": "4"}, "labels": ["y=2"],
        "volumes": ["./other:/etc/conf"], "healthcheck": {"test": ["CMD", "b"]},
        "dns": ["1.1.1.1", "8.8.8.8"]}, "db": {"image": "db"}}}
    web = merge_files([base, over])["services"]["web"]
    assert web["image"] == "web:2" and web["command"] == ["c"]  # replaced
    assert web["ports"] == ["80:80", "443:443", "8080:80"]  # appended, each once
    assert web["environment"] == {"A": "1", "B": "3", "C": "4"}  # merged by key
    assert web["labels"] == {"x": "1", "y": "2"}
    assert web["volumes"] == ["data:/data", "./other:/etc/conf"]  # by target
    assert web["healthcheck"] == {"test": ["CMD", "b"], "interval": "5s"}
    assert web["dns"] == ["1.1.1.1", "8.8.8.8"]
    assert set(merge_files([base, over])["services"]) == {"web", "db"}


def _config(cwd: str, *args: str, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "berth", "compose", *args, "config"],
                          cwd=cwd, capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": os.getcwd(), **(env or {})})


def test_cli_reads_default_files_overrides_env_files_and_the_project_name(
        tmp_path: str) -> None:
    d = str(tmp_path)
    with open(os.path.join(d, "docker-compose.yml"), "w") as f:
        f.write("services:\n  web:\n    image: busybox:${TAG:-latest}\n"
                "    ports: ['${WEBPORT}:80']\n    command: echo $$HOME ${GREETING}\n"
                "    environment: [PASSTHROUGH, UNSET_ONE, FIXED=1]\n")
    with open(os.path.join(d, "compose.override.yml"), "w") as f:
        f.write("services:\n  web:\n    environment: {FIXED: '2'}\n")
    with open(os.path.join(d, ".env"), "w") as f:
        f.write("TAG=1.36\nWEBPORT=8081\nGREETING=hi\nCOMPOSE_PROJECT_NAME=fromdotenv\n")
    done = _config(d, env={"GREETING": "shell-wins", "PASSTHROUGH": "from-host"})
    assert done.returncode == 0, done.stderr
    stack = yaml.safe_load(done.stdout)
    web = stack["services"]["web"]["options"]
    assert stack["name"] == "fromdotenv"
    assert web["image"] == "busybox:1.36" and web["ports"] == ["8081:80"]
    assert web["args"] == ["echo", "$HOME", "shell-wins"]
    assert web["env"] == ["PASSTHROUGH=from-host", "FIXED=2"]  # UNSET_ONE left out
    with open(os.path.join(d, "other.env"), "w") as f:
        f.write("WEBPORT=9090\n")
    done = _config(d, "--env-file", "other.env", "-p", "given")
    assert done.returncode == 0, done.stderr
    stack = yaml.safe_load(done.stdout)
    assert stack["name"] == "given"
    assert stack["services"]["web"]["options"]["ports"] == ["9090:80"]
    assert stack["services"]["web"]["options"]["image"] == "busybox:latest"  # no .env
    # a required variable missing: one sentence, exit 125, the value never quoted
    with open(os.path.join(d, "strict.yml"), "w") as f:
        f.write("services:\n  db:\n    image: busybox\n"
                "    environment: {PW: '${DB_PASSWORD:?set DB_PASSWORD}', X: '${SECRET}'}\n")
    done = _config(d, "-f", "strict.yml", env={"SECRET": "hunter2"})
    assert done.returncode == 125
    assert done.stderr.strip() == ("berth: services.db.environment.PW: required variable "
                                   "DB_PASSWORD is unset or empty: set DB_PASSWORD")
    empty = os.path.join(d, "empty")
    os.makedirs(empty)
    done = _config(empty)
    assert done.returncode == 125 and "no compose file here" in done.stderr


def test_extends_merges_the_base_under_the_service_and_refuses_cycles() -> None:
    from engine.compose.merge import resolve_extends, select_profiles

    other = {"services": {"base": {"image": "b", "environment": {"A": "1"},
                                   "command": ["x"]}}}
    data = {"services": {
        "mid": {"extends": {"service": "base", "file": "o.yaml"}, "environment": ["B=2"]},
        "top": {"extends": "mid", "command": ["y"]}}}
    out = resolve_extends(data, lambda name: other)["services"]
    assert out["top"] == {"image": "b", "environment": {"A": "1", "B": "2"}, "command": ["y"]}
    for services, words in (({"a": {"extends": "a"}}, "a cycle through 'a'"),
                            ({"a": {"extends": "b"}, "b": {"extends": "a"}}, "a cycle"),
                            ({"a": {"extends": "nope"}}, "no service 'nope'"),
                            ({"a": {"extends": {"service": 1}}}, "a service's name")):
        with pytest.raises(InvalidArgument, match=words):
            resolve_extends({"services": services}, lambda name: {})
    profiled = {"services": {"app": {"image": "a"},
                             "debug": {"image": "d", "profiles": ["dev"]},
                             "uses": {"image": "u", "profiles": ["ops"],
                                      "depends_on": ["debug"]}}}
    assert set(select_profiles(profiled, [])["services"]) == {"app"}
    assert select_profiles(profiled, ["dev"])["services"]["debug"] == {"image": "d"}
    assert set(select_profiles(profiled, ["*"])["services"]) == {"app", "debug", "uses"}
    with pytest.raises(InvalidArgument, match="services.uses.depends_on: service 'debug' "
                                              "is in no active profile"):
        select_profiles(profiled, ["ops"])
