"""Files written from the event log are 0600 from their first byte, whatever the umask,
and never written through a name someone else prepared (engine/privatefile.py).

The log's payloads hold what containers were run with (``-e DB_PASSWORD=...``): an
export another user could read is that password (the issue's defect 15)."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.audit.treehead import Signer, dump
from engine.errors import InvalidArgument
from engine.privatefile import private_output, write_private


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The loosest umask: anything created with a default mode is world-writable."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.mark.usefixtures("open_umask")
def test_a_new_file_is_private_even_under_umask_0(tmp_path: Path) -> None:
    path = tmp_path / "export.jsonl"
    with private_output(path) as f:
        f.write("-e DB_PASSWORD=hunter2\n")
        # While it is written: under a temporary name, already private.
        partial = [p for p in tmp_path.iterdir() if p.name != "export.jsonl"]
        assert [_mode(p) for p in partial] == [0o600] and not path.exists()
    assert _mode(path) == 0o600 and path.read_text() == "-e DB_PASSWORD=hunter2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.jsonl"]


@pytest.mark.usefixtures("open_umask")
def test_an_existing_world_readable_file_is_replaced_by_a_private_one(tmp_path: Path) -> None:
    path = tmp_path / "export.jsonl"
    path.write_text("old\n")
    path.chmod(0o644)
    write_private(path, "new\n")
    assert (_mode(path), path.read_text()) == (0o600, "new\n")


def test_a_link_at_the_name_is_never_written_through(tmp_path: Path) -> None:
    """Someone who can write the directory leaves a hard link, or a symbolic link, to
    a file of theirs or to one the writer may change: that file is left alone. The
    hard link is replaced; the symbolic link refused (it may be /dev/stdout)."""
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    victim.chmod(0o644)
    symlink, hardlink = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    symlink.symlink_to(victim)
    os.link(victim, hardlink)
    write_private(hardlink, "the log\n")
    assert (_mode(hardlink), hardlink.read_text()) == (0o600, "the log\n")
    with pytest.raises(InvalidArgument, match="a.jsonl is a symbolic link to a file: name"):
        write_private(symlink, "the log\n")
    assert symlink.is_symlink()
    assert (victim.read_text(), _mode(victim)) == ("untouched\n", 0o644)


def test_a_device_or_a_pipe_is_written_to_and_left_what_it_is(tmp_path: Path) -> None:
    """--out /dev/null, or a named pipe to a reader: they keep nothing, and root must
    not replace /dev/null with a file."""
    write_private("/dev/null", "the log\n")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo, 0o600)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        write_private(fifo, "the log\n")
        assert os.read(reader, 100) == b"the log\n"
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    with pytest.raises(InvalidArgument, match="is a directory"):
        write_private(tmp_path, "x")


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "export.jsonl"
    path.write_text("previous export\n")
    with pytest.raises(RuntimeError), private_output(path) as f:
        f.write("half of it")
        raise RuntimeError("the engine went away")
    assert path.read_text() == "previous export\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.jsonl"]


def test_an_unwritable_place_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="cannot write .*/nowhere/x.json: No such file"):
        write_private(tmp_path / "nowhere" / "x.json", "{}")


@pytest.mark.usefixtures("open_umask")
def test_heads_and_proofs_are_written_private(tmp_path: Path) -> None:
    head = Signer(b"\x01" * 32).sign(3, b"\x02" * 32, 1)
    path = tmp_path / "head.json"
    text = dump(head.to_json(), str(path))
    assert json.loads(path.read_text()) == json.loads(text) and _mode(path) == 0o600
