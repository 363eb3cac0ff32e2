"""The Docker Engine API's routes: each request becomes bus commands and queries,
sent with an actor naming the caller (bus.admission keeps a gateway's claim and
appends the identity it authenticated), so ``berth history`` shows which program
did what. This is one more publisher: no store, no runtime, no worker is touched
but through the bus.

Errors keep Docker's shape and status codes: berth's typed errors map by their
stable codes (``STATUS``); an unknown route is 404, a route berth will not serve
501.
"""

from __future__ import annotations

import base64
import json
import logging
import platform
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Final

from berth.dockerapi import events, execs, shapes
from berth.dockerapi.server import (
    API_VERSION,
    MIN_API_VERSION,
    HttpError,
    Request,
    Response,
    frames,
)
from bus.client import Client
from engine import command_types as t
from engine.errors import BerthError, InvalidState, NotFound

log = logging.getLogger("berth.docker-api")

STATUS: Final = {
    "invalid_argument": 400, "protocol_error": 400, "not_found": 404, "wrong_node": 404,
    "already_exists": 409, "invalid_state": 409, "permission_denied": 403,
    "command_not_found": 400, "command_not_invokable": 400, "timeout": 504,
    "unavailable": 503, "handed_back": 503, "passive": 503, "rate_limited": 429,
}
"""berth's error codes (engine.errors) -> HTTP status; anything else is berth's fault: 500."""

LONG: Final = 3600.0
"""Seconds an image pull may take before the server stops waiting for it."""
LOG_WAIT_MS: Final = 1000
KILL_WAIT: Final = 10.0
"""Seconds a SIGKILL's answer waits for the container to have stopped (Docker's)."""
_ATTACH_READY: Final = 10.0
MAX_TAIL: Final = 100_000
_VERSION_RE: Final = re.compile(r"^/v(\d+)\.(\d+)(/.*)$")
_FILTER_KEYS: Final = frozenset({"id", "name", "label", "status"})

Route = tuple[str, re.Pattern[str], Callable[..., Response]]


def _version_tuple(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor)


