"""Events: immutable, registered, and lossless through their msgpack payloads."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import events as ev
from engine.errors import InvalidArgument

text = st.text(min_size=1, max_size=20)
ints = st.integers(0, 2**31 - 1)
times = st.datetimes(timezones=st.just(UTC))
specs = st.builds(
    ev.RunSpec,
    rootfs=text,
    args=st.lists(text, min_size=1, max_size=4).map(tuple),
    env=st.lists(st.tuples(st.from_regex(r"[A-Z]{1,5}", fullmatch=True), st.text(max_size=8))
                 .map(lambda kv: f"{kv[0]}={kv[1]}"), max_size=3).map(tuple),
    stop_signal=st.integers(1, 64),
    memory=st.none() | st.integers(1, 2**40),
    pids_limit=st.none() | st.integers(1, 4096),
    ports=st.lists(st.builds(ev.PortMapping, st.just("0.0.0.0"), st.integers(0, 65535),
                             st.integers(0, 65535), st.sampled_from(["tcp", "udp"])),
                   max_size=2).map(tuple),
    terminal=st.booleans(), read_only=st.booleans(), auto_remove=st.booleans(),
)
any_event = st.one_of(
    st.builds(ev.ContainerCreated, name=text, node=text, bundle=text, spec=specs),
    st.builds(ev.PidReceived, pid=ints, conmon_pid=ints),
    st.builds(ev.Started),
    st.builds(ev.Signalled, signal=st.integers(1, 64)),
    st.builds(ev.StopRequested, timeout=st.integers(0, 600)),
    st.builds(ev.Exited, exit_code=st.integers(0, 255), finished_at=st.none() | times,
              expected=st.booleans(), reason=st.sampled_from(sorted(ev.EXIT_REASONS))),
    st.builds(ev.Paused), st.builds(ev.Unpaused),
    st.builds(ev.ExecStarted, session_id=text, command=st.lists(text, max_size=3).map(tuple),
              pid=ints),
    st.builds(ev.ExecExited, session_id=text, exit_code=st.integers(0, 255)),
    st.builds(ev.Checkpointed, image_path=text, leave_running=st.booleans(),
              tcp_established=st.booleans()),
    st.builds(ev.Restored, pid=ints, conmon_pid=st.none() | ints),
    st.builds(ev.Removed),
    st.builds(ev.Renamed, name=text),
    st.builds(ev.CopiedIn, path=text, size=ints, sha256=text),
    st.builds(ev.CommandFailed, command_type=text, code=text, message=text),
    st.builds(ev.CommandRefused, command_type=text, container=text, code=text, message=text),
    st.builds(ev.VolumeCreated, name=text, node=text,
              labels=st.dictionaries(text, text, max_size=3).map(
                  lambda d: tuple(sorted(d.items()))), implicit=st.booleans()),
    st.builds(ev.VolumeRemoved, name=text),
    *(st.builds(kind, reference=text, digest=text, image_id=text, size=ints)
      for kind in (ev.ImagePulled, ev.ImageLoaded, ev.ImageTagged, ev.ImageRemoved)),
    st.builds(ev.Restarting, attempt=ints, delay_s=st.floats(0, 60), exit_position=ints,
              exit_code=st.integers(-1, 255), policy=text),
    st.builds(ev.HealthStatus, status=st.sampled_from(sorted(ev.HEALTH_STATES)),
              exit_code=st.integers(-1, 255), output=text, failing_streak=ints),
    st.builds(ev.Updated, old=st.fixed_dictionaries({"memory": st.none() | ints}),
              new=st.fixed_dictionaries({"memory": ints, "restart": st.just("always")})),
    # networks (issue 11)
    st.builds(ev.NetworkCreated, name=text, subnet=text, gateway=text, bridge=text),
    st.builds(ev.NetworkRemoved, name=text),
    st.builds(ev.NetworkAttached, network=text, interface=text,
              addresses=st.lists(text, max_size=2).map(tuple), gateway=text, mac=text,
              ports=st.lists(st.builds(ev.PortMapping, text, st.integers(1, 65535),
                                       st.integers(1, 65535), st.sampled_from(["tcp", "udp"])),
                             max_size=2).map(tuple)),
    st.builds(ev.NetworkDetached, network=text,
              addresses=st.lists(text, max_size=2).map(tuple)),
    # compose
    st.builds(ev.StackApplied, project=text, digest=text,
              config=st.dictionaries(text, st.one_of(text, ints), max_size=3)),
    st.builds(ev.StackRemoved, project=text, volumes=st.booleans()),
)


@given(any_event)
def test_every_event_survives_msgpack(event: ev.Event) -> None:
    wire = msgpack.packb(event.to_data(), use_bin_type=True)
    back = ev.event_from_data(event.type, msgpack.unpackb(wire, raw=False))
    assert back == event
    assert type(back) is type(event)


def test_registry_covers_every_topic() -> None:
    topics = {v for k, v in vars(ev).items()
              if k.startswith(("CONTAINER_", "COMMAND_", "VOLUME_", "IMAGE_", "NETWORK_",
                              "STACK_"))
              and "." in str(v)}
    assert set(ev.EVENT_TYPES) == topics
    # 17 + 2 of volumes + 4 of images + 3 of orchestration + 4 of networks + 2 of verbs
    # + 2 of compose
    assert len(topics) == 35
    for topic, cls in ev.EVENT_TYPES.items():
        assert cls.type == topic
        assert cls.schema_version >= 1


def test_events_are_frozen() -> None:
    event = ev.Signalled(9)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.signal = 15  # type: ignore[misc]
    assert not hasattr(event, "__dict__")  # slots: no stray attributes either


def test_unknown_type_and_bad_payloads_are_refused() -> None:
    with pytest.raises(InvalidArgument):
        ev.event_from_data("container.exploded", {})
    with pytest.raises(InvalidArgument):
        ev.event_from_data(ev.CONTAINER_SIGNALLED, {"signal": 9, "extra": 1})
    with pytest.raises(InvalidArgument):
        ev.event_from_data(ev.CONTAINER_EXITED, {"exit_code": 1})  # v1 shape: mapper's job
    with pytest.raises(InvalidArgument):
        ev.Exited(1, None, False, "gremlins")


@pytest.mark.parametrize("bad", [
    {"rootfs": ""},
    {"args": ()},
    {"env": ("NOEQUALS",)},
    {"stop_signal": 0},
    {"memory": 0},
    {"ports": (ev.PortMapping("0.0.0.0", 70000, 80),)},
    {"ports": (ev.PortMapping("0.0.0.0", 80, 80, "icmp"),)},
])
def test_run_spec_refuses_bad_values(bad: dict[str, object]) -> None:
    fields: dict[str, object] = {"rootfs": "/r", "args": ("sh",)}
    fields.update(bad)
    with pytest.raises(InvalidArgument):
        ev.RunSpec(**fields)  # type: ignore[arg-type]


def test_port_mapping_is_the_plain_tuple() -> None:
    port = ev.PortMapping("127.0.0.1", 8080, 80, "tcp")
    assert port == ("127.0.0.1", 8080, 80, "tcp")
    spec = ev.RunSpec(rootfs="/r", args=("sh",), ports=(port,))
    assert ev.RunSpec.from_data(spec.to_data()).ports[0].host_port == 8080


def test_naive_times_are_refused() -> None:
    with pytest.raises(InvalidArgument):
        ev.Exited(0, datetime(2024, 1, 1), True, "stop").to_data()
