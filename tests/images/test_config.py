"""An image's configuration applied to a run spec (pure)."""

from __future__ import annotations

import pytest

from engine.errors import InvalidArgument
from engine.images.config import (
    apply_image,
    command_line,
    exposed_ports,
    merge_env,
    resolve_user,
)
from engine.spec import RunSpec

PASSWD = "root:x:0:0::/root:/bin/sh\nweb:x:33:34::/var/www:/bin/false\n"
GROUP = "root:x:0:\nstaff:x:50:\n"


def test_command_line_rules() -> None:
    assert command_line(None, (), ("/e",), ("c",)) == ("/e", "c")
    assert command_line(None, ("x",), ("/e",), ("c",)) == ("/e", "x")  # CMD replaced
    assert command_line(("/o",), (), ("/e",), ("c",)) == ("/o",)  # --entrypoint drops Cmd
    assert command_line(("/o",), ("y",), ("/e",), ("c",)) == ("/o", "y")
    with pytest.raises(InvalidArgument, match="no command"):
        command_line(None, (), (), ())


def test_user_env_overrides_the_images_by_name() -> None:
    assert merge_env(("A=1", "B=2"), ("B=3", "C=4")) == ("A=1", "B=3", "C=4")


@pytest.mark.parametrize(("user", "expected"), [
    ("web", "33:34"), ("33", "33:34"), ("web:staff", "33:50"), ("1000", "1000:0"),
    ("web:7", "33:7"),
])
def test_users_are_looked_up_in_the_images_passwd(user: str, expected: str) -> None:
    assert resolve_user(user, PASSWD, GROUP) == expected


def test_unknown_users_and_groups_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="not in its /etc/passwd"):
        resolve_user("ghost", PASSWD, GROUP)
    with pytest.raises(InvalidArgument, match="not in its /etc/group"):
        resolve_user("web:ghosts", PASSWD, GROUP)


def test_apply_image_completes_only_what_the_user_left_default() -> None:
    config = {"Cmd": ["run"], "Env": ["A=1"], "WorkingDir": "/srv", "User": "web",
              "StopSignal": "SIGQUIT", "ExposedPorts": {"8080/tcp": {}, "53/udp": {}, "x": {}},
              "Labels": {"a": "1"}}
    spec = RunSpec(rootfs="", args=(), image="r/x")
    done = apply_image(spec, config, rootfs="/m", reference="r.io/x:1", manifest_digest="m",
                       image_id="i", passwd=PASSWD)
    assert (done.rootfs, done.args, done.env, done.cwd, done.user, done.stop_signal) == (
        "/m", ("run",), ("A=1",), "/srv", "33:34", 3)
    assert (done.image, done.image_digest, done.image_id) == ("r.io/x:1", "m", "i")
    assert done.exposed_ports == ("53/udp", "8080/tcp") and done.labels == ("a=1",)
    mine = RunSpec(rootfs="", args=("sh",), image="r/x", cwd="/tmp", user="5:5", stop_signal=9,
                   env=("A=2",))
    done = apply_image(mine, config, rootfs="/m", reference="r", manifest_digest="m",
                       image_id="i", passwd=PASSWD)
    assert (done.args, done.env, done.cwd, done.user, done.stop_signal) == (
        ("sh",), ("A=2",), "/tmp", "5:5", 9)


def test_exposed_ports_ignores_malformed_keys() -> None:
    assert exposed_ports({"ExposedPorts": {"80": {}, "70000/tcp": {}, "a/tcp": {}}}) == (
        "80/tcp",)


def test_a_spec_with_an_image_round_trips_and_one_without_is_stored_as_before() -> None:
    spec = RunSpec(rootfs="/m", args=("a",), image="r", image_digest="d", image_id="i",
                   exposed_ports=("80/tcp",), labels=("k=v",), entrypoint=())
    assert RunSpec.from_data(spec.to_data()) == spec
    plain = RunSpec(rootfs="/r", args=("a",))
    assert not {"image", "entrypoint", "labels"} & set(plain.to_data())
    with pytest.raises(InvalidArgument, match="a rootfs or an image"):
        RunSpec(rootfs="", args=("a",))