class DockerApi:
    """The request handler: one bus client per connection thread (a Client is not
    thread-safe), its actor set per request from the caller."""

    def __init__(self, endpoint: str | None = None, events_endpoint: str | None = None,
                 timeout: float = 30.0) -> None:
        self.endpoint = endpoint
        self.events_endpoint = events_endpoint
        self.timeout = timeout
        self._local = threading.local()
        self.execs = execs.Execs()
        self.routes: list[Route] = []
        self._table()

    # -- plumbing

    def client(self, request: Request) -> Client:
        client: Client | None = getattr(self._local, "client", None)
        if client is None:
            client = Client(self.endpoint, events_endpoint=self.events_endpoint,
                            timeout=self.timeout)
            self._local.client = client
        client.actor = request.caller.actor
        return client

    def release(self) -> None:
        """End of a connection: close its thread's bus client."""
        client: Client | None = getattr(self._local, "client", None)
        if client is not None:
            client.close()
            self._local.client = None

    def _add(self, method: str, pattern: str, handler: Callable[..., Response]) -> None:
        pattern = re.sub(r"\{(\w+):path\}", r"(?P<\1>.+)", pattern)  # image names have /
        regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")
        self.routes.append((method, regex, handler))

    def __call__(self, request: Request) -> Response:
        path = request.path
        match = _VERSION_RE.match(path)
        if match:
            asked = (int(match.group(1)), int(match.group(2)))
            if asked > _version_tuple(API_VERSION):
                raise HttpError(400, f"client version {asked[0]}.{asked[1]} is too new. "
                                     f"Maximum supported API version is {API_VERSION}")
            if asked < _version_tuple(MIN_API_VERSION):
                raise HttpError(400, f"client version {asked[0]}.{asked[1]} is too old. "
                                     f"Minimum supported API version is {MIN_API_VERSION}, "
                                     "please upgrade your client to a newer version")
            request.version = f"{asked[0]}.{asked[1]}"
            path = match.group(3)
        if len(path) > 4096 or "\x00" in path:
            raise HttpError(400, "invalid request path")
        allowed = False
        for method, regex, handler in self.routes:
            found = regex.match(path)
            if found is None:
                continue
            if method != request.method and not (method == "GET" and request.method == "HEAD"):
                allowed = True
                continue
            try:
                return handler(request, **found.groupdict())
            except BerthError as e:
                raise HttpError(STATUS.get(e.code, 500), str(e)) from None
        if allowed:
            raise HttpError(405, f"method {request.method} is not allowed on {path}")
        for prefix in _NOT_SERVED:
            if path.startswith(prefix):
                raise HttpError(501, f"{path}: berth does not implement this part of the "
                                     "Docker API")
        raise HttpError(404, f"page not found: {request.method} {path}")

    def _table(self) -> None:
        add = self._add
        add("GET", "/_ping", self.ping)
        add("GET", "/version", self.version)
        add("GET", "/info", self.info)
        add("GET", "/events", self.events)
        add("POST", "/containers/create", self.create)
        add("POST", "/containers/prune", self.container_prune)
        add("POST", "/volumes/prune", self.volume_prune)
        add("POST", "/networks/prune", self.network_prune)
        add("POST", "/images/prune", self.image_prune)
        add("GET", "/system/df", self.system_df)
        add("GET", "/containers/json", self.container_list)
        add("GET", "/containers/{ref}/json", self.container_inspect)
        add("POST", "/containers/{ref}/start", self.start)
        add("POST", "/containers/{ref}/stop", self.stop)
        add("POST", "/containers/{ref}/restart", self.restart)
        add("POST", "/containers/{ref}/kill", self.kill)
        add("POST", "/containers/{ref}/pause", self.pause)
        add("POST", "/containers/{ref}/unpause", self.unpause)
        add("POST", "/containers/{ref}/wait", self.wait)
        add("POST", "/containers/{ref}/rename", self.rename)
        add("DELETE", "/containers/{ref}", self.remove)
        add("GET", "/containers/{ref}/logs", self.logs)
        add("GET", "/containers/{ref}/top", self.top)
        add("GET", "/containers/{ref}/archive", self.archive_get)
        add("PUT", "/containers/{ref}/archive", self.archive_put)
        add("GET", "/containers/{ref}/stats", self.stats)
        add("POST", "/containers/{ref}/update", self.update)
        add("POST", "/containers/{ref}/attach", self.attach)
        add("POST", "/containers/{ref}/exec", self.exec_create)
        add("POST", "/exec/{exec_id}/start", self.exec_start)
        add("GET", "/exec/{exec_id}/json", self.exec_inspect)
        add("GET", "/images/json", self.image_list)
        add("POST", "/images/create", self.image_pull)
        add("GET", "/images/search", self.image_search)
        add("GET", "/images/{name:path}/json", self.image_inspect)
        add("GET", "/images/{name:path}/history", self.image_history)
        add("POST", "/images/{name:path}/tag", self.image_tag)
        add("DELETE", "/images/{name:path}", self.image_remove)
        add("GET", "/networks", self.network_list)
        add("POST", "/networks/create", self.network_create)
        add("GET", "/networks/{name}", self.network_inspect)
        add("DELETE", "/networks/{name}", self.network_remove)
        add("GET", "/swarm", self.not_in_swarm)
        add("POST", "/swarm/leave", self.not_in_swarm)
        add("GET", "/plugins", lambda request: Response.of_json([]))
        add("GET", "/plugins/{name}/json", self.plugin_inspect)
        add("GET", "/volumes", self.volume_list)
        add("POST", "/volumes/create", self.volume_create)
        add("GET", "/volumes/{name}", self.volume_inspect)
        add("DELETE", "/volumes/{name}", self.volume_remove)

    # -- system

    def ping(self, request: Request) -> Response:
        return Response(200, b"OK", content_type="text/plain; charset=utf-8",
                        headers=[("Cache-Control", "no-cache, no-store, must-revalidate"),
                                 ("Pragma", "no-cache")])

    def version(self, request: Request) -> Response:
        from berth.cli.system import berth_version

        ver = berth_version()
        return Response.of_json({
            "Platform": {"Name": "berth"},
            "Components": [{"Name": "Engine", "Version": ver,
                            "Details": {"ApiVersion": API_VERSION,
                                        "MinAPIVersion": MIN_API_VERSION}}],
            "Version": ver, "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION,
            "GitCommit": "", "GoVersion": f"python{platform.python_version()}",
            "Os": "linux", "Arch": _arch(), "KernelVersion": platform.release(),
            "BuildTime": "",
        })

    def info(self, request: Request) -> Response:
        from berth.cli.system import berth_version

        client = self.client(request)
        containers = client.ps(all=True)
        states = [c.get("state") for c in containers]
        images = client.send(t.IMAGE_LIST).result.get("images", [])
        return Response.of_json({
            "ID": "", "Name": platform.node(), "ServerVersion": berth_version(),
            "Containers": len(containers), "ContainersRunning": states.count("running"),
            "ContainersPaused": states.count("paused"),
            "ContainersStopped": len(states) - states.count("running") - states.count("paused"),
            "Images": len(images) if isinstance(images, list) else 0,
            "Driver": "overlay", "DockerRootDir": "", "OperatingSystem": "berth",
            "OSType": "linux", "Architecture": _arch(), "KernelVersion": platform.release(),
            "NCPU": _cpus(), "MemTotal": _memory(), "CgroupVersion": "2",
            "CgroupDriver": "systemd", "LoggingDriver": "json-file",
            "SecurityOptions": ["name=seccomp,profile=default"],
            "Swarm": {"LocalNodeState": "inactive"}, "Runtimes": {"runc": {"path": "runc"}},
            "DefaultRuntime": "runc", "Labels": [], "ExperimentalBuild": False,
            "Debug": log.isEnabledFor(logging.DEBUG),
        })

    def events(self, request: Request) -> Response:
        since = events.parse_time(request.arg("since"), "since")
        until = events.parse_time(request.arg("until"), "until")
        filters = _filters(request, events.FILTERS)
        client = self.client(request)

        def chunks() -> Iterator[bytes]:
            for event in events.stream(client, since, until, filters,
                                       lambda: datetime.now(UTC)):
                yield json.dumps(event).encode() + b"\n" if event else b"\n"

        return Response(200, chunks=chunks())

    # -- containers

    def create(self, request: Request) -> Response:
        spec = shapes.create_spec(request.json())
        name = shapes.container_name(request.arg("name"))
        if request.arg("platform"):
            raise HttpError(400, "berth runs linux images of this machine's architecture; "
                                 "leave platform out")
        client = self.client(request)
        try:
            reply = client.create(name=name, **spec)
        except NotFound as e:
            if "image" in str(e).lower():
                raise HttpError(404, f"No such image: {spec['image']}") from None
            raise
        return Response.of_json({"Id": reply.result["id"], "Warnings": []}, 201)

    def _info(self, request: Request, ref: str) -> dict[str, Any]:
        try:
            info = self.client(request).inspect(ref)
        except NotFound:
            raise HttpError(404, f"No such container: {ref}") from None
        if info.get("state") == "removed":  # berth keeps its history; Docker forgets it
            raise HttpError(404, f"No such container: {ref}")
        return info

    def container_list(self, request: Request) -> Response:
        filters = _filters(request)
        limit = request.integer("limit", -1)
        show_all = request.flag("all") or (limit is not None and limit > 0)
        found = self.client(request).ps(all=show_all)
        found.sort(key=lambda c: str(c.get("created_at") or ""), reverse=True)
        found = [c for c in found if _matches(c, filters)]
        if limit is not None and limit > 0:
            found = found[:limit]
        now = datetime.now(UTC)
        return Response.of_json([shapes.container_summary(c, now) for c in found])

    def container_inspect(self, request: Request, ref: str) -> Response:
        info = self._info(request, ref)
        return Response.of_json(shapes.container_inspect(info, self._volume_paths(request, info)))

    def _volume_paths(self, request: Request, info: dict[str, Any]) -> dict[str, str]:
        """Each named volume the container mounts -> its directory (Docker's
        ``Mounts[].Source``): one query per volume, none for a container without."""
        paths: dict[str, str] = {}
        for m in (info.get("spec") or {}).get("mounts") or []:
            if m.get("type") == "volume" and m.get("source"):
                try:
                    found = self.client(request).volume_inspect(str(m["source"]))
                except NotFound:
                    continue
                paths[str(m["source"])] = str(found.get("mountpoint") or "")
        return paths

    def _state(self, request: Request, ref: str) -> tuple[str, str]:
        info = self._info(request, ref)
        return str(info["id"]), str(info.get("state"))

    def start(self, request: Request, ref: str) -> Response:
        # straight to the command (one round trip); the state is read only to word a
        # refusal as Docker does (304 for a running container)
        try:
            self.client(request).start(ref)
        except NotFound:
            raise HttpError(404, f"No such container: {ref}") from None
        except InvalidState:
            _cid, state = self._state(request, ref)
            if state in ("running", "paused"):
                return Response.empty(304)
            raise
        return Response.empty()

    def stop(self, request: Request, ref: str) -> Response:
        cid, state = self._state(request, ref)
        if state not in ("running", "paused"):
            return Response.empty(304)
        self.client(request).stop(cid, float(_timeout(request)))
        return Response.empty()

    def restart(self, request: Request, ref: str) -> Response:
        cid, state = self._state(request, ref)
        client = self.client(request)
        if state in ("running", "paused"):
            client.stop(cid, float(_timeout(request)))
        client.start(cid)
        return Response.empty()

    def kill(self, request: Request, ref: str) -> Response:
        cid, state = self._state(request, ref)
        if state not in ("running", "paused"):
            raise HttpError(409, f"Cannot kill container: {ref}: Container {cid} is not "
                                 "running")
        signal = request.arg("signal") or "SIGKILL"
        client = self.client(request)
        client.kill(cid, int(signal) if signal.isdigit() else signal)
        if signal.upper() in ("SIGKILL", "KILL", "9"):
            # Docker's daemon answers a SIGKILL once the container has stopped (at most
            # 10 s): clients inspect it right after and expect it exited
            try:
                client.wait(cid, KILL_WAIT)
            except BerthError as e:
                if e.code not in ("timeout", "not_found"):
                    raise
        return Response.empty()

    def pause(self, request: Request, ref: str) -> Response:
        cid, _ = self._state(request, ref)
        self.client(request).pause(cid)
        return Response.empty()

    def unpause(self, request: Request, ref: str) -> Response:
        cid, _ = self._state(request, ref)
        self.client(request).unpause(cid)
        return Response.empty()

    def rename(self, request: Request, ref: str) -> Response:
        cid, _ = self._state(request, ref)
        name = shapes.container_name(request.arg("name"))
        if name is None:
            raise HttpError(400, "rename: give the new name (name=NEW)")
        self.client(request).rename(cid, name)
        return Response.empty()

    def wait(self, request: Request, ref: str) -> Response:
        condition = request.arg("condition") or "not-running"
        if condition not in ("not-running", "next-exit", "removed"):
            raise HttpError(400, f"invalid condition {condition!r}: not-running, next-exit "
                                 "or removed")
        info = self._info(request, ref)
        cid, state = str(info["id"]), str(info.get("state"))
        client = self.client(request)

        def answer() -> Iterator[bytes]:
            # The head goes out before this runs, as Docker's daemon sends it at once:
            # the docker CLI waits for it before it starts the container it waits for.
            if condition == "not-running" and state not in ("running", "paused"):
                code = info.get("exit_code")
            else:
                try:
                    code = client.wait(cid).result.get("exit_code")
                except NotFound:
                    code = info.get("exit_code")
            if condition == "removed":
                while True:
                    try:
                        if client.inspect(cid).get("state") == "removed":
                            break
                    except NotFound:
                        break
                    time.sleep(0.2)
            yield json.dumps({"StatusCode": code if isinstance(code, int) else 0,
                              "Error": None}).encode()

        return Response(200, chunks=answer())

    def remove(self, request: Request, ref: str) -> Response:
        force = request.flag("force")
        anonymous: list[str] = []
        if request.flag("v"):  # the container's anonymous volumes go with it
            anonymous = [str(m["source"]) for m in (self._info(request, ref).get("spec") or {})
                         .get("mounts") or [] if m.get("type") == "volume"
                         and shapes.ANONYMOUS_RE.match(str(m.get("source") or ""))]
        try:
            self.client(request).remove(ref, force=force)
        except NotFound:
            raise HttpError(404, f"No such container: {ref}") from None
        except InvalidState:
            cid, state = self._state(request, ref)
            if state in ("running", "paused"):
                raise HttpError(409, f"You cannot remove a running container {cid}. Stop "
                                     "the container before attempting removal or force "
                                     "remove") from None
            raise
        for name in anonymous:
            try:
                self.client(request).volume_remove(name)
            except (NotFound, InvalidState):
                pass  # gone already, or another container mounts it now: it stays
        return Response.empty()

    def top(self, request: Request, ref: str) -> Response:
        cid, state = self._state(request, ref)
        if state != "running":
            raise HttpError(409, f"Container {cid} is not running")
        found = self.client(request).top(cid)
        processes = found.get("processes") or []
        titles = ["PID", "USER", "TIME", "CMD"]
        rows = [[str(p.get("pid", "")), str(p.get("user", "")), str(p.get("time", "")),
                 str(p.get("command", p.get("cmd", "")))]
                for p in processes if isinstance(p, dict)]
        return Response.of_json({"Titles": titles, "Processes": rows})

    def archive_get(self, request: Request, ref: str) -> Response:
        """A tar of ``path`` in the container (berth cp's copy, resolved inside the
        container's root by the worker), its stat in ``X-Docker-Container-Path-Stat``;
        HEAD answers the stat alone."""
        path = shapes.text(request.arg("path") or "", "path", allow_empty=False)
        cid, _state = self._state(request, ref)
        try:
            data = self.client(request).copy_out(cid, path)
        except (NotFound, BerthError) as e:
            if isinstance(e, NotFound) or e.code == "invalid_argument":
                raise HttpError(404, f"Could not find the file {path} in container "
                                     f"{ref}: {e}") from None
            raise
        stat = base64.b64encode(json.dumps(shapes.path_stat(data, path)).encode()).decode()
        return Response(200, data, content_type="application/x-tar",
                        headers=[("X-Docker-Container-Path-Stat", stat)])

    def archive_put(self, request: Request, ref: str) -> Response:
        """Extract the body's tar into the directory ``path`` in the container, each
        top-level entry one copy (berth cp's, inside the container's root)."""
        path = shapes.text(request.arg("path") or "", "path", allow_empty=False)
        request.flag("noOverwriteDirNonDir")
        request.flag("copyUIDGID")
        cid, _state = self._state(request, ref)
        parts = shapes.split_archive(request.body)
        dest = path.rstrip("/") + "/"
        for part in parts:
            try:
                self.client(request).copy_in(cid, dest, part)
            except NotFound as e:
                raise HttpError(404, f"Could not find the file {path} in container "
                                     f"{ref}: {e}") from None
        return Response.empty(200)

    def stats(self, request: Request, ref: str) -> Response:
        """Docker's stats samples from berth's usage counters: one (``stream=0``) or
        one a second until the container stops or the client goes."""
        stream = request.flag("stream", True)
        request.flag("one-shot")
        info = self._info(request, ref)
        client = self.client(request)

        def sample(previous: dict[str, Any] | None) -> dict[str, Any]:
            usage = None
            if info.get("state") == "running" or previous is not None:
                try:
                    usage = client.stats(str(info["id"])).get("usage")
                except (NotFound, InvalidState):
                    usage = None
            return shapes.stats(info, usage, _system_ns(), _cpus(), previous, datetime.now(UTC))

        if not stream:
            return Response.of_json(sample(None))

        def samples() -> Iterator[bytes]:
            previous: dict[str, Any] | None = None
            while True:
                now = sample(previous)
                yield json.dumps(now).encode() + b"\n"
                if not now["cpu_stats"]["online_cpus"]:
                    return  # not running: Docker's zeros once, then the end
                previous = now
                time.sleep(1.0)

        return Response(200, chunks=samples())

    def update(self, request: Request, ref: str) -> Response:
        changes = shapes.update_spec(request.json())
        cid, _state = self._state(request, ref)
        if changes:
            self.client(request).update(cid, **changes)
        return Response.of_json({"Warnings": []})

    def container_prune(self, request: Request) -> Response:
        """Remove every container not running (each one recorded remove)."""
        _prune_filters(request)
        client = self.client(request)
        deleted = []
        for c in client.ps(all=True):
            if c.get("state") in ("created", "exited", "stopped"):
                try:
                    client.remove(str(c["id"]))
                except (NotFound, InvalidState):
                    continue  # started or removed meanwhile
                deleted.append(str(c["id"]))
        return Response.of_json({"ContainersDeleted": deleted or None, "SpaceReclaimed": 0})

    def volume_prune(self, request: Request) -> Response:
        _prune_filters(request)
        removed = self.client(request).volume_prune()
        return Response.of_json({"VolumesDeleted": removed or None, "SpaceReclaimed": 0})

    def network_prune(self, request: Request) -> Response:
        """Remove every network of the user's no container is attached to (berth
        refuses a network in use: those stay)."""
        _prune_filters(request)
        client = self.client(request)
        deleted = []
        for n in client.networks():
            if n.get("builtin"):
                continue
            try:
                client.network_remove(str(n["name"]))
            except (NotFound, InvalidState):
                continue
            except BerthError as e:
                if e.code != "invalid_argument":
                    raise
                continue
            deleted.append(str(n["name"]))
        return Response.of_json({"NetworksDeleted": deleted or None})

    def image_prune(self, request: Request) -> Response:
        """berth's image prune: the images no container uses and no name holds."""
        filters = _prune_filters(request, frozenset({"dangling", "until", "label"}))
        if filters.get("dangling") in (["false"], ["0"]):
            raise HttpError(400, "berth prunes dangling images only: leave out "
                                 "dangling=false")
        result = self.client(request).send(t.IMAGE_PRUNE).result
        removed = [i for i in result.get("removed") or [] if isinstance(i, dict)]
        return Response.of_json({"ImagesDeleted": [{"Deleted": _image_id(i.get("id"))}
                                                   for i in removed] or None,
                                 "SpaceReclaimed": sum(int(i.get("size") or 0)
                                                       for i in removed)})

    def system_df(self, request: Request) -> Response:
        """Disk use as Docker lists it: images, containers, volumes (berth does not
        walk trees for it: sizes are the stores' own)."""
        client = self.client(request)
        images = json.loads(self.image_list(request).body)
        containers = client.ps(all=True)
        now = datetime.now(UTC)
        volumes = [dict(_volume(v), UsageData={"Size": -1, "RefCount": -1})
                   for v in client.volumes()]
        return Response.of_json({
            "LayersSize": sum(int(i.get("Size") or 0) for i in images),
            "Images": images,
            "Containers": [shapes.container_summary(c, now) for c in containers],
            "Volumes": volumes, "BuildCache": []})

    def logs(self, request: Request, ref: str) -> Response:
        info = self._info(request, ref)
        cid = str(info["id"])
        out, err = request.flag("stdout"), request.flag("stderr")
        if not out and not err:
            raise HttpError(400, "Bad parameters: you must choose at least one stream")
        follow, stamps = request.flag("follow"), request.flag("timestamps")
        tail_text = request.arg("tail") or "all"
        if tail_text == "all":
            tail = None
        elif tail_text.isdigit():
            tail = min(int(tail_text), MAX_TAIL)
        else:
            raise HttpError(400, f"invalid tail {tail_text!r}: a number or all")
        since = _moment(request, "since")
        until = _moment(request, "until")
        tty = bool((info.get("spec") or {}).get("terminal"))
        client = self.client(request)

        def pieces() -> Iterator[tuple[int, bytes]]:
            offset, kept = 0, deque[list[str]](maxlen=tail) if tail is not None else None
            caught_up = False
            while True:
                chunk = client.logs(cid, offset=offset,
                                    wait_ms=LOG_WAIT_MS if caught_up and follow else 0)
                lines = chunk.get("lines") or []
                new = int(chunk.get("offset") or offset)
                for line in lines:
                    if kept is not None and not caught_up:
                        kept.append(line)
                    else:
                        yield from _piece(line, out, err, stamps, since, until)
                if new == offset and not lines:
                    if not caught_up:
                        caught_up = True
                        for line in kept or ():
                            yield from _piece(line, out, err, stamps, since, until)
                        kept = None
                        if not follow:
                            return
                    elif chunk.get("state") in ("exited", "removed"):
                        return
                offset = new

        if tty:
            return Response(200, chunks=(data for _s, data in pieces()),
                            content_type="application/vnd.docker.raw-stream")
        return Response(200, chunks=frames(pieces()),
                        content_type="application/vnd.docker.multiplexed-stream")

    # -- attach

    def attach(self, request: Request, ref: str) -> Response:
        """A hijacked connection to the container's stdio (its log first with
        ``logs=1``); on a terminal the client leaves with the detach keys (default
        ctrl-p,ctrl-q); without one stdin is data, as Docker's attach copies it."""
        from berth.cli.attach import detach_keys_for, located

        info = self._info(request, ref)
        cid, spec = str(info["id"]), info.get("spec") or {}
        tty = bool(spec.get("terminal"))
        stdin = request.flag("stdin") and bool(spec.get("stdin"))
        stream, logs = request.flag("stream"), request.flag("logs")
        pipes = execs.Pipes(tty=tty, stdin=stdin, stdout=request.flag("stdout"),
                            stderr=request.flag("stderr"),
                            detach_keys=detach_keys_for(
                                request.arg("detachKeys") or "ctrl-p,ctrl-q", stdin=stdin,
                                use_tty=tty))
        client = self.client(request)
        where, _target, _node = located(client, cid)
        if stream and where is None:
            raise HttpError(501, "attach needs the worker's stream socket, which this "
                                 "node's worker does not offer")
        upgrade = "upgrade" in request.headers.get("connection", "").lower()
        kind = "raw-stream" if tty else "multiplexed-stream"
        headers = [("Connection", "Upgrade"), ("Upgrade", "tcp")] if upgrade else []
        # Attached before the head is sent: the docker CLI starts the container as soon
        # as it has the head, and a short-lived process would be gone (its output
        # lost) if the session were opened only then.
        session = where.session() if stream and where is not None else None
        first = None
        try:
            if session is not None:
                session.open("attach", cid, stdin=pipes.stdin, tty=tty)
                first = session.recv(_ATTACH_READY)
                if first is None:
                    raise HttpError(503, f"the worker did not attach to {cid[:12]} within "
                                         f"{_ATTACH_READY:g} s")
        except BaseException:
            if session is not None:
                session.close()
            raise

        def hijack(sock: Any, leftover: bytes) -> None:
            try:
                if logs:
                    self._past_logs(client, cid, sock, pipes)
                if session is not None and first is not None and first.op != "exit":
                    execs.pump_session(sock, leftover, session, pipes, lambda: None)
            except (OSError, BerthError) as e:
                log.debug("attach to %s ended: %s", cid[:12], e)
            finally:
                if session is not None:
                    session.close()

        return Response(101 if upgrade else 200, content_type=f"application/vnd.docker.{kind}",
                        headers=headers, hijack=hijack)

    @staticmethod
    def _past_logs(client: Client, cid: str, sock: Any, pipes: execs.Pipes) -> None:
        offset = 0
        while True:
            chunk = client.logs(cid, offset=offset)
            lines = chunk.get("lines") or []
            for line in lines:
                for fd, data in _piece(line, pipes.stdout, pipes.stderr, False, None, None):
                    sock.sendall(data if pipes.tty else b"".join(frames([(fd, data)])))
            new = int(chunk.get("offset") or offset)
            if new == offset or not lines:
                return
            offset = new

    # -- exec

    def exec_create(self, request: Request, ref: str) -> Response:
        cid, state = self._state(request, ref)
        if state != "running":
            raise HttpError(409, f"Container {cid} is not running")
        config = execs.exec_config(cid, request.json())
        self.execs.add(config)
        return Response.of_json({"Id": config.id}, 201)

    def exec_start(self, request: Request, exec_id: str) -> Response:
        config = self.execs.get(exec_id)
        body = shapes.mapping(request.json() or {}, "body")
        detach = bool(body.get("Detach")) and shapes.boolean(body["Detach"], "Detach")
        if body.get("Tty") is not None:
            config.raw = shapes.boolean(body["Tty"], "Tty")
        self.execs.claim(config)
        caller = self.client(request)
        own = Client(self.endpoint, events_endpoint=self.events_endpoint,
                     actor=caller.actor, timeout=self.timeout)
        if detach:
            execs.run_detached(own, config)
            return Response.empty(200)
        from berth.cli.attach import located

        try:
            where, _target, _node = located(own, config.container)
        except BerthError:
            own.close()
            config.running = False
            config.done.set()
            raise
        upgrade = "upgrade" in request.headers.get("connection", "").lower()
        kind = "raw-stream" if config.unframed else "multiplexed-stream"
        headers = [("Connection", "Upgrade"), ("Upgrade", "tcp")] if upgrade else []

        def hijack(sock: Any, leftover: bytes) -> None:
            try:
                execs.pump(sock, leftover, own, config, where)
            finally:
                own.close()

        return Response(101 if upgrade else 200, content_type=f"application/vnd.docker.{kind}",
                        headers=headers, hijack=hijack)

    def exec_inspect(self, request: Request, exec_id: str) -> Response:
        return Response.of_json(self.execs.get(exec_id).inspect())

    # -- images

    def image_list(self, request: Request) -> Response:
        found = self.client(request).send(t.IMAGE_LIST).result.get("images") or []
        by_id: dict[str, dict[str, Any]] = {}
        for image in found:
            entry = by_id.setdefault(str(image["id"]), {
                "Id": _image_id(image["id"]), "ParentId": "", "RepoTags": [], "RepoDigests": [],
                "Created": unix_time_or_zero(image.get("created")),
                "Size": image.get("size") or 0, "SharedSize": -1,
                "VirtualSize": image.get("size") or 0, "Labels": {}, "Containers": -1})
            if image.get("name"):
                entry["RepoTags"].append(_familiar(image))
                if image.get("digest"):
                    entry["RepoDigests"].append(f"{image['repository']}@{image['digest']}")
        return Response.of_json(list(by_id.values()))

    def _image(self, request: Request, name: str) -> dict[str, Any]:
        try:
            return self.client(request).send(t.IMAGE_INSPECT, reference=name).result
        except (NotFound, HttpError):
            raise HttpError(404, f"No such image: {name}") from None
        except BerthError as e:
            if e.code == "invalid_argument":
                raise HttpError(404, f"No such image: {name}") from None
            raise

    def image_inspect(self, request: Request, name: str) -> Response:
        image = self._image(request, name)
        config = image.get("config") or {}
        return Response.of_json({
            "Id": _image_id(image["id"]),
            "RepoTags": [_familiar(image)] if image.get("name") else [],
            "RepoDigests": [f"{image['repository']}@{image['digest']}"]
            if image.get("digest") and image.get("name") else [],
            "Parent": "", "Comment": "", "Created": shapes.docker_time(image.get("created")),
            "Container": "", "DockerVersion": "", "Author": "",
            "Config": {"Cmd": config.get("Cmd"), "Entrypoint": config.get("Entrypoint"),
                       "Env": config.get("Env") or [], "WorkingDir": config.get("WorkingDir") or "",
                       "User": config.get("User") or "", "Labels": config.get("Labels") or {},
                       "ExposedPorts": config.get("ExposedPorts"),
                       "StopSignal": config.get("StopSignal") or ""},
            "Architecture": image.get("architecture") or "", "Os": image.get("os") or "linux",
            "Size": image.get("size") or 0, "VirtualSize": image.get("size") or 0,
            "RootFS": {"Type": "layers", "Layers": list(image.get("diff_ids") or [])},
            "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
        })

    def image_history(self, request: Request, name: str) -> Response:
        """One entry per layer, newest first (berth keeps the layers, not the build
        steps' history: ``CreatedBy`` is empty)."""
        image = self._image(request, name)
        created = unix_time_or_zero(image.get("created"))
        layers = list(image.get("diff_ids") or [])[::-1]
        tags = [_familiar(image)] if image.get("name") else []
        return Response.of_json([
            {"Id": _image_id(image["id"]) if i == 0 else "<missing>", "Created": created,
             "CreatedBy": "", "Tags": tags if i == 0 else None, "Size": 0, "Comment": ""}
            for i, _layer in enumerate(layers or [""])])

    def image_pull(self, request: Request) -> Response:
        if request.arg("fromSrc"):
            raise HttpError(501, "image import (fromSrc) is not implemented by berth's "
                                 "Docker API; use berth image import")
        source = shapes.text(request.arg("fromImage") or "", "fromImage", allow_empty=False)
        tag = shapes.text(request.arg("tag") or "", "tag")
        if tag and "@" not in source and ":" not in source.rpartition("/")[2]:
            reference = f"{source}:{tag}" if not tag.startswith("sha256:") else f"{source}@{tag}"
        else:
            reference = source
        if request.arg("platform"):
            raise HttpError(400, "berth pulls images of this machine's architecture; leave "
                                 "platform out")
        client = self.client(request)
        args: dict[str, Any] = {"reference": reference, "tls_verify": not _local(reference)}
        creds = registry_creds(request.headers.get("x-registry-auth"))
        if creds:  # passed to the pull only: never recorded, never logged
            args["creds"] = creds
        command = client.command(t.IMAGE_PULL, None, None, args)
        try:
            result = client.request_patiently(command, time.monotonic() + LONG).result
        except NotFound as e:
            raise HttpError(404, f"pull access denied for {source}, repository does not "
                                 f"exist or may require 'docker login': {e}") from None
        image = result.get("image") or {}
        pulled = bool(result.get("pulled", True))
        outcome = "Downloaded newer image" if pulled else "Image is up to date"
        lines = [{"status": f"Pulling from {source}", "id": tag or "latest"},
                 {"status": f"Digest: {image.get('digest', '')}"},
                 {"status": f"Status: {outcome} for {reference}"}]
        return Response(200, chunks=(json.dumps(x).encode() + b"\r\n" for x in lines))

    def image_search(self, request: Request) -> Response:
        raise HttpError(501, "image search is not implemented by berth: it works offline")

    def image_tag(self, request: Request, name: str) -> Response:
        repo = shapes.text(request.arg("repo") or "", "repo", allow_empty=False)
        tag = shapes.text(request.arg("tag") or "latest", "tag")
        self._image(request, name)
        self.client(request).send(t.IMAGE_TAG, reference=name, target=f"{repo}:{tag}")
        return Response.empty(201)

    def image_remove(self, request: Request, name: str) -> Response:
        image = self._image(request, name)
        force = request.flag("force")
        request.flag("noprune")
        self.client(request).send(t.IMAGE_REMOVE, references=[name], force=force)
        return Response.of_json([{"Untagged": name}, {"Deleted": _image_id(image["id"])}])

    # -- networks

    def network_list(self, request: Request) -> Response:
        filters = _filters(request, frozenset({"name", "id", "label", "driver", "type"}))
        found = self.client(request).networks()
        shaped = [(_network(n), bool(n.get("builtin"))) for n in found]
        return Response.of_json([n for n, builtin in shaped
                                 if shapes.object_matches(dict(n, Builtin=builtin), filters)])

    def _network(self, request: Request, name: str) -> dict[str, Any]:
        try:
            return self.client(request).network_inspect(name)
        except NotFound:
            raise HttpError(404, f"network {name} not found") from None

    def network_inspect(self, request: Request, name: str) -> Response:
        return Response.of_json(_network(self._network(request, name)))

    def network_create(self, request: Request) -> Response:
        body = shapes.mapping(request.json() or {}, "body")
        name = shapes.text(body.get("Name"), "Name", allow_empty=False)
        driver = body.get("Driver") or "bridge"
        if driver != "bridge":
            raise HttpError(400, f"network driver {driver!r} is not supported by berth: bridge")
        subnet = gateway = ""
        ipam = body.get("IPAM")
        if ipam is not None:
            configs = shapes.mapping(ipam, "IPAM").get("Config") or []
            if not isinstance(configs, list) or len(configs) > 1:
                raise HttpError(400, "invalid IPAM.Config: berth takes one subnet")
            for cfg in configs:
                cfg = shapes.mapping(cfg, "IPAM.Config[0]")
                subnet = shapes.text(cfg.get("Subnet") or "", "IPAM.Config[0].Subnet")
                gateway = shapes.text(cfg.get("Gateway") or "", "IPAM.Config[0].Gateway")
        for key in ("Internal", "Attachable", "Ingress", "EnableIPv6", "ConfigOnly"):
            if body.get(key):
                raise HttpError(400, f"network option {key} is not supported by berth")
        client = self.client(request)
        if any(n.get("name") == name for n in client.networks()):
            raise HttpError(409, f"network with name {name} already exists")
        client.network_create(name, subnet=subnet or None, gateway=gateway or None)
        created = client.network_inspect(name)
        return Response.of_json({"Id": _network_id(created), "Warning": ""}, 201)

    def network_remove(self, request: Request, name: str) -> Response:
        self._network(request, name)
        self.client(request).network_remove(name)
        return Response.empty()

    def not_in_swarm(self, request: Request) -> Response:
        """What Docker's daemon answers outside a swarm (clients leave one with force
        and take this 503 as done); joining or making one is 501."""
        raise HttpError(503, "This node is not part of a swarm")

    def plugin_inspect(self, request: Request, name: str) -> Response:
        """berth has no plugins; ``docker inspect NAME`` asks here after the other
        kinds, so Docker's 404 lets it say "No such object"."""
        raise HttpError(404, f"plugin {name!r} not found")

    # -- volumes

    def volume_list(self, request: Request) -> Response:
        filters = _filters(request, frozenset({"name", "label", "driver"}))
        found = [_volume(v) for v in self.client(request).volumes()]
        return Response.of_json({"Volumes": [v for v in found
                                             if shapes.object_matches(v, filters)],
                                 "Warnings": []})

    def volume_inspect(self, request: Request, name: str) -> Response:
        try:
            return Response.of_json(_volume(self.client(request).volume_inspect(name)))
        except NotFound:
            raise HttpError(404, f"get {name}: no such volume") from None

    def volume_create(self, request: Request) -> Response:
        body = shapes.mapping(request.json() or {}, "body")
        name = shapes.text(body.get("Name") or "", "Name")
        if not name:
            import uuid

            name = uuid.uuid4().hex + uuid.uuid4().hex
        driver = body.get("Driver") or "local"
        if driver != "local" or not shapes.empty(body.get("DriverOpts")):
            raise HttpError(400, "berth's volumes are local directories: no driver or "
                                 "driver options")
        labels = shapes.mapping(body.get("Labels") or {}, "Labels")
        labels = {k: shapes.text(v, f"Labels[{k}]") for k, v in labels.items()}
        client = self.client(request)
        try:
            return Response.of_json(_volume(client.volume_inspect(name)), 201)
        except NotFound:
            pass
        return Response.of_json(_volume(client.volume_create(name, labels=labels)), 201)

    def volume_remove(self, request: Request, name: str) -> Response:
        force = request.flag("force")
        client = self.client(request)
        try:
            client.volume_inspect(name)
        except NotFound:
            if force:
                return Response.empty()
            raise HttpError(404, f"get {name}: no such volume") from None
        client.volume_remove(name)
        return Response.empty()


