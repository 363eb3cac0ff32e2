"""The mount forms and the volume rules, without processes: pure functions only."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine import events as ev
from engine.containers.mountspec import Mount, parse_mount, parse_tmpfs, parse_volume
from engine.containers.ocimounts import oci_mount, with_mounts
from engine.containers.projection import ContainerState
from engine.containers.spec import RunSpec, spec_from_user
from engine.errors import AlreadyExists, InvalidArgument, NotFound, Refused
from engine.volumes import rules as v


def refusal(fn: object, *args: object) -> str:
    with pytest.raises(InvalidArgument) as info:
        fn(*args)  # type: ignore[operator]
    return info.value.message


def test_the_three_forms_give_one_typed_mount() -> None:
    assert parse_volume("/srv/www:/var/www:ro") == Mount("bind", "/var/www", "/srv/www", True)
    assert parse_volume("pgdata:/var/lib/pg") == Mount("volume", "/var/lib/pg", "pgdata")
    assert parse_volume("pgdata:/var/lib/pg/:rw") == Mount("volume", "/var/lib/pg", "pgdata")
    assert parse_mount("type=bind,src=/a,dst=/b,readonly") == Mount("bind", "/b", "/a", True)
    assert parse_mount("source=v1,destination=/d,ro=false") == Mount("volume", "/d", "v1")
    assert parse_mount("type=tmpfs,target=/t,tmpfs-size=2m,tmpfs-mode=700") == Mount(
        "tmpfs", "/t", "", False, 2 * 1024 * 1024, 0o700)
    assert parse_tmpfs("/run:size=64k,mode=1777,ro") == Mount("tmpfs", "/run", "", True,
                                                               65536, 0o1777)
    assert parse_tmpfs("/cache") == Mount("tmpfs", "/cache")


@pytest.mark.parametrize(("text", "expect"), [
    ("data/sub:/var", "is not an absolute path"),
    ("./data:/var", "is not an absolute path"),
    ("/srv:var", "is not an absolute path"),
    ("/srv:/proc", "cannot mount over /proc"),
    ("/srv:/sys/fs/cgroup", "cannot mount over /sys/fs/cgroup"),
    ("/srv:/", "cannot mount over /"),
    ("/srv:/dev", "cannot mount over /dev"),
    ("/srv:/x/../proc", "cannot mount over /proc"),
    ("/srv:/var:rx", "unknown volume option 'rx'"),
    ("/srv:/var:ro,rw", "more than once"),
    ("/srv", "use HOST_PATH:CTR_PATH"),
    (":/var", "use HOST_PATH:CTR_PATH"),
    ("a:/b:ro:x", "use HOST_PATH:CTR_PATH"),
    ("vol\0:/var", "NUL byte"),
    ("-v:/var", "invalid volume name"),
])
def test_bad_volumes_are_one_sentence(text: str, expect: str) -> None:
    assert expect in refusal(parse_volume, text)


@pytest.mark.parametrize(("text", "expect"), [
    ("type=bind,target=/x", "needs a source"),
    ("type=overlay,src=a,dst=/x", "unknown mount type 'overlay'"),
    ("src=a,dst=/x,propagation=shared", "unknown mount option"),
    ("src=a,dst=/x,dst=/y", "given twice"),
    ("src=a", "has no target"),
    ("type=volume,src=a,dst=/x,tmpfs-size=1m", "tmpfs options"),
    ("type=tmpfs,src=a,dst=/x", "takes no source"),
    ("type=tmpfs,dst=/x,tmpfs-size=lots", "invalid tmpfs size"),
    ("type=tmpfs,dst=/x,tmpfs-mode=999", "invalid tmpfs mode"),
    ("type=bind,src=rel,dst=/x", "is not an absolute path"),
    ("src=a/b,dst=/x", "invalid volume name"),
    ("src=a,dst=/x,readonly=maybe", "use true or false"),
])
def test_bad_mount_flags_are_one_sentence(text: str, expect: str) -> None:
    assert expect in refusal(parse_mount, text)


@pytest.mark.parametrize(("text", "expect"), [
    ("/sys", "cannot mount over /sys"),
    ("tmp", "is not an absolute path"),
    ("/t:size=0", "invalid tmpfs size"),
    ("/t:uid=0", "unknown or repeated tmpfs option"),
    ("/t:size=1m,size=2m", "unknown or repeated tmpfs option"),
])
def test_bad_tmpfs_is_one_sentence(text: str, expect: str) -> None:
    assert expect in refusal(parse_tmpfs, text)


def test_the_spec_refuses_duplicate_targets_and_missing_host_paths(tmp_path: Path) -> None:
    user = {"rootfs": str(tmp_path), "args": ["true"]}
    assert "given twice" in refusal(spec_from_user,
                                    {**user, "volumes": ["a:/data"], "tmpfs": ["/data"]})
    assert "must be a list of strings" in refusal(spec_from_user, {**user, "volumes": "a:/d"})
    spec = RunSpec.from_data(spec_from_user({**user, "volumes": ["/no/such/dir/x1:/data"]}))
    with pytest.raises(InvalidArgument, match="does not exist on this host"):
        spec.validate()
    ok = RunSpec.from_data(spec_from_user({**user, "volumes": [f"{tmp_path}:/data"]}))
    assert ok.validate() is ok


def test_mounts_travel_in_the_spec_and_back() -> None:
    data = spec_from_user({"rootfs": "/r", "args": ["true"], "volumes": ["v1:/data:ro"],
                           "mount": ["type=bind,src=/srv,dst=/srv"], "tmpfs": ["/run:size=1m"]})
    spec = RunSpec.from_data(data)
    assert [m.type for m in spec.mounts] == ["volume", "bind", "tmpfs"]
    assert RunSpec.from_data(spec.to_data()) == spec
    created = ev.ContainerCreated("web", "n1", "/b", spec)
    assert ev.event_from_data(created.type, created.to_data()) == created
    # An old stored spec, from before mounts, still loads (with none).
    old = {k: val for k, val in spec.to_data().items() if k != "mounts"}
    assert RunSpec.from_data(old).mounts == ()
    assert "unknown mount option(s): propagation" in refusal(
        RunSpec.from_data, {**spec.to_data(), "mounts": [{"type": "tmpfs", "target": "/t",
                                                          "propagation": "shared"}]})


def test_oci_mounts_replace_defaults_and_go_parents_first() -> None:
    defaults = [{"destination": "/proc", "type": "proc"}, {"destination": "/tmp", "type": "tmpfs"}]
    mounts = [Mount("bind", "/data/logs", "/srv/logs", True), Mount("volume", "/data", "v1"),
              Mount("tmpfs", "/tmp", size=1024, mode=0o700)]
    out = with_mounts(defaults, mounts, "/root/volumes")
    assert [m["destination"] for m in out] == ["/proc", "/data", "/tmp", "/data/logs"]
    assert out[1] == {"destination": "/data", "type": "bind", "source": "/root/volumes/v1/_data",
                      "options": ["rbind", "rprivate", "nosuid", "nodev", "rw"]}
    assert out[2]["options"] == ["nosuid", "nodev", "mode=700", "size=1024", "rw"]
    assert oci_mount(mounts[0], "/v")["options"] == ["rbind", "rprivate", "ro"]


# --------------------------------------------------------------------------- volume rules


def _recorded(stream: str, version: int, event: ev.Event) -> ev.RecordedEvent:
    meta = ev.Metadata(stream, version, version, event.type, datetime.now(UTC), "c", "c", "a", "n1")
    return ev.RecordedEvent(meta, event)


def _container(name: str, volume: str, removed: bool = False) -> ContainerState:
    spec = RunSpec("/r", ("true",), mounts=(Mount("volume", "/d", volume),))
    return ContainerState(id=name * 8, name=name, node="n1", bundle="/b", spec=spec,
                          state="removed" if removed else "exited",
                          created_at=datetime.now(UTC), version=1, last_position=1)


def test_volume_state_is_folded_from_its_stream() -> None:
    s = v.stream_of("v1")
    log = [_recorded(s, 1, ev.VolumeCreated("v1", "n1", (("a", "b"),))),
           _recorded(s, 2, ev.VolumeRemoved("v1")),
           _recorded(s, 3, ev.VolumeCreated("v1", "n1", (), implicit=True)),
           _recorded(v.stream_of("v2"), 1, ev.VolumeCreated("v2", "n1")),
           _recorded(v.stream_of("v2"), 2, ev.VolumeRemoved("v2"))]
    state = v.fold_volume("v1", log[:3])
    assert (state.exists, state.version, state.labels, state.implicit) == (True, 3, (), True)
    assert not v.fold_volume("v1", log[:2]).exists
    assert list(v.project(log)) == ["v1"]


def test_volume_decisions() -> None:
    gone, there = v.VolumeState("v1"), v.VolumeState("v1", 1, True, "n1")
    assert v.decide_create(gone, "n1", ()) == [ev.VolumeCreated("v1", "n1", ())]
    assert v.decide_create(there, "n1", (), implicit=True) == []
    with pytest.raises(AlreadyExists):
        v.decide_create(there, "n1", ())
    users = v.users("v1", [_container("a", "v1"), _container("b", "v2"),
                           _container("c", "v1", removed=True)])
    assert [u.name for u in users] == ["a"]
    with pytest.raises(Refused, match="in use by container"):
        v.decide_remove(there, "n1", users)
    assert v.decide_remove(there, "n1", []) == [ev.VolumeRemoved("v1")]
    with pytest.raises(NotFound):
        v.decide_remove(gone, "n1", [])
    assert v.decide_remove(gone, "n1", [], force=True) == []
    volumes = {"v1": there, "v2": v.VolumeState("v2", 1, True, "n1"),
               "v3": v.VolumeState("v3", 1, True, "n2")}
    assert v.prunable(volumes, "n1", [_container("a", "v1")]) == ["v2"]
