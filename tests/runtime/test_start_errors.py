"""Why a process did not start, sorted as podman sorts it (pure, from runc's words)."""

from __future__ import annotations

from engine.errors import CommandNotFound, CommandNotInvokable, RuntimeFailure
from engine.runtime.runc import classify_start

LOGRUS = ('time="2026-12-02T01:03:39Z" level=error msg="runc create failed: unable to start '
          'container process: exec: \\"{cmd}\\": {why}"')


def test_not_found_is_127_and_not_invokable_126() -> None:
    for why in ("stat /nope: no such file or directory",
                "executable file not found in $PATH"):
        error = classify_start(LOGRUS.format(cmd="/nope", why=why), "container create failed")
        assert isinstance(error, CommandNotFound) and error.exit_code == 127
        assert "/nope" in str(error) and "\n" not in str(error)
    for why in ("permission denied", "is a directory", "exec format error"):
        error = classify_start(LOGRUS.format(cmd="/etc", why=why), "container create failed")
        assert isinstance(error, CommandNotInvokable) and error.exit_code == 126


def test_other_failures_keep_their_class() -> None:
    error = classify_start('msg="runc create failed: cgroup: no space left"', "create")
    assert type(error) is RuntimeFailure and error.exit_code == 125
