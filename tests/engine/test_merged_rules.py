"""The rules this session's capabilities added to the core, each branch pinned: exec's
stdio options, rename and copy-in plans, volume and update commands, network text
options. Fast unit tests (the mutation run uses them)."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

import pytest

from engine import command_types as t
from engine import commands as c
from engine import events as ev
from engine.containers import decide as d
from engine.errors import InvalidArgument, InvalidState, NotFound
from engine.parsing import parse
from tests.engine.states import recorded, state

NOW = datetime(2026, 1, 1, tzinfo=UTC)

CID = "a" * 64


def test_exec_takes_its_stdio_options() -> None:
    session = str(uuid.uuid4())
    full = parse(t.EXEC, CID, {"cmd": ["sh"], "env": ["A=1"], "cwd": "/x", "user": "1:2",
                                 "tty": True, "session_id": session, "stdin": True,
                                 "streamed": True, "height": 24, "width": 80})
    assert full == c.Exec(CID, ("sh",), ("A=1",), "/x", "1:2", True, session, True, True,
                          (24, 80))
    plain = parse(t.EXEC, CID, {"cmd": ["true"]})
    assert plain == c.Exec(CID, ("true",))
    assert (plain.stdin, plain.streamed, plain.console, plain.tty) == (False, False, (0, 0),
                                                                      False)
    assert parse(t.EXEC, CID, {"cmd": ["true"], "height": 65535, "width": 0}).console == (
        65535, 0)
    for key in ("height", "width"):
        with pytest.raises(InvalidArgument, match=key):
            parse(t.EXEC, CID, {"cmd": ["true"], key: 65536})
        with pytest.raises(InvalidArgument, match=key):
            parse(t.EXEC, CID, {"cmd": ["true"], key: -1})
    for key in ("stdin", "streamed"):
        with pytest.raises(InvalidArgument, match=key):
            parse(t.EXEC, CID, {"cmd": ["true"], key: "yes"})


def test_rename_records_the_new_name_or_nothing() -> None:
    s = state("running")
    same = d.decide(s, c.Rename(s.id, s.name))
    assert same.before == () and same.steps == ()
    assert same.result == {"id": s.id, "name": s.name}
    other = d.decide(s, c.Rename(s.id, "db"))
    assert other.before == (ev.Renamed("db"),) and other.steps == ()
    assert other.result == {"id": s.id, "name": "db"}
    for name in ("created", "exited", "paused"):
        assert d.decide(state(name), c.Rename(CID, "x")).before == (ev.Renamed("x"),)
    with pytest.raises(NotFound):
        d.decide(state("removed"), c.Rename(CID, "x"))
    with pytest.raises(NotFound):
        d.decide(None, c.Rename(CID, "x"))


def test_copy_in_records_the_archive_digest_before_writing() -> None:
    data = b"tar bytes"
    plan = d.decide(state("exited"), c.CopyIn(CID, "/data", data))
    assert plan.steps == (d.Step.COPY_IN,)
    assert plan.before == (ev.CopiedIn("/data", len(data), hashlib.sha256(data).hexdigest()),)
    with pytest.raises(InvalidState) as err:
        d.decide(state("running"), c.CopyIn(CID, "/data", data, transfer="t1"))
    assert str(err.value) == ("the earlier pieces of this copy are gone (it took too long, "
                              "or the worker restarted): copy again")
    facts = d.Facts(container_id=CID, node="n1")
    assert plan.then(facts) == (ev.CopyFinished("/data", len(data)),)


def test_a_copy_cut_short_after_its_intent_is_written_by_the_resend() -> None:
    data = b"tar bytes"
    intent = recorded(CID, 3, ev.CopiedIn("/data", len(data), hashlib.sha256(data).hexdigest()))
    command = c.CopyIn(CID, "/data", data)
    resumed = d.resume(state("running"), command, [intent], [], NOW)
    assert resumed is not None
    again, plan = resumed
    assert again == command
    assert plan.steps == (d.Step.COPY_IN,) and plan.before == ()
    assert plan.then(d.Facts(container_id=CID, node="n1")) == (
        ev.CopyFinished("/data", len(data)),)
    # the path the intent names (as the first attempt judged it lands), not the resend's
    into = recorded(CID, 3, ev.CopiedIn("/data/", len(data), hashlib.sha256(data).hexdigest()))
    resumed = d.resume(state("running"), command, [into], [], NOW)
    assert resumed is not None
    assert resumed[0] == c.CopyIn(CID, "/data/", data)
    assert resumed[1].then(d.Facts(container_id=CID, node="n1")) == (
        ev.CopyFinished("/data/", len(data)),)
    # stopped containers take files too; no intent in the first attempt: replay it
    assert d.resume(state("exited"), command, [intent], [], NOW) is not None
    assert d.resume(state("running"), command, [], [], NOW) is None
    with pytest.raises(InvalidState, match="pieces are gone: copy again"):
        d.resume(state("running"), c.CopyIn(CID, "/data", data, transfer="t1"), [intent], [],
                 NOW)
    with pytest.raises(InvalidState, match="another archive than the copy it repeats"):
        d.resume(state("running"), c.CopyIn(CID, "/data", b"other"), [intent], [], NOW)
    assert c.CopyIn in d.RESUMABLE


def test_volume_commands() -> None:
    assert parse(t.VOLUME_CREATE, None, {"name": "v1", "labels": {"a": "b"}}) == \
        c.VolumeCreate("v1", (("a", "b"),))
    assert parse(t.VOLUME_CREATE, None, {"name": "v1"}) == c.VolumeCreate("v1", ())
    assert parse(t.VOLUME_REMOVE, None, {"names": ["v1", "v2"]}) == \
        c.VolumeRemove(("v1", "v2"), False)
    assert parse(t.VOLUME_REMOVE, None, {"names": ["v1"], "force": True}) == \
        c.VolumeRemove(("v1",), True)
    with pytest.raises(InvalidArgument) as err:
        parse(t.VOLUME_REMOVE, None, {"names": []})
    assert str(err.value) == "volume rm needs at least one volume name"
    assert parse(t.VOLUME_PRUNE, None, {}) == c.VolumePrune()
    assert parse(t.VOLUME_LS, None, {}) == c.VolumeLs()
    assert parse(t.VOLUME_INSPECT, None, {"name": "v9"}) == c.VolumeInspect("v9")
    for kind, args in ((t.VOLUME_CREATE, {"name": "a/b"}), (t.VOLUME_INSPECT, {"name": ""}),
                       (t.VOLUME_REMOVE, {"names": ["ok", "../x"]})):
        with pytest.raises(InvalidArgument):
            parse(kind, None, args)


def test_update_takes_only_what_it_changes() -> None:
    assert parse(t.UPDATE, CID, {"memory": 4 * 1024 * 1024}).changes() == {
        "memory": 4 * 1024 * 1024}
    assert parse(t.UPDATE, CID, {"pids_limit": 1}).changes() == {"pids_limit": 1}
    assert parse(t.UPDATE, CID, {"cpus": 0.01}).changes() == {"cpus": 0.01}
    assert parse(t.UPDATE, CID, {"cpus": 1024}).changes() == {"cpus": 1024}
    assert parse(t.UPDATE, CID, {"restart": "always"}).changes() == {"restart": "always"}
    both = parse(t.UPDATE, CID, {"memory": 8 * 1024 * 1024, "pids_limit": 5, "cpus": 2,
                                   "restart": "on-failure:3"})
    assert both == c.Update(CID, 8 * 1024 * 1024, 5, 2, "on-failure:3")
    for args in ({"memory": 4 * 1024 * 1024 - 1}, {"pids_limit": 0}, {"cpus": 0.009},
                 {"cpus": 1025}, {"restart": "sometimes"}):
        with pytest.raises(InvalidArgument):
            parse(t.UPDATE, CID, args)
    with pytest.raises(InvalidArgument) as err:
        parse(t.UPDATE, CID, {})
    assert str(err.value) == ("nothing to update: give --memory, --pids-limit, --cpus or "
                              "--restart")


def test_network_create_text_options() -> None:
    assert parse(t.NETWORK_CREATE, None, {"name": "n1", "subnet": "", "gateway": None}) == \
        c.NetworkCreate("n1", None, None)
    assert parse(t.NETWORK_CREATE, None, {"name": "n1", "subnet": "10.90.1.0/24",
                                            "gateway": "10.90.1.1"}) == \
        c.NetworkCreate("n1", "10.90.1.0/24", "10.90.1.1")
    with pytest.raises(InvalidArgument) as err:
        parse(t.NETWORK_CREATE, None, {"name": "n1", "subnet": 5})
    assert str(err.value) == "invalid subnet 5: must be a string"


def test_a_forced_remove_cut_short_after_its_stop_intent_is_finished() -> None:
    intent = recorded(CID, 4, ev.StopRequested(0))
    command = c.Remove(CID, force=False)  # the resend: forced or not, it finishes
    for name, steps in (("running", (d.Step.STOP, d.Step.RECORD_EXIT, d.Step.DELETE,
                                     d.Step.CLEANUP)),
                        ("paused", (d.Step.UNPAUSE, d.Step.STOP, d.Step.RECORD_EXIT,
                                    d.Step.DELETE, d.Step.CLEANUP)),
                        ("exited", (d.Step.DELETE, d.Step.CLEANUP))):
        resumed = d.resume(state(name), command, [intent], [], NOW)
        assert resumed is not None, name
        again, plan = resumed
        assert again == command and plan.steps == steps and plan.before == ()
        assert plan.then(d.Facts(container_id=CID, node="n1")) == (ev.Removed(),)
    assert d.resume(state("exited"), command, [recorded(CID, 4, ev.Started())], [],
                    NOW) is None
    assert c.Remove in d.RESUMABLE
    forced = d.decide(state("running"), c.Remove(CID, force=True))
    assert forced.before == (ev.StopRequested(0),)
    assert d.decide(state("exited"), c.Remove(CID, force=True)).before == ()
