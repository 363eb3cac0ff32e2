"""The client library: what the CLI and programmatic publishers use.

``Client.send`` is a Lazy Pirate request: it waits for the reply with a deadline
and, on silence, closes the socket (LINGER 0), opens a new one and resends the
SAME command id, so the broker and the workers run it at most once while the
client cannot lose it. Error replies become typed ``engine.errors`` exceptions.

Silence and an answer are kept apart: an error reply (a worker's ``timeout`` to
a bounded wait, say) is final and never resent, while a command that takes long
(``wait``, ``exec``) is resent only after silence, at an interval doubling up to
a cap, and only while the broker still answers a ping. Timeouts must be finite
positive numbers: a NaN would make every wait end at once and the resends spin.

Over tcp the client is a CURVE client: its own key pair and the broker's public
key come from ``curve=`` or ``BERTH_KEY``/``BERTH_SERVER_KEY`` (bus.keys); the
broker records the name of its authorised key as the actor of its commands, so
``actor`` here is only a claim the broker replaces.

Importing this module must stay cheap (``berth ps``): zmq, msgpack,
engine.errors and engine.ids only; no SQLAlchemy, no engine.store, no engine.runtime.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

import zmq

from bus import endpoints as _endpoints
from bus.keys import ClientKeys, client_keys_from_env, needs_curve, peer_socket
from bus.protocol import (
    MAX_ACTOR_LENGTH,
    MAX_FRAME_SIZE,
    MAX_WAIT,
    Command,
    EventMessage,
    Reply,
    decode,
    encode,
    now_iso,
)
from engine import command_types as c
from engine.errors import (
    InvalidArgument,
    Passive,
    ProtocolError,
    Timeout,
    Unavailable,
    WrongNode,
    error_from_code,
)
from engine.ids import new_uuid

if TYPE_CHECKING:
    from bus.subscription import Subscription

WRONG_NODE = WrongNode.code
DEFAULT_TIMEOUT = 5.0
DEFAULT_RETRIES = 2
RESEND_MAX = 30.0
"""Longest silence a patient request waits before it resends (and pings the broker)."""
_PING_TIMEOUT = 1.0
RESTART_WAIT = 5.0
"""Longest a client waits for a broker's missing ipc socket while its run directory
shows the engine there (``endpoints.engine_expected``): a unit restarting the broker
(RestartSec=1s) is back within it."""
_RESTART_POLL = 0.05
_POLL_SLICE = 60.0
"""Longest single poll: zmq's poll takes a C int of milliseconds (24 days at most), and
a stop may rightly wait a year."""


def positive_seconds(value: object, what: str) -> float:
    """``value`` as seconds if it is a finite number > 0; else InvalidArgument."""
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value <= 0):
        raise InvalidArgument(f"invalid {what} {value!r}: must be a finite number of seconds > 0")
    return float(value)


@dataclass(frozen=True, slots=True)
class Resolved:
    """A container reference resolved by ``query.resolve``."""

    id: str
    node: str
    name: str | None


def default_actor() -> str:
    """Who sends commands, for the audit trail: ``$BERTH_ACTOR`` or user@host."""
    actor = os.environ.get("BERTH_ACTOR")
    if not actor:
        try:
            import pwd

            user = pwd.getpwuid(os.getuid()).pw_name
        except (ImportError, KeyError):
            user = f"uid{os.getuid()}"
        actor = f"{user}@{os.uname().nodename}"
    return actor[:MAX_ACTOR_LENGTH]


class Client:
    """A connection to the broker's frontend. Not thread-safe: one per thread."""

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        events_endpoint: str | None = None,
        actor: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        context: zmq.Context[Any] | None = None,
        curve: ClientKeys | None = None,
    ) -> None:
        """``curve``: keys for tcp endpoints (None: from BERTH_KEY/BERTH_SERVER_KEY,
        read only when an endpoint is tcp). ``actor`` is a claim: the broker records
        the authenticated identity instead."""
        defaults = (_endpoints.derive_lenient(endpoint) if endpoint
                    else _endpoints.default_endpoints())
        env_events = os.environ.get("BERTH_BUS_EVENTS") if endpoint is None else None
        self.endpoints = _endpoints.split(defaults.frontend)
        """One broker, or a Binary Star pair tried in turn (silence or a passive
        broker's answer moves the client to the other)."""
        self.endpoint = self.endpoints[0]
        self.events_endpoint = events_endpoint or env_events or defaults.events
        if curve is None and (any(needs_curve(e) for e in self.endpoints)
                              or needs_curve(self.events_endpoint)):
            curve = client_keys_from_env()
        self.curve = curve
        self.actor = actor or default_actor()
        self.timeout = positive_seconds(timeout, "client timeout")
        self.retries = retries
        self._ctx = context or zmq.Context.instance()
        self._sock: zmq.Socket[bytes] | None = None
        self._nodes: dict[str, str] = {}
        self._missing: str = ""
        """Why nobody listens although the engine seemed there (for the message)."""

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _socket(self) -> zmq.Socket[bytes]:
        if self._sock is None:
            sock = peer_socket(self._ctx, zmq.DEALER, self.endpoint, self.curve,
                               max_message=4 * MAX_FRAME_SIZE)
            sock.connect(self.endpoint)
            self._sock = sock
        return self._sock

    # ------------------------------------------------------------------ core

    def command(
        self,
        type: str,
        container: str | None = None,
        node: str | None = None,
        args: dict[str, Any] | None = None,
        *,
        command_id: str | None = None,
        correlation_id: str | None = None,
    ) -> Command:
        """Build (and validate) a command from this client's actor."""
        cid = command_id or new_uuid()
        return Command(
            id=cid,
            type=type,
            container=container,
            node=node,
            args=dict(args or {}),
            actor=self.actor,
            correlation_id=correlation_id or cid,
            sent_at=now_iso(),
            wait=min(self.timeout, MAX_WAIT),
        )

    def send(
        self,
        type: str,
        container: str | None = None,
        node: str | None = None,
        *,
        reply_timeout: float | None = None,
        correlation_id: str | None = None,
        **args: Any,
    ) -> Reply:
        """Send a command and return its successful reply; raise the typed error
        of an error reply (``engine.errors``), ``Unavailable`` when nothing answers."""
        command = self.command(type, container, node, args, correlation_id=correlation_id)
        return self.request(command, reply_timeout=reply_timeout)

    def _fail_over(self) -> None:
        """Close the socket (Lazy Pirate: a fresh one drops anything stuck in the old)
        and, with a Binary Star pair, turn to the other broker."""
        self.close()
        if len(self.endpoints) > 1:
            self.endpoint = self.endpoints[(self.endpoints.index(self.endpoint) + 1)
                                           % len(self.endpoints)]

    def _reachable(self) -> bool:
        """Whether some broker may listen; moves to one that may. When none does but
        the run directory shows the engine there (a broker restarting: its socket is
        missing for a moment), waits for one up to RESTART_WAIT (and at most this
        client's own budget) rather than saying at once that it is not running."""
        self._missing = ""
        if self._any_reachable():
            return True
        why = next(filter(None, (_endpoints.engine_expected(e) for e in self.endpoints)), None)
        if why is None:
            return False
        wait = min(RESTART_WAIT, self.timeout * (self.retries + 1))
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            time.sleep(_RESTART_POLL)
            if self._any_reachable():
                return True
        self._missing = f"{why}, but no broker listened within {wait:g}s"
        return False

    def _any_reachable(self) -> bool:
        for _ in self.endpoints:
            if _endpoints.is_reachable(self.endpoint):
                return True
            self._fail_over()
        return False

    def _not_running(self) -> Unavailable:
        if self._missing:
            return Unavailable(f"no broker listens at {self.endpoint}: {self._missing}; "
                               "retry once it is back")
        return Unavailable(f"berth engine is not running at {self.endpoint}")

    def _passive(self, reply: Reply) -> bool:
        """A passive broker of a pair turned the command away unrun: try the other."""
        if reply.error_code == Passive.code and len(self.endpoints) > 1:
            self._fail_over()
            return True
        return False

    def request(self, command: Command, *, reply_timeout: float | None = None,
                check: bool = True) -> Reply:
        """Lazy Pirate: send, wait, and on silence reconnect and resend the same id
        (with a Binary Star pair, to the other broker)."""
        if not self._reachable():
            raise self._not_running()
        frame = encode(command)
        timeout = (self.timeout if reply_timeout is None
                   else positive_seconds(reply_timeout, "reply timeout"))
        passes = 0
        attempt = 0
        while attempt <= self.retries:
            reply = self._exchange(frame, command.id, timeout)
            if reply is not None and self._passive(reply) and passes < 2 * len(self.endpoints):
                passes += 1
                time.sleep(0.05 * passes)  # both passive a moment while the pair decides
                continue
            attempt += 1
            if reply is not None:
                if check and not reply.ok:
                    raise error_from_code(reply.error_code or "internal", reply.message or "")
                return reply
            self._fail_over()
        total = timeout * (self.retries + 1)
        if command.type != c.PING and self._broker_answers():
            raise Timeout(
                f"no reply to {command.type} {command.id} within {total:g}s; the engine is "
                "running and may still finish it (retrying with the same id is safe)"
            )
        raise Unavailable(f"berth engine is not running at {self.endpoint}{self._hint()}")

    def _hint(self) -> str:
        """Why a tcp broker may stay silent: CURVE refuses unknown or absent keys."""
        if not needs_curve(self.endpoint):
            return ""
        if self.curve is None:
            return " (or it refuses clients without CURVE keys: set BERTH_KEY and BERTH_SERVER_KEY)"
        return (" (or it refuses this client's key: is it in the broker's authorised-publishers "
                "directory, and is BERTH_SERVER_KEY the broker's public key?)")

    def request_patiently(self, command: Command, deadline: float | None = None, *,
                          check: bool = True) -> Reply:
        """For commands that legitimately take long (wait, exec): wait for the reply
        until ``deadline`` (time.monotonic(); None: no limit). Only silence is
        resent (same id, a fresh socket; the broker absorbs the repeat), after an
        interval that doubles from ``timeout`` up to RESEND_MAX, and only while the
        broker answers a ping; any reply, an error too, is the answer."""
        if not self._reachable():
            raise self._not_running()
        frame = encode(command)
        interval = self.timeout
        passes = 0
        while True:
            wait = interval if deadline is None else min(interval, deadline - time.monotonic())
            reply = self._exchange(frame, command.id, max(wait, 0.001))
            if reply is not None and self._passive(reply):
                passes += 1
                if passes > 40 or (deadline is not None and time.monotonic() >= deadline):
                    raise Passive("no broker of the pair is active; retrying with the same "
                                  "id is safe")
                time.sleep(0.05)
                continue
            if reply is not None:
                if check and not reply.ok:
                    raise error_from_code(reply.error_code or "internal", reply.message or "")
                return reply
            self._fail_over()
            if deadline is not None and time.monotonic() >= deadline:
                raise Timeout(f"no reply to {command.type} {command.id} in time; the engine "
                              "may still finish it (retrying with the same id is safe)")
            if not self._broker_answers():
                raise Unavailable(f"berth engine is not running at {self.endpoint}{self._hint()}")
            interval = min(interval * 2, RESEND_MAX)

    def _exchange(self, frame: bytes, command_id: str, timeout: float) -> Reply | None:
        sock = self._socket()
        try:
            sock.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            return None
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not sock.poll(max(1, int(min(left, _POLL_SLICE) * 1000)), zmq.POLLIN):
                continue  # a slice of the wait ran out; the loop checks the deadline
            parts = sock.recv_multipart()
            try:
                msg = decode(parts[-1])
            except ProtocolError:
                continue  # not ours to fix; keep waiting for our reply
            if isinstance(msg, Reply):
                if msg.command_id == command_id:
                    return msg
                if msg.command_id == "" and not msg.ok:  # the broker could not read it
                    raise ProtocolError(msg.message or "the broker refused the command frame")
            # a late reply to an earlier command: ignore
        return None

    def _broker_answers(self) -> bool:
        probe = Client(self.endpoint, events_endpoint=self.events_endpoint, actor=self.actor,
                       timeout=_PING_TIMEOUT, retries=0, context=self._ctx, curve=self.curve)
        try:
            probe.request(probe.command(c.PING))
        except Exception:  # noqa: BLE001 - any failure means no broker answered
            return False
        finally:
            probe.close()
        return True

    # ------------------------------------------------------------------ containers

    def resolve(self, ref: str) -> Resolved:
        """Id, node and name of a container given its id, a unique id prefix or its name."""
        result = self.send(c.RESOLVE, ref).result
        cid, node, name = result.get("id"), result.get("node"), result.get("name")
        if not isinstance(cid, str) or not isinstance(node, str):
            raise ProtocolError(f"query.resolve for {ref!r} answered without an id and a node")
        resolved = Resolved(id=cid, node=node, name=name if isinstance(name, str) else None)
        self._nodes[resolved.id] = resolved.node
        return resolved

    def _on_container(self, type: str, ref: str, node: str | None,
                      reply_timeout: float | None = None, *, patient: bool = False,
                      deadline: float | None = None, **args: Any) -> Reply:
        """Send a container command by reference in one round trip: the worker that
        gets it resolves the reference. Without a known node any worker may get it; if
        the container lives on another node it answers ``wrong_node`` naming it, and
        the command is sent there (a new id: the first was refused before acting)."""
        where = node or self._nodes.get(ref)
        for _attempt in range(2):
            command = self.command(type, ref, where, args)
            reply = (self.request_patiently(command, deadline, check=False) if patient
                     else self.request(command, reply_timeout=reply_timeout, check=False))
            moved = reply.result.get("node") if reply.error_code == WRONG_NODE else None
            if not isinstance(moved, str) or moved == where:
                break
            where = moved
        if not reply.ok:
            raise error_from_code(reply.error_code or "internal", reply.message or "")
        node_of = reply.result.get("node", where)
        if isinstance(node_of, str):
            self._nodes[ref] = node_of
            cid = reply.result.get("id")
            if isinstance(cid, str):
                self._nodes[cid] = node_of
        return reply

    def create(self, *, name: str | None = None, node: str | None = None,
               reply_timeout: float | None = None, **spec: Any) -> Reply:
        """Create a container from a spec (rootfs, args, env, ports, memory, ...),
        checked here with the worker's own rules; ``memory="64m"`` and
        ``ports=["8080:80"]`` are accepted as the CLI accepts them, and mounts as
        ``volumes=["/srv:/data:ro", "NAME:/db"]``, ``mount=["type=tmpfs,target=/t"]``,
        ``tmpfs=["/run:size=1m"]``."""
        from engine.containers.spec import spec_from_user  # not on the path of 'berth ps'

        spec = spec_from_user(spec)
        if name is not None:
            spec["name"] = name
        reply = self.send(c.CREATE, name, node, reply_timeout=reply_timeout, **spec)
        cid, where = reply.result.get("id"), reply.result.get("node")
        if isinstance(cid, str) and isinstance(where, str):
            self._nodes[cid] = where
        return reply

    def run(self, *, name: str | None = None, node: str | None = None,
            session_id: str | None = None, deadline: float | None = None,
            **spec: Any) -> Reply:
        """``run --rm`` in one command (``container.run``): the worker creates, starts,
        waits for the exit and removes; the reply has the id and the ``exit_code``.
        Its stdio goes to the stream session opened (kind ``run``) under
        ``session_id``. Patient as ``wait``: a resend of the same id after silence
        carries on where the worker got to, never runs a step twice."""
        from engine.containers.spec import spec_from_user  # not on the path of 'berth ps'

        spec = spec_from_user(spec)
        if name is not None:
            spec["name"] = name
        if session_id is not None:
            spec["session_id"] = session_id
        command = self.command(c.RUN, name, node, spec)
        return self.request_patiently(command, deadline)

    def start(self, ref: str, *, node: str | None = None) -> Reply:
        return self._on_container(c.START, ref, node)

    def stop(self, ref: str, timeout: float = 10.0, *, node: str | None = None) -> Reply:
        from engine.arguments import check_timeout  # the engine's rules: not for 'ps'

        timeout = check_timeout(timeout)  # before it bounds the reply wait below
        return self._on_container(c.STOP, ref, node, self.timeout + timeout,
                                  timeout=timeout)

    def kill(self, ref: str, signal: str | int = "SIGKILL", *, node: str | None = None) -> Reply:
        return self._on_container(c.KILL, ref, node, signal=signal)

    def pause(self, ref: str, *, node: str | None = None) -> Reply:
        return self._on_container(c.PAUSE, ref, node)

    def unpause(self, ref: str, *, node: str | None = None) -> Reply:
        return self._on_container(c.UNPAUSE, ref, node)

    def exec(self, ref: str, cmd: list[str], *, node: str | None = None,
             reply_timeout: float | None = None, **options: Any) -> Reply:
        """Run a process in the container and wait for it (as long as it takes unless
        ``reply_timeout`` is given)."""
        return self._on_container(c.EXEC, ref, node, reply_timeout,
                                  patient=reply_timeout is None, cmd=cmd, **options)

    def checkpoint(self, ref: str, *, node: str | None = None,
                   reply_timeout: float | None = None, **options: Any) -> Reply:
        return self._on_container(c.CHECKPOINT, ref, node, reply_timeout, **options)

    def restore(self, ref: str, *, node: str | None = None,
                reply_timeout: float | None = None, **options: Any) -> Reply:
        return self._on_container(c.RESTORE, ref, node, reply_timeout, **options)

    def remove(self, ref: str, force: bool = False, *, node: str | None = None) -> Reply:
        reply = self._on_container(c.REMOVE, ref, node, force=force)
        self._nodes.pop(ref, None)
        return reply

    def rename(self, ref: str, name: str, *, node: str | None = None) -> Reply:
        """Give the container a new name; a name in use is refused (``already_exists``)."""
        reply = self._on_container(c.RENAME, ref, node, name=name)
        self._nodes.pop(ref, None)
        return reply

    def copy_in(self, ref: str, path: str, data: bytes, *, node: str | None = None) -> Reply:
        """Extract ``data`` (a tar of one file or directory) at ``path`` in the container;
        a large archive goes in pieces (a bus frame holds at most 1 MiB)."""
        from engine.containers.copying import CHUNK

        # Writing half a million entries takes the worker a while: the closing command
        # waits patiently (a resend on silence is absorbed, or replays the outcome).
        if len(data) <= CHUNK:
            return self._on_container(c.COPY_IN, ref, node, path=path, data=data,
                                      patient=True)
        resolved = self.resolve(ref)  # every piece to the same container and node
        transfer = new_uuid()
        last = (len(data) - 1) // CHUNK * CHUNK
        for offset in range(0, last, CHUNK):
            self._on_container(c.COPY_CHUNK, resolved.id, resolved.node, transfer=transfer,
                               offset=offset, data=data[offset:offset + CHUNK])
        return self._on_container(c.COPY_IN, resolved.id, resolved.node, path=path,
                                  transfer=transfer, data=data[last:], patient=True)

    def copy_out(self, ref: str, path: str, *, node: str | None = None) -> bytes:
        """The file or directory at ``path`` in the container, as a tar (read in pages)."""
        resolved = self.resolve(ref)
        transfer, parts, size = new_uuid(), [], None
        offset = 0
        while size is None or offset < size:
            result = self._on_container(c.COPY_OUT, resolved.id, resolved.node, path=path,
                                        transfer=transfer, offset=offset,
                                        patient=not offset).result  # the first packs
            data, size = result.get("data"), result.get("size")
            if not isinstance(data, bytes) or type(size) is not int or not (data or not size):
                raise ProtocolError("query.copy_out answered without data")
            parts.append(data)
            offset += len(data)
        return b"".join(parts)

    def wait(self, ref: str, timeout: float | None = None, *, node: str | None = None,
             condition: str = "exited") -> Reply:
        """Block until the container exits (the worker answers then), or reaches
        ``condition`` (running, healthy); ``timeout`` bounds the wait (None: as long as
        it takes, while the engine is alive; else a finite number of seconds > 0,
        checked before anything is sent)."""
        if timeout is not None:
            timeout = positive_seconds(timeout, "wait timeout")
        args: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        if condition != "exited":
            args["condition"] = condition
        deadline = None if timeout is None else time.monotonic() + timeout + self.timeout
        return self._on_container(c.WAIT, ref, node, patient=True, deadline=deadline, **args)

    def update(self, ref: str, *, node: str | None = None, **changes: Any) -> Reply:
        """Change run options of an existing container: ``memory`` (bytes or ``64m``),
        ``pids_limit``, ``cpus``, ``restart``; the reply lists the ones changed."""
        if isinstance(changes.get("memory"), str):
            from engine.containers.spec import parse_size

            changes["memory"] = parse_size(changes["memory"])
        return self._on_container(c.UPDATE, ref, node, **changes)

    def top(self, ref: str, *, node: str | None = None) -> dict[str, Any]:
        """The container's processes: pid, user, CPU time, command."""
        return self._on_container(c.TOP, ref, node).result

    def stats(self, ref: str, *, node: str | None = None) -> dict[str, Any]:
        """The container's cumulative counters now (CPU ns, memory, pids, I/O bytes)."""
        return self._on_container(c.STATS, ref, node).result

    def healthcheck(self, ref: str, *, node: str | None = None) -> Reply:
        """Run the container's health check once now: its status, exit code, output."""
        return self._on_container(c.HEALTHCHECK, ref, node, reply_timeout=None)
    # ------------------------------------------------------------------ networks

    def network_create(self, name: str, *, subnet: str | None = None,
                       gateway: str | None = None, node: str | None = None) -> Reply:
        return self.send(c.NETWORK_CREATE, None, node, name=name, subnet=subnet or "",
                         gateway=gateway or "")

    def network_remove(self, name: str, *, node: str | None = None) -> Reply:
        return self.send(c.NETWORK_REMOVE, None, node, name=name)

    def networks(self, *, node: str | None = None) -> list[dict[str, Any]]:
        found = self.send(c.NETWORKS, None, node).result.get("networks", [])
        return list(found) if isinstance(found, list) else []

    def network_inspect(self, name: str, *, node: str | None = None) -> dict[str, Any]:
        return self.send(c.NETWORK_INSPECT, None, node, name=name).result

    # ------------------------------------------------------------------ queries

    def ping(self) -> dict[str, Any]:
        """The broker's health (answered by the broker, no worker needed)."""
        return self.send(c.PING).result

    def ps(self, all: bool = False) -> list[dict[str, Any]]:
        containers = self.send(c.PS, all=all).result.get("containers", [])
        return list(containers) if isinstance(containers, list) else []

    def inspect(self, ref: str) -> dict[str, Any]:
        return self.send(c.INSPECT, ref).result

    def history(self, ref: str, *, all: bool = False) -> dict[str, Any]:
        """The container's events; ``all``: of every container that had the name."""
        return self.send(c.HISTORY, ref, all=all).result

    def state(self, ref: str, **at: Any) -> dict[str, Any]:
        """State of a container now, or ``at_position=``/``at_time=`` in the past."""
        return self.send(c.STATE, ref, **at).result

    def logs(self, ref: str, *, node: str | None = None, **options: Any) -> dict[str, Any]:
        """Logs live on the container's node, so this query goes there."""
        return self._on_container(c.LOGS, ref, node, **options).result

    def events(self, after: int = 0, limit: int = 500,
               **filters: Any) -> tuple[list[EventMessage], int]:
        """Events with position > ``after`` (at most ``limit``) and the head position;
        ``filters``: ``container`` (a reference), ``types``, ``since``, ``until``.

        bus.results is imported here, as bus.subscription is below, to keep it off
        the import path of commands that never read events (``berth ps``)."""
        from bus.results import parse_events_result

        # The filters travel in the command's args: ``send``'s own ``container``
        # parameter names the command's target, which a filter is not.
        args = {"after": after, "limit": limit, **filters}
        return parse_events_result(self.request(self.command(c.EVENTS, args=args)).result)

    def rebuild(self) -> dict[str, Any]:
        return self.send(c.REBUILD, reply_timeout=max(self.timeout, 300.0)).result

    def verify_audit(self, heads: Iterable[dict[str, Any]] = (),
                     keys: Iterable[bytes] = ()) -> dict[str, Any]:
        """The log checked against the stored tree heads and ``heads`` (as
        ``berth audit checkpoint --out`` wrote them), trusting ``keys`` (raw Ed25519
        public keys) besides the worker's own."""
        return self.send(c.VERIFY_AUDIT, heads=list(heads), keys=list(keys),
                         reply_timeout=max(self.timeout, 300.0)).result

    def audit_checkpoint(self) -> dict[str, Any]:
        """A tree head over the log now, signed by the answering worker's auditor key."""
        return self.send(c.AUDIT_CHECKPOINT, reply_timeout=max(self.timeout, 300.0)).result

    def audit_prove(self, position: int, size: int | None = None) -> dict[str, Any]:
        args: dict[str, Any] = {"position": position}
        if size is not None:
            args["size"] = size
        return self.send(c.AUDIT_PROVE, reply_timeout=max(self.timeout, 300.0),
                         **args).result

    def audit_consistency(self, first: int) -> dict[str, Any]:
        """A new signed head and the proof that the log of ``first`` events (an older
        head's size) is a prefix of it."""
        return self.send(c.AUDIT_CONSISTENCY, first=first,
                         reply_timeout=max(self.timeout, 300.0)).result

    def audit_export(self, after: int = 0, limit: int = 1000) -> dict[str, Any]:
        return self.send(c.AUDIT_EXPORT, after=after, limit=limit,
                         reply_timeout=max(self.timeout, 60.0)).result

    # ------------------------------------------------------------------ volumes

    def volume_create(self, name: str, *, labels: dict[str, str] | None = None,
                      node: str | None = None) -> dict[str, Any]:
        """Create a named volume on ``node`` (None: the node that answers)."""
        return self.send(c.VOLUME_CREATE, None, node, name=name, labels=dict(labels or {})).result

    def volumes(self, *, node: str | None = None) -> list[dict[str, Any]]:
        found = self.send(c.VOLUME_LS, None, node).result.get("volumes", [])
        return list(found) if isinstance(found, list) else []

    def volume_inspect(self, name: str, *, node: str | None = None) -> dict[str, Any]:
        return self.send(c.VOLUME_INSPECT, None, node, name=name).result

    def volume_remove(self, *names: str, force: bool = False,
                      node: str | None = None) -> list[str]:
        """Remove volumes no container mounts; ``force``: a missing one is no error."""
        removed = self.send(c.VOLUME_REMOVE, None, node, names=list(names),
                            force=force).result.get("removed", [])
        return list(removed) if isinstance(removed, list) else []

    def volume_prune(self, *, node: str | None = None) -> list[str]:
        """Remove every volume no container mounts; the names removed."""
        removed = self.send(c.VOLUME_PRUNE, None, node).result.get("removed", [])
        return list(removed) if isinstance(removed, list) else []

    # ------------------------------------------------------------------ events

    def subscribe(self, from_position: int | None = None, types: Iterable[str] | None = None,
                  container: str | None = None, *, page_size: int = 500) -> Subscription:
        """A catch-up subscription: stored events from ``from_position`` (inclusive;
        None: only events after now), then live ones, with no gap and no duplicate."""
        fetcher = Client(",".join(self.endpoints), events_endpoint=self.events_endpoint,
                         actor=self.actor, timeout=self.timeout, retries=self.retries,
                         context=self._ctx, curve=self.curve)
        from bus.subscription import Subscription

        return Subscription(fetcher.events, self.events_endpoint, from_position=from_position,
                            types=types, container=container, page_size=page_size,
                            context=self._ctx, curve=self.curve,
                            on_close=fetcher.close)

    def wait_for(self, predicate: Callable[[EventMessage], bool], timeout: float, *,
                 from_position: int | None = None, types: Iterable[str] | None = None,
                 container: str | None = None) -> EventMessage:
        """The first event matching ``predicate``; raises Timeout after ``timeout`` s.
        Pass ``from_position`` (e.g. a reply's last position + 1) to not miss an event
        that happened before the call."""
        deadline = time.monotonic() + timeout
        with self.subscribe(from_position, types, container) as events:
            while (left := deadline - time.monotonic()) > 0:
                event = events.get(left)
                if event is not None and predicate(event):
                    return event
        raise Timeout(f"no matching event within {timeout:g}s")
