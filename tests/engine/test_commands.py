"""``engine.parsing.parse``, pure: every wire command to its typed command, and every
bad argument refused with its one sentence (the same wherever the command entered)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from engine import command_types as t
from engine import commands as c
from engine.arguments import MAX_STOP_TIMEOUT
from engine.containers.parsing import MAX_LOG_WAIT_MS
from engine.containers.spec import RunSpec
from engine.errors import InvalidArgument
from engine.parsing import (
    CONTAINER_PARSED,
    KERNEL_COMMANDS,
    MAX_EVENTS_PAGE,
    NETWORK_PARSED,
    PARSERS,
    parse,
)


def refused(command_type: str, container: str | None, args: dict[str, Any]) -> str:
    with pytest.raises(InvalidArgument) as err:
        parse(command_type, container, args)
    return str(err.value)


# ------------------------------------------------------------------ commands without a container


def test_create(tmp_path: Path) -> None:
    spec = RunSpec(rootfs=str(tmp_path), args=("sleep", "1"))
    parsed = parse(t.CREATE, None, {**spec.to_data(), "name": "web"})
    assert parsed == c.Create(spec, "web")
    assert parse(t.CREATE, None, spec.to_data()) == c.Create(spec, None)


def test_create_refuses_a_bad_name_and_a_bad_spec(tmp_path: Path) -> None:
    data = RunSpec(rootfs=str(tmp_path), args=("sleep", "1")).to_data()
    assert refused(t.CREATE, None, {**data, "name": "-web"}).startswith(
        "invalid container name '-web'")
    assert refused(t.CREATE, None, {**data, "colour": "red"}) == "unknown run option(s): colour"


def test_create_does_not_change_the_callers_args(tmp_path: Path) -> None:
    data = {**RunSpec(rootfs=str(tmp_path), args=("sleep", "1")).to_data(), "name": "web"}
    parse(t.CREATE, None, data)
    assert data["name"] == "web"


def test_ps() -> None:
    assert parse(t.PS, None, {}) == c.Ps(False)
    assert parse(t.PS, None, {"all": True}) == c.Ps(True)
    assert refused(t.PS, None, {"all": 1}) == "invalid all 1: must be true or false"
    assert refused(t.PS, None, {"all": "yes"}) == "invalid all 'yes': must be true or false"


def test_ping_rebuild_verify_audit() -> None:
    assert parse(t.PING, None, {}) == c.Ping()
    assert parse(t.REBUILD, None, {}) == c.Rebuild(False)
    assert parse(t.REBUILD, None, {"verify": True}) == c.Rebuild(True)
    assert parse(t.VERIFY_AUDIT, None, {}) == c.VerifyAudit()


def test_events_defaults() -> None:
    parsed = parse(t.EVENTS, None, {})
    assert parsed == c.Events(0, 500, None, None, None, None)
    assert not parsed.filtered


def test_events_with_every_filter() -> None:
    parsed = parse(t.EVENTS, None, {
        "after": 7, "limit": MAX_EVENTS_PAGE, "types": ["container.started"],
        "container": "web", "since": "2024-01-02T03:04:05+02:00",
        "until": "2024-01-02T05:00:00Z"})
    assert isinstance(parsed, c.Events)
    assert parsed == c.Events(7, MAX_EVENTS_PAGE, ("container.started",), "web",
                              datetime(2024, 1, 2, 1, 4, 5, tzinfo=UTC),
                              datetime(2024, 1, 2, 5, 0, 0, tzinfo=UTC))
    assert parsed.since is not None and parsed.since.tzinfo is UTC
    assert parsed.filtered


@pytest.mark.parametrize("events", [
    c.Events(types=()), c.Events(container="web"),
    c.Events(since=datetime(2024, 1, 1, tzinfo=UTC)),
    c.Events(until=datetime(2024, 1, 1, tzinfo=UTC)),
])
def test_events_filtered_by_any_one_filter(events: c.Events) -> None:
    assert events.filtered
    assert not c.Events(after=3, limit=5).filtered


def test_events_limits() -> None:
    assert parse(t.EVENTS, None, {"limit": 1}) == c.Events(limit=1)
    assert refused(t.EVENTS, None, {"limit": 0}) == "invalid limit 0"
    assert refused(t.EVENTS, None, {"limit": MAX_EVENTS_PAGE + 1}) == "invalid limit 1001"
    assert refused(t.EVENTS, None, {"after": -1}) == "invalid after -1"
    assert refused(t.EVENTS, None, {"after": True}) == "invalid after True"
    assert refused(t.EVENTS, None, {"after": 1.0}) == "invalid after 1.0"
    assert parse(t.EVENTS, None, {"after": 0}) == c.Events(after=0)


def test_events_refuses_bad_filters() -> None:
    assert refused(t.EVENTS, None, {"types": "container.started"}) == (
        "event type filter must be a list of strings")
    assert refused(t.EVENTS, None, {"types": ["a", 1]}) == (
        "event type filter must be a list of strings")
    assert refused(t.EVENTS, None, {"container": 5}) == (
        "the container filter must be a container reference")
    assert parse(t.EVENTS, None, {"types": []}) == c.Events(types=())


def test_times() -> None:
    assert refused(t.EVENTS, None, {"since": 5}) == "expected an ISO 8601 time, got 5"
    assert refused(t.EVENTS, None, {"until": "yesterday"}) == "bad ISO 8601 time 'yesterday'"
    assert refused(t.EVENTS, None, {"since": "2024-01-02T03:04:05"}) == (
        "time '2024-01-02T03:04:05' has no UTC offset")
    east = timezone(timedelta(hours=5))
    parsed = parse(t.EVENTS, None, {"until": datetime(2024, 1, 1, 5, tzinfo=east).isoformat()})
    assert isinstance(parsed, c.Events)
    assert parsed.until == datetime(2024, 1, 1, 0, tzinfo=UTC)
    assert parsed.until is not None and parsed.until.utcoffset() == timedelta(0)


def test_state_at() -> None:
    assert parse(t.STATE, None, {}) == c.StateAt(None, None, None)
    assert parse(t.STATE, "web", {"at_position": 0}) == c.StateAt("web", 0, None)
    assert parse(t.STATE, "web", {"at_position": 12}) == c.StateAt("web", 12, None)
    assert parse(t.STATE, None, {"at_time": "2024-01-01T00:00:00+00:00"}) == c.StateAt(
        None, None, datetime(2024, 1, 1, tzinfo=UTC))
    assert refused(t.STATE, "web", {"at_position": -1}) == "invalid at_position -1"


# ------------------------------------------------------------------ the container reference


def test_unknown_command_type() -> None:
    assert refused("container.fly", "web", {}) == "unknown command type 'container.fly'"


@pytest.mark.parametrize("command_type", sorted(
    t.CONTAINER_COMMANDS - {t.CREATE, t.RUN} | {t.INSPECT, t.RESOLVE, t.HISTORY, t.LOGS}))
def test_a_container_command_needs_a_container(command_type: str) -> None:
    """Every command about a container names it; create and run make one."""
    assert refused(command_type, None, {}) == f"{command_type} needs a container"
    assert refused(command_type, "", {}) == f"{command_type} needs a container"


def test_changes_need_a_valid_container_id_reads_take_any_reference() -> None:
    assert refused(t.START, "a/b", {}).startswith("invalid container id 'a/b'")
    assert parse(t.INSPECT, "a/b", {}) == c.Inspect("a/b")
    assert parse(t.RESOLVE, "a b", {}) == c.Resolve("a b")
    assert parse(t.HISTORY, "x/y", {}) == c.History("x/y")
    assert parse(t.HISTORY, "web", {"all": True}) == c.History("web", all=True)
    assert refused(t.HISTORY, "web", {"all": "yes"}) == "invalid all 'yes': must be true or false"


# ------------------------------------------------------------------ changes


def test_simple_changes() -> None:
    assert parse(t.START, "web", {}) == c.Start("web")
    assert parse(t.PAUSE, "web", {}) == c.Pause("web")
    assert parse(t.UNPAUSE, "web", {}) == c.Unpause("web")


def test_stop() -> None:
    assert parse(t.STOP, "web", {}) == c.Stop("web", 10.0)
    assert parse(t.STOP, "web", {"timeout": 0}) == c.Stop("web", 0.0)
    parsed = parse(t.STOP, "web", {"timeout": 3})
    assert parsed == c.Stop("web", 3.0)
    assert isinstance(parsed, c.Stop) and type(parsed.timeout) is float
    assert parse(t.STOP, "web", {"timeout": MAX_STOP_TIMEOUT}) == c.Stop(
        "web", MAX_STOP_TIMEOUT)
    assert refused(t.STOP, "web", {"timeout": -0.5}) == (
        "invalid timeout -0.5: must be a number >= 0 and <= 3.1536e+07")
    assert refused(t.STOP, "web", {"timeout": MAX_STOP_TIMEOUT + 1}).startswith(
        "invalid timeout 31536001.0")
    assert refused(t.STOP, "web", {"timeout": math.nan}).startswith("invalid timeout nan")
    assert refused(t.STOP, "web", {"timeout": True}).startswith("invalid timeout True")
    assert refused(t.STOP, "web", {"timeout": "5"}).startswith("invalid timeout '5'")


def test_kill() -> None:
    assert parse(t.KILL, "web", {}) == c.Kill("web", 9)
    assert parse(t.KILL, "web", {"signal": "TERM"}) == c.Kill("web", 15)
    assert refused(t.KILL, "web", {"signal": "NOPE"}) == (
        "invalid signal 'NOPE': unknown signal name")


def test_exec() -> None:
    assert parse(t.EXEC, "web", {"cmd": ["ls", "-l"]}) == c.Exec("web", ("ls", "-l"))
    parsed = parse(t.EXEC, "web", {"cmd": ["sh"], "env": ["A=1"], "cwd": "/tmp",
                                     "user": "1000", "tty": True, "session_id": "s1"})
    assert parsed == c.Exec("web", ("sh",), ("A=1",), "/tmp", "1000", True, "s1")
    assert refused(t.EXEC, "web", {"cmd": ["sh"], "session_id": ""}) == (
        "an exec session needs a non-empty session id")


def test_exec_refusals() -> None:
    empty = "the exec command is empty: name a program to run"
    assert refused(t.EXEC, "web", {}) == empty
    assert refused(t.EXEC, "web", {"cmd": []}) == empty
    assert refused(t.EXEC, "web", {"cmd": "ls"}) == "invalid cmd: must be a list of strings"
    assert refused(t.EXEC, "web", {"cmd": ["ls", 1]}) == "invalid cmd: must be a list of strings"
    assert refused(t.EXEC, "web", {"cmd": ["ls"], "env": [1]}) == (
        "invalid env: must be a list of strings")
    assert refused(t.EXEC, "web", {"cmd": ["ls"], "cwd": 5}) == (
        "invalid cwd 5: must be a string")
    assert refused(t.EXEC, "web", {"cmd": ["ls"], "tty": "no"}) == (
        "invalid tty 'no': must be true or false")
    assert refused(t.EXEC, "web", {"cmd": ["ls"], "session_id": "a/b"}).startswith(
        "invalid exec session id 'a/b'")


def test_checkpoint_restore_remove() -> None:
    assert parse(t.CHECKPOINT, "web", {}) == c.Checkpoint("web", False, False)
    assert parse(t.CHECKPOINT, "web", {"leave_running": True}) == c.Checkpoint(
        "web", True, False)
    assert parse(t.CHECKPOINT, "web", {"tcp_established": True}) == c.Checkpoint(
        "web", False, True)
    assert parse(t.RESTORE, "web", {}) == c.Restore("web", False)
    assert parse(t.RESTORE, "web", {"tcp_established": True}) == c.Restore("web", True)
    assert parse(t.REMOVE, "web", {}) == c.Remove("web", False)
    assert parse(t.REMOVE, "web", {"force": True}) == c.Remove("web", True)


# ------------------------------------------------------------------ container reads


def test_wait() -> None:
    assert parse(t.WAIT, "web", {}) == c.Wait("web", None)
    assert parse(t.WAIT, "web", {"timeout": None}) == c.Wait("web", None)
    assert parse(t.WAIT, "web", {"timeout": 0}) == c.Wait("web", 0.0)
    assert parse(t.WAIT, "web", {"timeout": 2.5}) == c.Wait("web", 2.5)
    assert refused(t.WAIT, "web", {"timeout": -1}) == (
        "invalid timeout -1: must be a number >= 0 and <= 3.1536e+07")


def test_wait_for_a_condition() -> None:
    assert parse(t.WAIT, "web", {}).condition == "exited"
    assert parse(t.WAIT, "web", {"condition": "healthy"}) == c.Wait("web", None, "healthy")
    assert parse(t.WAIT, "web", {"condition": "running", "timeout": 3}) == c.Wait(
        "web", 3.0, "running")
    assert parse(t.WAIT, "web", {"condition": "exited"}) == c.Wait("web", None, "exited")
    for bad in ("stopped", "", ["healthy"]):
        assert refused(t.WAIT, "web", {"condition": bad}) == (
            f"invalid wait condition {bad!r}: use exited, running or healthy")
    assert refused(t.WAIT, "web", {"condition": "nope", "timeout": 1}).startswith(
        "invalid wait condition")


def test_update_takes_the_values_given() -> None:
    cid = "a" * 64
    mib = 1024 * 1024
    assert parse(t.UPDATE, cid, {"memory": 4 * mib, "pids_limit": 1, "cpus": 0.01,
                                   "restart": "on-failure:2"}) == c.Update(
        cid, 4 * mib, 1, 0.01, "on-failure:2")
    assert parse(t.UPDATE, cid, {"cpus": 1024}) == c.Update(cid, cpus=1024.0)
    assert parse(t.UPDATE, cid, {"restart": "no", "memory": None}).changes() == {
        "restart": "no"}
    assert c.Update(cid, 4 * mib, 2, 0.5, "always").changes() == {
        "memory": 4 * mib, "pids_limit": 2, "cpus": 0.5, "restart": "always"}
    assert refused(t.UPDATE, cid, {}) == ("nothing to update: give --memory, --pids-limit, "
                                          "--cpus or --restart")
    assert refused(t.UPDATE, cid, {"memory": 4 * mib - 1}) == f"invalid memory {4 * mib - 1}"
    assert refused(t.UPDATE, cid, {"pids_limit": 0}) == "invalid pids_limit 0"
    assert refused(t.UPDATE, cid, {"cpus": 0.001}).startswith("invalid cpus 0.001")
    assert refused(t.UPDATE, cid, {"cpus": 1025}).startswith("invalid cpus 1025")
    assert refused(t.UPDATE, cid, {"restart": "often"}).startswith(
        "invalid restart policy 'often'")


def test_healthcheck_top_and_stats_name_a_container() -> None:
    assert parse(t.HEALTHCHECK, "web", {}) == c.Healthcheck("web")
    assert parse(t.TOP, "web", {}) == c.Top("web")
    assert parse(t.STATS, "web", {}) == c.Stats("web")
    for kind in (t.HEALTHCHECK, t.TOP, t.STATS):
        assert refused(kind, None, {}).startswith(f"{kind} needs a container")


def test_logs() -> None:
    assert parse(t.LOGS, "web", {}) == c.Logs("web", 0, 0)
    assert parse(t.LOGS, "web", {"offset": 10, "wait_ms": MAX_LOG_WAIT_MS}) == c.Logs(
        "web", 10, MAX_LOG_WAIT_MS)
    assert refused(t.LOGS, "web", {"wait_ms": MAX_LOG_WAIT_MS + 1}) == "invalid wait_ms 5001"
    assert refused(t.LOGS, "web", {"offset": -1}) == "invalid offset -1"


def test_rename() -> None:
    assert parse(t.RENAME, "web", {"name": "db"}) == c.Rename("web", "db")
    assert "invalid container name" in refused(t.RENAME, "web", {"name": "a:b"})
    assert "invalid container name" in refused(t.RENAME, "web", {})


def test_copy() -> None:
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.addfile(tarfile.TarInfo("f"), io.BytesIO(b""))
    tar_bytes = buffer.getvalue()
    assert parse(t.COPY_IN, "web", {"path": "/tmp", "data": tar_bytes}) == c.CopyIn(
        "web", "/tmp", tar_bytes)
    assert "not a tar" in refused(t.COPY_IN, "web", {"path": "/tmp", "data": b"x" * 600})
    assert parse(t.COPY_OUT, "web", {"path": "/etc/x"}) == c.CopyOut("web", "/etc/x")
    assert "absolute" in refused(t.COPY_OUT, "web", {"path": "etc"})
    assert "bytes" in refused(t.COPY_IN, "web", {"path": "/tmp", "data": "text"})
    tid = "0f0e0d0c-0b0a-4000-8000-000000000001"
    # a copy in pieces: its last piece need not be a tar on its own
    assert parse(t.COPY_IN, "web", {"path": "/t", "data": b"x", "transfer": tid}) == \
        c.CopyIn("web", "/t", b"x", tid)
    assert parse(t.COPY_CHUNK, "web", {"transfer": tid, "offset": 5, "data": b"y"}) == \
        c.CopyChunk("web", tid, 5, b"y")
    assert "transfer" in refused(t.COPY_CHUNK, "web", {"offset": 0, "data": b"y"})
    assert "at most" in refused(t.COPY_CHUNK, "web", {"transfer": tid, "data": b"y" * 800_000})
    assert parse(t.COPY_OUT, "web", {"path": "/x", "transfer": tid, "offset": 9}) == \
        c.CopyOut("web", "/x", tid, 9)


def test_every_command_type_parses(tmp_path: Path) -> None:
    """No command type falls through to the wrong typed command."""
    expected = {
        t.START: c.Start, t.STOP: c.Stop, t.KILL: c.Kill, t.PAUSE: c.Pause,
        t.UNPAUSE: c.Unpause, t.CHECKPOINT: c.Checkpoint, t.RESTORE: c.Restore,
        t.REMOVE: c.Remove, t.WAIT: c.Wait, t.INSPECT: c.Inspect, t.RESOLVE: c.Resolve,
        t.HISTORY: c.History, t.LOGS: c.Logs, t.PS: c.Ps, t.EVENTS: c.Events,
        t.STATE: c.StateAt, t.PING: c.Ping, t.REBUILD: c.Rebuild,
        t.VERIFY_AUDIT: c.VerifyAudit, t.AUDIT_CHECKPOINT: c.AuditCheckpoint,
        t.AUDIT_PROVE: c.AuditProve, t.AUDIT_CONSISTENCY: c.AuditConsistency,
        t.AUDIT_EXPORT: c.AuditExport, t.HEALTHCHECK: c.Healthcheck, t.TOP: c.Top,
        t.STATS: c.Stats, t.RENAME: c.Rename, t.INFO: c.Info, t.COPY_OUT: c.CopyOut,
        # volumes
        t.VOLUME_CREATE: c.VolumeCreate, t.VOLUME_REMOVE: c.VolumeRemove,
        t.VOLUME_PRUNE: c.VolumePrune, t.VOLUME_LS: c.VolumeLs, t.VOLUME_INSPECT: c.VolumeInspect,
        # networks
        t.NETWORK_CREATE: c.NetworkCreate, t.NETWORK_REMOVE: c.NetworkRemove,
        t.NETWORKS: c.Networks, t.NETWORK_INSPECT: c.NetworkInspect,
        # stdio streams over tcp
        t.STREAM: c.StreamLocation,
    }
    assert type(parse(t.UPDATE, "a" * 64, {"cpus": 1})) is c.Update
    assert type(parse(t.RUN, None, {"rootfs": str(tmp_path), "args": ["true"]})) is c.Run
    assert set(expected) | {t.CREATE, t.EXEC, t.UPDATE, t.COPY_IN, t.COPY_CHUNK,
                            t.RUN} == (
        set(t.COMMAND_TYPES) - t.IMAGE_COMMANDS - t.STACK_COMMANDS)  # compose: tests/compose
    special = {t.VOLUME_CREATE: {"name": "v"}, t.VOLUME_INSPECT: {"name": "v"},
               t.VOLUME_REMOVE: {"names": ["v"]}}
    for command_type, kind in expected.items():
        args = special.get(command_type, {"position": 1, "name": "web2", "path": "/x"})
        assert type(parse(command_type, "web", args)) is kind, command_type


# ------------------------------------------------------------------ admin and audit


def test_rebuild_flags() -> None:
    assert parse(t.REBUILD, None, {"force": True}) == c.Rebuild(False, True)
    assert parse(t.REBUILD, None, {"verify": True, "force": True}) == c.Rebuild(True, True)
    assert refused(t.REBUILD, None, {"force": "yes"}) == (
        "invalid force 'yes': must be true or false")


def test_verify_audit_takes_lists_of_heads_and_32_byte_keys() -> None:
    key = bytes(range(32))
    assert parse(t.VERIFY_AUDIT, None, {}) == c.VerifyAudit((), ())
    assert parse(t.VERIFY_AUDIT, None, {"keys": [key]}) == c.VerifyAudit((), (key,))
    assert parse(t.VERIFY_AUDIT, None, {"heads": [], "keys": []}) == c.VerifyAudit()
    lists = "invalid heads or keys: lists expected"
    assert refused(t.VERIFY_AUDIT, None, {"heads": "h"}) == lists
    assert refused(t.VERIFY_AUDIT, None, {"keys": key}) == lists
    assert refused(t.VERIFY_AUDIT, None, {"heads": [{}] * 1001}) == lists
    short = "invalid keys: 32-byte Ed25519 public keys expected"
    assert refused(t.VERIFY_AUDIT, None, {"keys": [key[:31]]}) == short
    assert refused(t.VERIFY_AUDIT, None, {"keys": [key + b"x"]}) == short
    assert refused(t.VERIFY_AUDIT, None, {"keys": ["a" * 32]}) == short


def test_audit_checkpoint_and_consistency() -> None:
    assert parse(t.AUDIT_CHECKPOINT, None, {}) == c.AuditCheckpoint()
    assert parse(t.AUDIT_CONSISTENCY, None, {}) == c.AuditConsistency(0)
    assert parse(t.AUDIT_CONSISTENCY, None, {"first": 7}) == c.AuditConsistency(7)
    assert refused(t.AUDIT_CONSISTENCY, None, {"first": -1}) == "invalid first -1"


def test_audit_prove() -> None:
    assert parse(t.AUDIT_PROVE, None, {"position": 1}) == c.AuditProve(1, None)
    assert parse(t.AUDIT_PROVE, None, {"position": 3, "size": 1}) == c.AuditProve(3, 1)
    assert parse(t.AUDIT_PROVE, None, {"position": 3, "size": None}) == c.AuditProve(3, None)
    assert refused(t.AUDIT_PROVE, None, {}) == "invalid position 0"
    assert refused(t.AUDIT_PROVE, None, {"position": 0}) == "invalid position 0"
    assert refused(t.AUDIT_PROVE, None, {"position": 1, "size": 0}) == "invalid size 0"
    assert refused(t.AUDIT_PROVE, None, {"position": 1, "size": "2"}) == "invalid size '2'"


def test_audit_export() -> None:
    assert parse(t.AUDIT_EXPORT, None, {}) == c.AuditExport(0, 1000)
    assert parse(t.AUDIT_EXPORT, None, {"after": 4, "limit": 1}) == c.AuditExport(4, 1)
    assert parse(t.AUDIT_EXPORT, None, {"limit": 5000}) == c.AuditExport(0, 5000)
    assert refused(t.AUDIT_EXPORT, None, {"limit": 0}) == "invalid limit 0"
    assert refused(t.AUDIT_EXPORT, None, {"limit": 5001}) == "invalid limit 5001"
    assert refused(t.AUDIT_EXPORT, None, {"after": -1}) == "invalid after -1"


def test_verify_audit_reads_each_head() -> None:
    head = {"size": 3, "root": "ab" * 32, "timestamp_us": 5, "node": "n1"}
    parsed = parse(t.VERIFY_AUDIT, None, {"heads": [head]})
    assert isinstance(parsed, c.VerifyAudit)
    assert [(h.size, h.root, h.timestamp_us, h.node) for h in parsed.heads] == [
        (3, bytes.fromhex("ab" * 32), 5, "n1")]
    # a thousand heads is still a list the parser reads (and here refuses head by head)
    assert refused(t.VERIFY_AUDIT, None, {"heads": [{}] * 1000}) == "not a tree head: 'size'"


def test_every_command_type_has_exactly_one_parser() -> None:
    """The table names each wire type once: a type in two features' groups would go to
    whichever came last, one in none would be refused as unknown."""
    groups = [KERNEL_COMMANDS, CONTAINER_PARSED, t.VOLUME_COMMANDS, NETWORK_PARSED,
              t.AUDIT_COMMANDS, t.IMAGE_COMMANDS, t.STACK_COMMANDS]
    assert sum(len(g) for g in groups) == len(t.COMMAND_TYPES)
    assert set(PARSERS) == set(t.COMMAND_TYPES)
    assert refused("container.nothing", "web", {}) == "unknown command type 'container.nothing'"


def test_image_and_stack_commands_reach_their_own_parsers() -> None:
    """The parse table hands image and stack types to their features' parsers (a wrong
    hand-over once raised TypeError for every image command, unseen here)."""
    from engine.compose.commands import StackRemove
    from engine.images.commands import ListImages, Pull

    pulled = parse(t.IMAGE_PULL, None, {"reference": "busybox:1"})
    assert isinstance(pulled, Pull) and pulled.reference == "busybox:1"
    assert isinstance(parse(t.IMAGE_LIST, None, {}), ListImages)
    removed = parse(t.STACK_REMOVE, None, {"project": "web", "volumes": True})
    assert removed == StackRemove("web", True)
    with pytest.raises(InvalidArgument):
        parse(t.IMAGE_PULL, None, {"reference": "Bad Ref"})