_NOT_SERVED: Final = ("/swarm", "/nodes", "/services", "/tasks", "/secrets", "/configs",
                      "/plugins", "/build", "/session", "/distribution", "/exec",
                      "/containers/", "/images/", "/networks/", "/volumes/", "/system/",
                      "/auth", "/commit")


# --------------------------------------------------------------------------- helpers


def registry_creds(header: str | None) -> str | None:
    """``X-Registry-Auth`` (base64url JSON: username and password, or an identity
    token berth cannot use) -> berth's ``USER:PASSWORD`` credentials; None when it
    names no user. A header that does not decode is 400 (and not echoed)."""
    if not header:
        return None
    try:
        padded = header + "=" * (-len(header) % 4)
        auth = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, UnicodeError):
        raise HttpError(400, "invalid X-Registry-Auth header: base64url of a JSON "
                             "object") from None
    if not isinstance(auth, dict):
        raise HttpError(400, "invalid X-Registry-Auth header: base64url of a JSON object")
    user, password = auth.get("username"), auth.get("password")
    if not user:
        return None
    if not isinstance(user, str) or not isinstance(password, str) or ":" in user \
            or "\0" in user + password:
        raise HttpError(400, "invalid X-Registry-Auth header: username and password "
                             "must be strings, the username without a colon")
    return f"{user}:{password}"


