"""Bad input at every edge (the CLI, the client, raw wire frames): one sentence, the
process stays up, nothing is written. An exec session is held to the rules of a
container's process (engine.commands' check_*)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
import zmq

from bus.protocol import Command, Reply, decode, encode, now_iso
from engine.errors import InvalidArgument
from tests.e2e.conftest import Engine

RUNNING = "svc"


@pytest.fixture
def svc(up: Engine) -> Iterator[Engine]:
    result = up.cli("run", "-d", "--name", RUNNING, up.rootfs, "sleep", "1000")
    assert result.returncode == 0, result.stderr
    yield up


def _head(engine: Engine) -> int:
    store = engine.store()
    try:
        return store.max_position()
    finally:
        store.close()


def _one_sentence(text: str) -> None:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text and "internal error" not in text, text


@pytest.mark.parametrize("args", [
    ("kill", "-s", "\u00b2", RUNNING),
    ("kill", "-s", "\u0661", RUNNING),  # an Arabic-Indic digit: isdigit() but not a number
    ("stop", "-t", "nan", RUNNING),
    ("stop", "-t", "inf", RUNNING),
    ("stop", "-t", "1e12", RUNNING),
    ("exec", RUNNING, ""),
    ("exec", "-e", "1BAD=x", RUNNING, "true"),
    ("exec", "-e", "NOVALUE", RUNNING, "true"),
    ("exec", "-w", "relative", RUNNING, "true"),
    ("exec", "-u", "bob", RUNNING, "true"),
    ("exec", "-u", "0\n", RUNNING, "true"),
])
def test_cli_refuses_in_one_sentence_and_writes_nothing(svc: Engine, args: tuple[str, ...]) -> None:
    head = _head(svc)
    result = svc.cli(*args)
    assert result.returncode == InvalidArgument.exit_code, (result.stdout, result.stderr)
    _one_sentence(result.stderr)
    assert result.stderr.startswith("berth: ")
    assert _head(svc) == head


@pytest.mark.parametrize(("cmd", "options"), [
    (["echo", "a" * 1_000_000], {}),
    (["echo", "a\0b"], {}),
    (["\0"], {}),
    (["true"], {"env": ["A=\0"]}),
    (["true"], {"env": ["A\n=1"]}),
    (["true"], {"cwd": "/\0"}),
    (["true"], {"user": "0\0"}),
    ([], {}),
    ("ls", {}),
    (["true"], {"env": "A=1"}),
    (["true"], {"tty": 1}),
    (["true"], {"cwd": 0}),
])
def test_client_exec_is_held_to_the_container_rules(svc: Engine, cmd: Any,
                                                    options: dict[str, Any]) -> None:
    head = _head(svc)
    c = svc.client(timeout=10)
    with pytest.raises(InvalidArgument) as caught:
        c.exec(RUNNING, cmd, reply_timeout=10, **options)
    _one_sentence(str(caught.value))
    assert len(str(caught.value)) < 300
    assert _head(svc) == head


@pytest.mark.parametrize("timeout", [math.nan, math.inf, 1e12, -1.0])
def test_client_refuses_a_stop_or_wait_timeout_it_could_not_wait_for(svc: Engine,
                                                                     timeout: float) -> None:
    head = _head(svc)
    c = svc.client(timeout=5)
    with pytest.raises(InvalidArgument, match="invalid timeout"):
        c.stop(RUNNING, timeout)
    with pytest.raises(InvalidArgument, match="invalid (wait )?timeout"):
        c.wait(RUNNING, timeout)
    assert _head(svc) == head
    assert svc.cli("inspect", RUNNING).returncode == 0  # still there, still answering


def _frame(type: str, container: str | None, args: dict[str, Any]) -> bytes:
    """A command frame as any publisher could pack it: the map, by hand."""
    body = msgpack.unpackb(encode(Command(str(uuid.uuid4()), type, container, "local", {},
                                          "wire@test", str(uuid.uuid4()), now_iso())),
                           raw=False)
    body["args"] = args
    return bytes(msgpack.packb(body, use_bin_type=True))


def test_wire_frames_with_wrong_types_get_one_sentence(svc: Engine) -> None:
    cid = svc.client().resolve(RUNNING).id
    spec = {"rootfs": svc.rootfs, "args": ["true"]}
    cases: list[tuple[str, str | None, dict[str, Any]]] = [
        ("container.stop", cid, {"timeout": True}),
        ("container.stop", cid, {"timeout": math.nan}),
        ("container.stop", cid, {"timeout": math.inf}),
        ("container.kill", cid, {"signal": True}),
        ("container.kill", cid, {"signal": "\u00b2"}),
        ("container.exec", cid, {"cmd": "ls"}),
        ("container.exec", cid, {"cmd": ["true"], "env": "A=1"}),
        ("container.exec", cid, {"cmd": ["true"], "cwd": False}),
        ("container.exec", cid, {"cmd": ["a" * 1_000_000]}),
        ("container.exec", cid, {"cmd": ["true"], "user": "0\0"}),
        ("container.wait", cid, {"timeout": math.nan}),
        ("container.remove", cid, {"force": 1}),
        ("query.logs", cid, {"offset": True}),
        ("query.events", None, {"limit": math.nan}),
        ("container.create", None, {**spec, "args": "sh"}),
        ("container.create", None, {**spec, "env": "A=1"}),
        ("container.create", None, {**spec, "pids_limit": True}),
        ("container.create", None, {**spec, "memory": math.nan}),
        ("container.create", None, {**spec, "terminal": "yes"}),
        ("container.create", None, {**spec, "hostname": 5}),
        ("container.create", None, {**spec, "cwd": 5}),
        ("container.create", None, {**spec, "user": 0}),
        ("container.create", None, {**spec, "ports": [["", True, 80, "tcp"]]}),
        ("container.create", None, {**spec, "ports": [["", "8080", 80, "tcp"]]}),
        ("container.create", None, {**spec, "cap_add": [5]}),
    ]
    head = _head(svc)
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(svc.endpoints.frontend)
    try:
        for type, container, args in cases:
            sock.send(_frame(type, container, args))
            assert sock.poll(10_000, zmq.POLLIN), (type, args)
            reply = decode(sock.recv_multipart()[-1])
            assert isinstance(reply, Reply) and not reply.ok, (type, args, reply)
            assert reply.error_code in ("invalid_argument", "protocol_error"), (type, reply)
            _one_sentence(reply.message or "")
            assert reply.positions == (), (type, args)
    finally:
        sock.close()
    assert _head(svc) == head
    assert svc.cli("exec", RUNNING, "true").returncode == 0  # the worker still serves


def _seen(engine: Engine, ref: str) -> tuple[str, str]:
    """What ``inspect`` and ``ps -a`` show of a container, as the CLI prints them."""
    inspect = engine.cli("inspect", ref)
    ps = engine.cli("ps", "-a", "--format", "json")
    assert inspect.returncode == 0 and ps.returncode == 0, (inspect.stderr, ps.stderr)
    return inspect.stdout, ps.stdout


def test_refused_commands_are_answered_and_change_no_state(up: Engine) -> None:
    """Each refusal is answered with its error and audited as ``command.refused``, in a
    stream of its own: the container's version, last position and everything ``ps`` and
    ``inspect`` show stay the same, and a resend of the same id gets the same answer."""
    def run(*args: str) -> str:
        result = up.cli(*args)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    stopped = run("run", "-d", "--name", "stopped", up.rootfs, "true")
    assert run("wait", stopped) == "0"
    running = run("run", "-d", "--name", "running", up.rootfs, "sleep", "1000")
    paused = run("run", "-d", "--name", "paused", up.rootfs, "sleep", "1000")
    run("pause", paused)
    store = up.store()
    try:
        for args, ref, expect, code in (
            (("exec", "stopped", "true"), stopped, "exited", 125),
            (("checkpoint", "paused"), paused, "paused", 125),
            (("rm", "running"), running, "--force", 2),  # podman's rm: 2 when running
            (("restore", "stopped"), stopped, "no checkpoint", 125),
        ):
            before, head = _seen(up, ref), store.max_position()
            result = up.cli(*args)
            assert result.returncode == code, (args, result.stdout, result.stderr)
            _one_sentence(result.stderr)
            assert expect in result.stderr, (args, result.stderr)
            assert _seen(up, ref) == before, args
            written = store.read_all(head + 1)
            assert [(r.type, r.stream, r.event.to_data()["container"]) for r in written] == [
                ("command.refused", "berth:refused", ref)], args
            assert written[0].metadata.actor  # who asked is in the audit trail
    finally:
        store.close()
    c = up.client()
    command = c.command("container.remove", running, "local", {})
    first = c.request(command, check=False)
    again = c.request(command, check=False)
    assert not first.ok and (again.error_code, again.message) == (first.error_code,
                                                                 first.message)
    assert again.positions == first.positions
    run("rm", "-f", "running")
    run("rm", "-f", "paused")
