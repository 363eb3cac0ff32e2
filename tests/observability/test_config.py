"""``/etc/berth/berth.toml`` (or ``BERTH_CONFIG``): settings the environment overrides."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from berth import config
from engine.errors import InvalidArgument
from tests.e2e.test_daemon import Place


def test_each_key_sets_its_variable_unless_the_environment_does(tmp_path: str) -> None:
    path = os.path.join(tmp_path, "berth.toml")
    with open(path, "w") as f:
        f.write('[engine]\nroot = "/srv/berth"\nnode = "n7"\n'
                '[store]\nretry_seconds = 15\n[log]\nformat = "json"\n'
                '[metrics]\naddress = "127.0.0.1:9464"\n[audit]\ninterval = 2.5\n')
    env = {"BERTH_CONFIG": path, "BERTH_NODE": "from-env"}
    assert config.apply(env) == path
    assert env == {"BERTH_CONFIG": path, "BERTH_NODE": "from-env", "BERTH_ROOT": "/srv/berth",
                   "BERTH_STORE_RETRY_SECONDS": "15", "BERTH_LOG_FORMAT": "json",
                   "BERTH_METRICS": "127.0.0.1:9464", "BERTH_AUDIT_INTERVAL": "2.5"}


def test_no_file_no_change(tmp_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "DEFAULT_PATH", os.path.join(tmp_path, "absent.toml"))
    env: dict[str, str] = {}
    assert config.apply(env) is None and env == {}


@pytest.mark.parametrize("text, sentence", [
    ("[engine\n", "is not valid TOML"),
    ("[network]\nx = 1\n", "unknown section [network] (known: engine, store, bus, audit, log, "
                           "metrics, images)"),
    ("[engine]\nroots = '/x'\n", "unknown key 'roots' in [engine] (known: root, run, node, "
                                 "criu, actor)"),
    ("engine = 3\n", "engine must be a [engine] table"),
    ("[engine]\nroot = true\n", "[engine] root must be a string or a number"),
    ("[engine]\nroot = ['/a']\n", "[engine] root must be a string or a number"),
    ("[audit]\ninterval = nan\n", "[audit] interval must be a finite number"),
    ("[engine]\nroot = ''\n", "[engine] root must not be empty or hold a NUL byte"),
    ("[engine]\nroot = \"/a\\u0000b\"\n", "[engine] root must not be empty or hold a NUL byte"),
])
def test_a_bad_file_is_one_sentence_and_sets_nothing(tmp_path: str, text: str,
                                                     sentence: str) -> None:
    path = os.path.join(tmp_path, "berth.toml")
    with open(path, "w") as f:
        f.write(text)
    env = {"BERTH_CONFIG": path}
    with pytest.raises(InvalidArgument) as err:
        config.apply(env)
    assert str(err.value).startswith(path) and sentence in str(err.value)
    assert env == {"BERTH_CONFIG": path}


def test_a_missing_named_file_or_a_huge_one_is_refused(tmp_path: str) -> None:
    missing = os.path.join(tmp_path, "nope.toml")
    with pytest.raises(InvalidArgument, match="BERTH_CONFIG names .*nope.toml, which does not"):
        config.apply({"BERTH_CONFIG": missing})
    huge = os.path.join(tmp_path, "huge.toml")
    with open(huge, "w") as f:
        f.write("#" * (config.MAX_SIZE + 1))
    with pytest.raises(InvalidArgument, match="larger than 65536 bytes"):
        config.apply({"BERTH_CONFIG": huge})


def test_the_engine_takes_its_directories_from_the_file(place: Place) -> None:
    path = os.path.join(os.path.dirname(place.root), "berth.toml")
    with open(path, "w") as f:
        f.write(f'[engine]\nroot = "{place.root}"\nrun = "{place.run}"\n')
    env = {k: v for k, v in place.env.items() if k not in ("BERTH_ROOT", "BERTH_RUN")}
    env["BERTH_CONFIG"] = path

    def berth(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "berth", *args], env=env,
                              capture_output=True, text=True, timeout=90, check=False)

    assert berth("up", "-d").returncode == 0
    assert os.path.exists(os.path.join(place.root, "berth.db"))
    assert os.path.exists(os.path.join(place.run, "bus.sock"))
    ran = berth("run", "--rm", place.rootfs, "echo", "configured")
    assert (ran.returncode, ran.stdout) == (0, "configured\n"), ran.stderr
    with open(path, "a") as f:
        f.write("[bogus]\n")
    broken = berth("ps")
    assert broken.returncode == 125 and broken.stderr.startswith(f"berth: {path}: unknown "
                                                                 "section [bogus]")