def _prune_filters(request: Request,
                   known: frozenset[str] = frozenset()) -> dict[str, list[str]]:
    """A prune's ``filters``: berth refuses the ones it would not honour (label,
    until) rather than prune more than asked."""
    found = _filters(request, known | frozenset({"label", "until"}))
    for key in ("label", "until", "label!"):
        if found.get(key):
            raise HttpError(400, f"prune filter {key!r} is not supported by berth")
    return found


def _system_ns() -> int:
    """The host's CPU time so far (``/proc/stat``'s first line, in ns): Docker's
    ``system_cpu_usage``, which clients divide by."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = f.readline().split()[1:8]
        return sum(int(x) for x in fields) * 10_000_000  # USER_HZ is 100 on Linux
    except (OSError, ValueError):
        return 0


def _timeout(request: Request) -> int:
    value = request.integer("t", 10)
    if value is None or not 0 <= value <= 3600:
        raise HttpError(400, f"invalid t {request.arg('t')!r}: seconds from 0 to 3600")
    return value


def _filters(request: Request, known: frozenset[str] = _FILTER_KEYS) -> dict[str, list[str]]:
    raw = request.arg("filters")
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise HttpError(400, f"invalid filters: {raw!r} is not JSON") from None
    if not isinstance(value, dict):
        raise HttpError(400, "invalid filters: expected a JSON object")
    out: dict[str, list[str]] = {}
    for key, items in value.items():
        if key not in known:
            raise HttpError(400, f"invalid filter '{key}'")
        # Docker sends {"k": ["v"]} or, older, {"k": {"v": true}}
        values = list(items) if isinstance(items, (list, dict)) else None
        if values is None or not all(isinstance(v, str) for v in values):
            raise HttpError(400, f"invalid filter '{key}': expected a list of strings")
        out[key] = values
    return out


def _matches(info: dict[str, Any], filters: dict[str, list[str]]) -> bool:
    for key, values in filters.items():
        if key == "id" and not any(str(info["id"]).startswith(v) for v in values):
            return False
        if key == "name" and not any(re.search(re.escape(v.lstrip("/")), str(info["name"]))
                                     for v in values):
            return False
        if key == "status" and shapes.docker_status(str(info["state"])) not in values:
            return False
        if key == "label":
            labels = info.get("labels") or {}
            for want in values:
                k, sep, v = want.partition("=")
                if k not in labels or (sep and labels[k] != v):
                    return False
    return True


def _moment(request: Request, name: str) -> float | None:
    raw = request.arg(name)
    if raw is None or raw in ("", "0"):
        return None
    try:
        return float(raw)
    except ValueError:
        raise HttpError(400, f"invalid {name} {raw!r}: unix seconds") from None


def _line_time(text: str) -> float:
    """A log line's RFC 3339 time (nanoseconds cut to microseconds) as unix seconds."""
    head, dot, rest = text.partition(".")
    if dot:
        digits = "".join(ch for ch in rest if ch.isdigit())
        zone = rest[len(digits):]
        text = f"{head}.{digits[:6]}{zone}"
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _piece(line: list[str], out: bool, err: bool, stamps: bool, since: float | None,
           until: float | None) -> Iterator[tuple[int, bytes]]:
    """One conmon log line ([time, stream, P|F, text]) as a piece of Docker's stream."""
    when, stream, flag, text = (list(line) + ["", "", "", ""])[:4]
    number = 2 if stream == "stderr" else 1
    if (number == 1 and not out) or (number == 2 and not err):
        return
    if since is not None or until is not None:
        moment = _line_time(when)
        if (since is not None and moment < since) or (until is not None and moment > until):
            return
    data = text + ("" if flag == "P" else "\n")
    yield number, ((when + " ") if stamps else "").encode() + data.encode()


