"""``exec --user`` as ``run --user`` (issue 21, B4): a name is looked up in the
container's own /etc/passwd (read inside its root), and a numeric uid gets the primary
group that file gives it, not gid 0."""

from __future__ import annotations

import subprocess

from tests.e2e.conftest import Engine


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def test_exec_user_by_name_and_by_uid_gets_the_users_group(up: Engine) -> None:
    _ok(up.cli("run", "-d", "--name", "eu", up.rootfs, "sleep", "120"))

    def ids(*user: str) -> list[str]:
        return _ok(up.cli("exec", *user, "eu", "sh", "-c", "id -u; id -g")).split()

    assert ids() == ["0", "0"]
    assert ids("--user", "nobody") == ["65534", "65534"]
    assert ids("-u", "65534") == ["65534", "65534"]  # the primary group of its passwd line
    assert ids("-u", "nobody:root") == ["65534", "0"]
    assert ids("-u", "65534:7") == ["65534", "7"]
    assert ids("-u", "4321") == ["4321", "0"]  # not in /etc/passwd: group 0, as podman
    unknown = up.cli("exec", "-u", "alice", "eu", "true")
    assert unknown.returncode == 125, (unknown.returncode, unknown.stderr)
    assert "user 'alice' is not in the container's /etc/passwd" in unknown.stderr
    bad = up.cli("exec", "-u", "a:b:c", "eu", "true")
    assert bad.returncode == 125 and "invalid user" in bad.stderr, bad.stderr
