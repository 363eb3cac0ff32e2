"""`berth keys`: real files, real modes, and refusals of what would leak a key."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bus import keys
from engine.errors import InvalidArgument, PermissionDenied

REPO = Path(__file__).resolve().parents[2]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _berth(*args: str, root: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, BERTH_ROOT=str(root), PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "berth", *args], env=env, text=True,
                          capture_output=True, timeout=30, check=False)


def test_generate_writes_a_private_pair(tmp_path: Path) -> None:
    done = _berth("keys", "generate", "node-1", root=tmp_path)
    assert done.returncode == 0, done.stderr
    directory = tmp_path / "keys"  # the default: $BERTH_ROOT/keys
    assert _mode(directory) == 0o700
    assert _mode(directory / "node-1.key_secret") == 0o600
    assert _mode(directory / "node-1.key") == 0o644
    pair = keys.load_pair(directory / "node-1.key_secret")
    assert keys.load_public(directory / "node-1.key") == pair.public
    assert len(pair.public) == len(pair.secret) == 40


def test_generate_into_a_given_dir_creates_it_private(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    done = _berth("keys", "generate", "w1", "--dir", str(target), root=tmp_path)
    assert done.returncode == 0, done.stderr
    assert _mode(target) == 0o700 and _mode(target.parent) == 0o700
    again = _berth("keys", "generate", "w1", "--dir", str(target), root=tmp_path)
    assert again.returncode != 0 and "already exists" in again.stderr


@pytest.mark.parametrize("name", ["", "-x", "a/b", "../etc", "a b", "x" * 64, ".hidden"])
def test_bad_names_are_refused(tmp_path: Path, name: str) -> None:
    done = _berth("keys", "generate", "--dir", str(tmp_path / "k"), "--", name, root=tmp_path)
    assert done.returncode != 0 and "invalid key name" in done.stderr
    assert not (tmp_path / "k").exists() or not any((tmp_path / "k").iterdir())


def test_a_readable_secret_key_is_refused(tmp_path: Path) -> None:
    _, secret = keys.generate("leaky", tmp_path)
    secret.chmod(0o644)
    with pytest.raises(PermissionDenied, match="readable by its owner only"):
        keys.load_pair(secret)


def test_authorize_takes_public_keys_only(tmp_path: Path) -> None:
    public, secret = keys.generate("alice", tmp_path / "mine")
    with pytest.raises(InvalidArgument, match="holds a secret key"):
        keys.authorize(secret, keys.PUBLISHERS, directory=tmp_path / "auth")
    dest = keys.authorize(public, keys.PUBLISHERS, directory=tmp_path / "auth")
    assert dest.name == "alice.key" and _mode(dest.parent) == 0o700
    assert keys.read_authorized(tmp_path / "auth") == {keys.load_public(public): "alice"}
    other, _ = keys.generate("alice", tmp_path / "other")
    with pytest.raises(InvalidArgument, match="another key"):
        keys.authorize(other, keys.PUBLISHERS, directory=tmp_path / "auth")


def test_client_keys_need_both_halves(tmp_path: Path) -> None:
    _, secret = keys.generate("c", tmp_path)
    assert keys.client_keys_from_env({}) is None
    with pytest.raises(InvalidArgument, match="BERTH_SERVER_KEY"):
        keys.client_keys_from_env({"BERTH_KEY": str(secret)})
    with pytest.raises(InvalidArgument, match="does not exist"):
        keys.client_keys_from_env({"BERTH_KEY": str(secret), "BERTH_SERVER_KEY": "/nope.key"})