def unix_time_or_zero(value: object) -> int:
    return shapes.unix_time(value)


def _image_id(image_id: object) -> str:
    text = str(image_id)
    return text if text.startswith("sha256:") else f"sha256:{text}"


def _familiar(image: dict[str, Any]) -> str:
    return f"{image.get('repository')}:{image.get('tag')}"


def _local(reference: str) -> bool:
    """Docker treats registries on loopback as insecure (plain HTTP allowed)."""
    host = reference.split("/", 1)[0] if "/" in reference else ""
    host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return host in ("localhost", "127.0.0.1", "[::1]") or host.startswith("127.")


def _network_id(info: dict[str, Any]) -> str:
    return str(info.get("id") or info.get("name") or "")


def _network(info: dict[str, Any]) -> dict[str, Any]:
    subnet, gateway = info.get("subnet") or "", info.get("gateway") or ""
    return {
        "Name": info.get("name"), "Id": _network_id(info),
        "Created": shapes.docker_time(info.get("created") or info.get("created_at")),
        "Scope": "local", "Driver": "bridge", "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": None,
                 "Config": [{"Subnet": subnet, "Gateway": gateway}] if subnet else []},
        "Internal": False, "Attachable": False, "Ingress": False,
        "Containers": {}, "Options": {}, "Labels": dict(info.get("labels") or {}),
    }


def _volume(info: dict[str, Any]) -> dict[str, Any]:
    return {
        "Name": info.get("name"), "Driver": "local",
        "Mountpoint": info.get("mountpoint") or info.get("path") or "",
        "CreatedAt": shapes.docker_time(info.get("created") or info.get("created_at")),
        "Labels": dict(info.get("labels") or {}), "Scope": "local", "Options": {},
    }


def _arch() -> str:
    machine = platform.machine()
    return {"x86_64": "x86_64", "aarch64": "aarch64"}.get(machine, machine)


def _cpus() -> int:
    import os

    return os.cpu_count() or 1


def _memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
