"""Fixtures for real container networks: the e2e engine (real broker, worker, runc,
conmon, CNI plugins) and a unique user network per test.

User networks take a /24 of 10.90.0.0/16, which nothing else on this machine uses;
the /24 is claimed with an exclusive file (freed at teardown, reclaimed from a dead
process), so tests running in parallel never share one.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import (  # noqa: F401, F811 (fixtures)
    Engine,
    default_network,
    engine,
    up,
)
from tests.helpers import mounts_under

CLAIMS = "/run/berth-test-subnets"
_counter = itertools.count()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


@contextlib.contextmanager
def claimed_subnet(prefix: str = "10.90") -> Iterator[str]:
    """A PREFIX.N.0/24 that no other test holds while this one runs (the tests of
    concurrent joins take theirs from 10.94, claimed in a directory of its own)."""
    claims = CLAIMS if prefix == "10.90" else f"{CLAIMS}-{prefix}"
    os.makedirs(claims, exist_ok=True)
    start = (os.getpid() * 31 + next(_counter)) % 250
    for i in range(250):
        n = (start + i) % 250 + 1
        path = os.path.join(claims, str(n))
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            try:
                with open(path) as f:
                    owner = int(f.read() or 0)
            except (OSError, ValueError):
                continue
            if owner and not _alive(owner):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        try:
            yield f"{prefix}.{n}.0/24"
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        return
    raise RuntimeError(f"no free /24 in {prefix}.0.0/16 for a test network")


def network_left_behind(name: str) -> list[str]:
    """What of network ``name`` is still on the host: its bridge, and each iptables
    rule that names it (every rule berth makes for a network carries its name in a
    comment). Empty once ``network rm`` did its work."""
    from engine.networks.rules import bridge_for

    left = []
    if subprocess.run(["ip", "link", "show", bridge_for(name)], capture_output=True,
                      check=False).returncode == 0:
        left.append(f"bridge {bridge_for(name)}")
    tag = f"berth network {name}"
    for table in ("nat", "filter"):
        saved = subprocess.run(["iptables-save", "-t", table], capture_output=True, text=True,
                               check=True).stdout
        left += [f"{table}: {line}" for line in saved.splitlines()
                 if tag + '"' in line or line.endswith(tag)]
    return left


@pytest.fixture
def user_network(up: Engine) -> Iterator[tuple[str, str]]:  # noqa: F811
    """A user network of its own (name, subnet). Afterwards the test's containers are
    removed (``network rm`` is refused while any is attached) and ``network rm``
    must succeed and leave neither the bridge nor an iptables rule of the network:
    the fixture checks the engine's cleanup, it never does it."""
    name = f"t{os.getpid()}n{next(_counter)}"
    with claimed_subnet() as subnet:
        result = up.cli("network", "create", "--subnet", subnet, name)
        assert result.returncode == 0, result.stderr
        yield name, subnet
        listed = up.cli("ps", "-a", "--format", "json")
        assert listed.returncode == 0, listed.stderr
        for row in json.loads(listed.stdout):
            up.cli("rm", "-f", row["id"])
        assert mounts_under(os.path.join(up.run, "runtime", "net")) == [], \
            "removed containers left their network namespaces mounted"
        removed = up.cli("network", "rm", name)  # the test may have removed it itself
        assert (removed.returncode == 0
                or removed.stderr == f"berth: no such network: {name}\n"), removed.stderr
        assert network_left_behind(name) == [], "network rm left these on the host"
