"""An image's configuration applied to a run spec (pure)."""

from __future__ import annotations

import pytest

from engine.containers.spec import RunSpec
from engine.errors import InvalidArgument
from engine.images.config import (
    apply_image,
    command_line,
    exposed_ports,
    merge_env,
    resolve_user,
)

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
    assert done.exposed_ports == ("53/udp", "8080/tcp") and done.labels == (("a", "1"),)
    assert done.entrypoint is None and done.argv == ("run",)
    mine = RunSpec(rootfs="", args=("sh",), image="r/x", cwd="/tmp", user="5:5", stop_signal=9,
                   env=("A=2",), labels=(("a", "2"), ("b", "3")))
    done = apply_image(mine, config, rootfs="/m", reference="r", manifest_digest="m",
                       image_id="i", passwd=PASSWD)
    assert (done.args, done.env, done.cwd, done.user, done.stop_signal) == (
        ("sh",), ("A=2",), "/tmp", "5:5", 9)
    assert done.labels == (("a", "2"), ("b", "3"))  # the user's win


def test_the_image_entrypoint_is_the_spec_entrypoint() -> None:
    """The spec runs entrypoint + args: the image's Entrypoint is recorded as the spec's,
    the user's --entrypoint replaces it and drops the image's Cmd."""
    config = {"Entrypoint": ["/e"], "Cmd": ["c"]}

    def applied(spec: RunSpec) -> RunSpec:
        return apply_image(spec, config, rootfs="/m", reference="r", manifest_digest="m",
                           image_id="i")

    done = applied(RunSpec(rootfs="", args=(), image="r"))
    assert (done.entrypoint, done.args, done.argv) == (("/e",), ("c",), ("/e", "c"))
    done = applied(RunSpec(rootfs="", args=("x",), image="r"))
    assert (done.entrypoint, done.args, done.argv) == (("/e",), ("x",), ("/e", "x"))
    done = applied(RunSpec(rootfs="", args=(), image="r", entrypoint=("/o",)))
    assert (done.entrypoint, done.args, done.argv) == (("/o",), (), ("/o",))
    done = applied(RunSpec(rootfs="", args=("y",), image="r", entrypoint=()))
    assert (done.entrypoint, done.args, done.argv) == ((), ("y",), ("y",))


def test_exposed_ports_ignores_malformed_keys() -> None:
    assert exposed_ports({"ExposedPorts": {"80": {}, "70000/tcp": {}, "a/tcp": {}}}) == (
        "80/tcp",)


def test_a_spec_with_an_image_round_trips_and_one_without_has_no_image_keys() -> None:
    spec = RunSpec(rootfs="/m", args=("a",), image="r", image_digest="d", image_id="i",
                   exposed_ports=("80/tcp",), labels=(("k", "v"),), entrypoint=())
    assert RunSpec.from_data(spec.to_data()) == spec
    plain = RunSpec(rootfs="/r", args=("a",))
    assert not {"image", "image_digest", "image_id", "exposed_ports"} & set(plain.to_data())
    with pytest.raises(InvalidArgument, match="a rootfs or an image"):
        RunSpec(rootfs="", args=("a",))


@pytest.mark.parametrize("config, passwd", [
    ({"Cmd": ["x"], "User": "\u00b2"}, PASSWD),  # a digit to str.isdigit, not to int()
    ({"Cmd": ["x"], "User": "web"}, "web:x:\u00b2:34::/:/bin/false\n"),
    ({"Cmd": ["x"], "User": "\u00b2:staff"}, "x:x:\u00b2:\u00b2::/:/bin/false\n"),
    ({"Cmd": ["x"], "User": "9" * 5000}, PASSWD),  # more digits than int() reads
    ({"Cmd": ["x"], "Env": 5}, PASSWD),
    ({"Cmd": {"x": 1}}, PASSWD),
])
def test_a_hostile_image_config_is_refused_in_one_sentence(config: dict[str, object],
                                                           passwd: str) -> None:
    # values a hostile image's config can hold ended in a TypeError or ValueError: the
    # worker's "internal error" and a traceback in its log
    spec = RunSpec(rootfs="", args=(), image="r/x")
    with pytest.raises(InvalidArgument):
        apply_image(spec, config, rootfs="/m", reference="r", manifest_digest="m",
                    image_id="i", passwd=passwd, group=GROUP)


def test_malformed_ports_and_labels_of_an_image_are_ignored() -> None:
    spec = RunSpec(rootfs="", args=(), image="r/x")
    for ports, labels in ((5, ["a"]), ({"\u00b2/tcp": {}}, "ab"), (["80/tcp"], 7),
                          ({"9" * 5000: {}}, None)):
        done = apply_image(spec, {"Cmd": ["x"], "ExposedPorts": ports, "Labels": labels},
                           rootfs="/m", reference="r", manifest_digest="m", image_id="i")
        assert done.labels == ()
        assert done.exposed_ports == (() if ports != ["80/tcp"] else ("80/tcp",))
