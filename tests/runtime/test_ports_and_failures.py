"""Port reservation through conmon, creation failures, and input refused before any process."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from engine.containers.spec import PortMapping, RunSpec
from engine.errors import InvalidArgument, NotFound, RuntimeFailure
from engine.ids import new_container_id
from engine.runtime import OCIRuntime, RuntimeConfig
from engine.runtime.oci import systemd_booted
from tests.helpers import systemd_is_pid1
from tests.runtime.conftest import Containers


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _can_bind(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def test_reserved_ports_cannot_be_taken_while_the_container_lives(containers: Containers) -> None:
    tcp, udp = _free_port(socket.SOCK_STREAM), _free_port(socket.SOCK_DGRAM)
    ports = (PortMapping("127.0.0.1", tcp, 80, "tcp"), PortMapping("127.0.0.1", udp, 53, "udp"))
    cid, created = containers.run("sleep", "60", ports=ports)
    assert not _can_bind(tcp, socket.SOCK_STREAM)
    assert not _can_bind(udp, socket.SOCK_DGRAM)
    containers.runtime.stop(cid, created.pid, timeout=0)
    containers.wait_exit(cid, created.pid)
    containers.runtime.delete(cid)
    # conmon exits with its container and releases the ports.
    from tests.helpers import wait_until

    wait_until(lambda: _can_bind(tcp, socket.SOCK_STREAM), 10, what="tcp port released")
    wait_until(lambda: _can_bind(udp, socket.SOCK_DGRAM), 10, what="udp port released")


def test_port_already_taken_fails_creation_cleanly(containers: Containers) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(RuntimeFailure, match="cannot listen on the TCP port"):
            containers.create("true", ports=(PortMapping("127.0.0.1", port, 80, "tcp"),))


def test_unknown_protocol_is_an_error() -> None:
    with pytest.raises(InvalidArgument, match="unknown protocol"):
        PortMapping("", 8080, 80, "sctp").validate()
    with pytest.raises(InvalidArgument):
        PortMapping.parse("8080:80/sctp")
    assert PortMapping.parse("127.0.0.1:8080:80/udp") == PortMapping("127.0.0.1", 8080, 80, "udp")


def test_bad_command_reports_runtime_message_and_cleans_up(containers: Containers) -> None:
    cid = new_container_id()
    containers.created.append(cid)
    with pytest.raises(RuntimeFailure, match="no-such-binary") as info:
        containers.runtime.create(cid, containers.spec("/bin/no-such-binary"))
    assert "container create failed" in str(info.value)
    with pytest.raises(NotFound):
        containers.runtime.runc.state(cid)


def test_empty_rootfs_fails_with_message_and_cleans_up(
    containers: Containers, short_tmp: str
) -> None:
    empty = os.path.join(short_tmp, "empty-rootfs")
    os.makedirs(empty)
    cid = new_container_id()
    containers.created.append(cid)
    with pytest.raises(RuntimeFailure, match="container create failed: .+"):
        containers.runtime.create(cid, RunSpec(rootfs=empty, args=("sh",)))
    with pytest.raises(NotFound):
        containers.runtime.runc.state(cid)


@pytest.mark.parametrize("bad_id", ["../x", "a/b", "", ".", "-rf", "x" * 65, "white space", "ü"])
def test_bad_ids_are_refused_before_any_process(containers: Containers, bad_id: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid container id"):
        containers.runtime.create(bad_id, containers.spec("true"))
    assert os.listdir(containers.runtime.config.exits_dir) == []
    assert os.listdir(os.path.join(containers.runtime.config.state_dir, "containers")) == []


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"rootfs": "relative/rootfs"}, "absolute"),
        ({"rootfs": "/nonexistent/rootfs"}, "existing directory"),
        ({"args": ()}, "command"),
        ({"env": ("NOEQUALS",)}, "KEY=VALUE"),
        ({"cwd": "tmp"}, "absolute"),
        ({"user": "no-such-user"}, "not in the container's /etc/passwd"),
        ({"user": "0:no-such-group"}, "not in the container's /etc/group"),
        ({"user": "a:b:c"}, "UID"),
        ({"stop_signal": 99}, "signal"),
        ({"memory": 10}, "memory"),
        ({"pids_limit": 0}, "pids"),
        ({"hostname": "bad_host!"}, "hostname"),
    ],
)
def test_bad_specs_are_refused_before_any_process(
    containers: Containers, kwargs: dict[str, object], match: str
) -> None:
    fields: dict[str, object] = {"rootfs": containers.rootfs, "args": ("true",)}
    fields.update(kwargs)
    with pytest.raises(InvalidArgument, match=match):
        containers.runtime.create(new_container_id(), RunSpec(**fields))  # type: ignore[arg-type]
    assert os.listdir(os.path.join(containers.runtime.config.state_dir, "containers")) == []


def test_invalid_name_refused(containers: Containers) -> None:
    with pytest.raises(InvalidArgument, match="name"):
        containers.runtime.create(new_container_id(), containers.spec("true"), name="../../etc")


def test_systemd_cgroup_manager_refused_without_systemd(short_tmp: str) -> None:
    if systemd_is_pid1():
        pytest.skip("systemd is PID 1 on this host; the refusal only applies without it")
    with pytest.raises(InvalidArgument, match="systemd as PID 1"):
        OCIRuntime(
            RuntimeConfig(
                state_dir=short_tmp + "/s", tmp_dir=short_tmp + "/r", cgroup_manager="systemd"
            )
        )
    assert not os.path.exists(short_tmp + "/r")


@pytest.mark.parametrize(("run_dir", "init", "booted"), [
    (True, "systemd", True),
    (True, "process_api", False),  # systemd's packages installed, another PID 1
    (False, "systemd", False),
    (True, None, False),  # PID 1's name unreadable
])
def test_systemd_counts_as_booted_only_as_pid_1(tmp_path: Path, run_dir: bool,
                                                init: str | None, booted: bool) -> None:
    if run_dir:
        (tmp_path / "system").mkdir()
    if init is not None:
        (tmp_path / "comm").write_text(init + "\n")
    assert systemd_booted(str(tmp_path / "system"), str(tmp_path / "comm")) is booted


def test_unknown_cgroup_manager_refused(short_tmp: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid cgroup manager"):
        RuntimeConfig(
            state_dir=short_tmp + "/s", tmp_dir=short_tmp + "/r", cgroup_manager="cgroupv3"
        )


def test_runtime_creates_exit_and_socket_dirs(runtime: OCIRuntime) -> None:
    assert os.path.isdir(runtime.config.exits_dir)
    assert os.path.isdir(runtime.config.sockets_dir)
    assert os.path.isdir(runtime.config.runc_root)
