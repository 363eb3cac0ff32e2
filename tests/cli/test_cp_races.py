"""``berth cp`` against a container that races it: while copies run, the container
swaps directories with symbolic links to a host directory, ``renameat2(RENAME_EXCHANGE)``
in a loop (a static helper, compiled here, runs in it). Whatever the timing, no copy
may write into that host directory or carry a host file out."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import time

import pytest

from engine.errors import InvalidArgument, NotFound
from tests.e2e.conftest import Engine

RACE_SECONDS = 6.0
"""How long each direction is raced (a copy takes milliseconds: hundreds of tries)."""

SWAPPER = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

/* swapper A B: exchange the names A and B, atomically, over and over */
int main(int argc, char **argv) {
    if (argc != 3) return 2;
    for (;;) syscall(SYS_renameat2, AT_FDCWD, argv[1], AT_FDCWD, argv[2], 2 /* EXCHANGE */);
}
"""


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


@pytest.fixture
def racer(up: Engine, short_tmp: str) -> tuple[Engine, str, str]:
    """A running container swapping, in two loops,
    ``/data/a`` with ``/data/la`` (a link to HOST): a copy's destination or source;
    ``/data/b/tree/sub`` with ``/data/b/tree/lb`` (a link to HOST): a directory
    inside a tree being extracted or packed.
    HOST holds a file named as the container's own (``inner``): a copy that is led
    there reads it where it meant to read the container's.
    Returns (engine, container id, HOST)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is needed to build the swapping helper")
    root = os.path.join(short_tmp, "rootfs")
    shutil.copytree(up.rootfs, root, symlinks=True)
    source = os.path.join(short_tmp, "swapper.c")
    with open(source, "w") as f:
        f.write(SWAPPER)
    subprocess.run([gcc, "-static", "-O2", "-o", os.path.join(root, "bin", "swapper"), source],
                   check=True, capture_output=True, timeout=120)
    host = os.path.join(short_tmp, "host")
    os.mkdir(host)
    with open(os.path.join(host, "inner"), "w") as f:  # named as the container's files
        f.write("HOST-SECRET\n")
    os.chmod(os.path.join(host, "inner"), 0o600)
    os.makedirs(os.path.join(root, "data", "a"))
    os.makedirs(os.path.join(root, "data", "b", "tree", "sub"))
    for where in ("data/a", "data/b/tree", "data/b/tree/sub"):
        with open(os.path.join(root, where, "inner"), "w") as f:
            f.write("container\n")
    os.symlink(host, os.path.join(root, "data", "la"))
    os.symlink(host, os.path.join(root, "data", "b", "tree", "lb"))
    cid = _ok(up.cli("run", "-d", "--network", "none", "--name", "racer", root, "sh", "-c",
                     "swapper /data/a /data/la & swapper /data/b/tree/sub /data/b/tree/lb "
                     "& wait")).strip()
    return up, cid, host


def _archive(*names: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = 5
            tar.addfile(info, io.BytesIO(b"copy\n"))
    return buffer.getvalue()


def _host_untouched(host: str) -> None:
    assert os.listdir(host) == ["inner"], os.listdir(host)
    with open(os.path.join(host, "inner")) as f:
        assert f.read() == "HOST-SECRET\n"


def test_copies_into_a_container_that_swaps_in_links_never_write_on_the_host(
        racer: tuple[Engine, str, str], short_tmp: str) -> None:
    up, cid, host = racer
    client = up.client()
    written = refused = 0
    deadline = time.monotonic() + RACE_SECONDS
    i = 0
    while time.monotonic() < deadline:
        i += 1
        for path, data in (("/data/a/", _archive(f"f{i}")),  # into the swapped directory
                           (f"/data/a/as{i}", _archive("x")),  # as a new name in it
                           # entries under the swapped inner directory, listed without
                           # their parents: each one's parent is looked up as it comes
                           ("/data/b/", _archive(*(f"tree/sub/g{i}-{n}" for n in range(8))))):
            try:
                client.copy_in(cid, path, data)
                written += 1
            except (NotFound, InvalidArgument):
                refused += 1  # the directory was a link at that moment: nothing there
        _host_untouched(host)
    # and through the CLI (its own process, the whole path)
    tree = os.path.join(short_tmp, "tree")
    os.makedirs(os.path.join(tree, "sub"))
    with open(os.path.join(tree, "sub", "f"), "w") as f:
        f.write("cli\n")
    for _ in range(3):
        for where in ("racer:/data/a/", "racer:/data/b/"):
            done = up.cli("cp", tree, where)
            assert done.returncode == 0 or "internal" not in done.stderr, done.stderr
    _host_untouched(host)
    assert written > 10, (written, refused)  # the race ran: most copies went through


def test_copies_out_of_a_container_that_swaps_in_links_never_read_the_host(
        racer: tuple[Engine, str, str], short_tmp: str) -> None:
    up, cid, host = racer
    client = up.client()
    packed = 0
    deadline = time.monotonic() + RACE_SECONDS
    while time.monotonic() < deadline:
        for path in ("/data/a", "/data/a/inner", "/data/b", "/data/b/tree/sub/inner"):
            try:
                data = client.copy_out(cid, path)
            except (NotFound, InvalidArgument):
                continue  # a link at that moment, leading nowhere in the container
            packed += 1
            assert b"HOST-SECRET" not in data, path
    for n in range(3):
        out = os.path.join(short_tmp, f"out{n}")
        os.mkdir(out)
        up.cli("cp", "racer:/data/b", out)
        for where, _dirs, files in os.walk(out):
            for name in files:
                with open(os.path.join(where, name)) as f:
                    assert "HOST-SECRET" not in f.read()
        raw = subprocess.run([*_berth(), "cp", "racer:/data/b", "-"], env=up.env,
                             capture_output=True, timeout=60, check=False).stdout
        assert b"HOST-SECRET" not in raw
    _host_untouched(host)
    assert packed > 10, packed


def _berth() -> list[str]:
    import sys

    return [sys.executable, "-m", "berth"]


def test_the_swapping_helper_really_swaps(racer: tuple[Engine, str, str]) -> None:
    """The races above mean something only if the container swaps: it sees /data/a as
    a link now and then, and as a directory now and then."""
    up, _cid, _host = racer
    seen = _ok(up.cli("exec", "racer", "sh", "-c",
                      "i=0; l=0; d=0; while [ $i -lt 200000 ]; do "
                      "if [ -L /data/a ]; then l=1; else d=1; fi; "
                      "if [ $l$d = 11 ]; then break; fi; i=$((i+1)); done; echo $l$d"))
    assert seen.strip() == "11"
