"""``/etc/berth/berth.toml`` (or ``BERTH_CONFIG``): settings the environment overrides."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from berth import config
from engine.errors import InvalidArgument, PermissionDenied
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
                           "metrics, docker, images)"),
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


# ------------------------------------------- who may change the file berth obeys

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
TRUST = "berth obeys a configuration file only if no one but root or you can change it"


def _config(directory: str, name: str = "berth.toml") -> str:
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write('[engine]\ncriu = "/home/mallory/criu"\n')
    os.chmod(path, 0o644)
    return path


def _refused(path: str, why: str) -> None:
    env = {"BERTH_CONFIG": path}
    with pytest.raises(PermissionDenied) as err:
        config.apply(env)
    assert str(err.value) == f"{path} {why}: {TRUST}"
    assert env == {"BERTH_CONFIG": path}  # nothing set: BERTH_CRIU is run as root


@pytest.mark.parametrize("mode", [0o666, 0o646, 0o664])
def test_a_file_its_group_or_others_can_write_is_refused(tmp_path: str, mode: int) -> None:
    path = _config(tmp_path)
    os.chmod(path, mode)
    _refused(path, f"can be written by its group or by others (mode {mode:04o}; chmod go-w "
                   f"{path})")


@ROOT_ONLY
def test_a_file_another_user_owns_is_refused(tmp_path: str) -> None:
    path = _config(tmp_path)
    os.chown(path, 65534, -1)
    _refused(path, "belongs to uid 65534")


@pytest.mark.parametrize("mode", [0o777, 0o775])
def test_a_directory_others_can_write_to_is_not_trusted(tmp_path: str, mode: int) -> None:
    """Whoever can write the directory can put another file at the name."""
    open_dir = os.path.join(tmp_path, "shared")
    os.mkdir(open_dir)
    path = _config(open_dir)
    os.chmod(open_dir, mode)
    _refused(path, f"is reached through {open_dir}, which its group or others can write to "
                   f"(mode {mode:04o})")
    os.chmod(open_dir, mode | stat.S_ISVTX)  # sticky, as /tmp: no one can replace it
    env = {"BERTH_CONFIG": path}
    assert config.apply(env) == path and env["BERTH_CRIU"] == "/home/mallory/criu"


@ROOT_ONLY
def test_a_directory_or_a_link_another_user_owns_is_not_trusted(tmp_path: str) -> None:
    theirs = os.path.join(tmp_path, "theirs")
    os.mkdir(theirs)
    path = _config(theirs)
    os.chown(theirs, 65534, -1)
    _refused(path, f"is reached through {theirs}, which belongs to uid 65534")
    os.chown(theirs, 0, -1)
    # A link is followed, and judged: its owner could point it at another file.
    link = os.path.join(tmp_path, "berth.toml")
    os.symlink(path, link)
    assert config.apply({"BERTH_CONFIG": link}) == link
    os.lchown(link, 65534, -1)
    _refused(link, f"is reached through the symbolic link {link}, which belongs to uid 65534")
    # The file a trusted link names is judged where it really is.
    os.unlink(link)
    elsewhere = os.path.join(tmp_path, "open")
    os.mkdir(elsewhere)
    os.chmod(elsewhere, 0o777)
    os.symlink(_config(elsewhere), link)
    _refused(link, f"is reached through {elsewhere}, which its group or others can write to "
                   "(mode 0777)")


def test_a_fifo_is_not_read(tmp_path: str) -> None:
    path = os.path.join(tmp_path, "berth.toml")
    os.mkfifo(path, 0o600)
    with pytest.raises(InvalidArgument, match="is not a regular file"):
        config.apply({"BERTH_CONFIG": path})


def test_the_cli_refuses_an_untrusted_file_in_one_sentence(tmp_path: str) -> None:
    path = _config(tmp_path)
    os.chmod(path, 0o666)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
    env["BERTH_CONFIG"] = path
    done = subprocess.run([sys.executable, "-m", "berth", "ps"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 126
    assert done.stderr == (f"berth: {path} can be written by its group or by others (mode "
                           f"0666; chmod go-w {path}): {TRUST}\n")
