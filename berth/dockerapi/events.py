"""Docker's ``GET /events``: berth's log read from ``since`` (complete: exits seen
while the engine was down are there), then live, in Docker's event shape.

berth's event types map to Docker's actions (``ACTIONS``); events Docker has no
word for (a pid received, a stop requested) are left out. ``until`` ends the
stream; without ``since`` only events after the call are sent, as Docker does.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Final

from berth.dockerapi.server import HttpError
from bus.client import Client
from bus.protocol import EventMessage
from engine.errors import NotFound

ACTIONS: Final = {
    "container.created": ("container", "create"),
    "container.started": ("container", "start"),
    "container.exited": ("container", "die"),
    "container.paused": ("container", "pause"),
    "container.unpaused": ("container", "unpause"),
    "container.removed": ("container", "destroy"),
    "container.renamed": ("container", "rename"),
    "container.signalled": ("container", "kill"),
    "container.restarting": ("container", "restart"),
    "container.updated": ("container", "update"),
    "container.exec_started": ("container", "exec_start"),
    "container.exec_exited": ("container", "exec_die"),
    "container.health_status": ("container", "health_status"),
    "image.pulled": ("image", "pull"),
    "image.loaded": ("image", "load"),
    "image.tagged": ("image", "tag"),
    "image.removed": ("image", "delete"),
    "network.created": ("network", "create"),
    "network.removed": ("network", "destroy"),
    "container.network_attached": ("network", "connect"),
    "volume.created": ("volume", "create"),
    "volume.removed": ("volume", "destroy"),
}
FILTERS: Final = frozenset({"type", "event", "container"})
PAGE: Final = 500
HEARTBEAT: Final = 5.0
"""Seconds of silence after which a newline is written (JSON decoders skip it), so a
stream whose client has gone ends instead of holding its thread."""
NAMES: Final = 1024
"""Container names remembered while a stream runs (a bounded cache)."""


def parse_time(raw: str | None, what: str) -> datetime | None:
    """Docker's since/until: unix seconds (a fraction allowed) or RFC 3339."""
    if raw is None or raw == "":
        return None
    try:
        return datetime.fromtimestamp(float(raw), UTC)
    except (ValueError, OverflowError):
        pass
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise HttpError(400, f"invalid {what} {raw!r}: unix seconds or RFC 3339") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Shaper:
    """berth's events -> Docker's, naming containers through a bounded cache."""

    def __init__(self, client: Client, filters: dict[str, list[str]]) -> None:
        self.client = client
        self.filters = filters
        self.names: OrderedDict[str, tuple[str, str]] = OrderedDict()

    def _known(self, cid: str) -> tuple[str, str]:
        found = self.names.get(cid)
        if found is None:
            try:
                info = self.client.inspect(cid)
                found = (str(info.get("name") or ""),
                         str((info.get("spec") or {}).get("image") or ""))
            except NotFound:
                found = ("", "")
            self.names[cid] = found
            if len(self.names) > NAMES:
                self.names.popitem(last=False)
        return found

    def shape(self, msg: EventMessage) -> dict[str, Any] | None:
        mapped = ACTIONS.get(msg.type)
        if mapped is None:
            return None
        kind, action = mapped
        data = msg.data
        attributes: dict[str, str] = {}
        if msg.stream.startswith(("network:", "volume:", "image:")):
            ident = msg.stream.split(":", 1)[1]
        else:  # a container's stream is named by its id
            ident = msg.stream
            name, image = self._known(ident)
            attributes.update(name=name, image=image)
            if kind == "network":
                attributes["container"] = ident
                ident = str(data.get("network") or "")
        if msg.type == "container.exited":
            attributes["exitCode"] = str(data.get("exit_code"))
        if msg.type == "container.signalled":
            attributes["signal"] = str(data.get("signal"))
        if kind in ("network", "volume") and "name" in data:
            attributes["name"] = str(data["name"])
        if not self._wanted(kind, action, ident, attributes):
            return None
        moment = datetime.fromisoformat(msg.recorded_at)
        nanos = int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000
        event: dict[str, Any] = {
            "Type": kind, "Action": action, "scope": "local",
            "Actor": {"ID": ident, "Attributes": attributes},
            "time": int(moment.timestamp()), "timeNano": nanos,
        }
        if kind == "container":
            event.update(status=action, id=ident, **{"from": attributes.get("image", "")})
        return event

    def _wanted(self, kind: str, action: str, ident: str, attrs: dict[str, str]) -> bool:
        for key, values in self.filters.items():
            if key == "type" and kind not in values:
                return False
            if key == "event" and action not in values:
                return False
            if key == "container" and (kind != "container" or not any(
                    ident.startswith(v) or attrs.get("name") == v for v in values)):
                return False
        return True


def stream(client: Client, since: datetime | None, until: datetime | None,
           filters: dict[str, list[str]], now: Callable[[], datetime]) -> Iterator[
               dict[str, Any]]:
    """Stored events from ``since`` (paged), then live ones until ``until``."""
    shaper = Shaper(client, filters)
    head = 0
    if since is not None:
        after = 0
        while True:
            found, head = client.events(after=after, limit=PAGE, since=since.isoformat(),
                                        **({"until": until.isoformat()} if until else {}))
            for stored in found:
                shaped = shaper.shape(stored)
                if shaped is not None:
                    yield shaped
            if len(found) < PAGE:
                break
            after = found[-1].position
    else:
        _found, head = client.events(after=0, limit=1)
    if until is not None and until <= now():
        return
    quiet = 0.0
    with client.subscribe(from_position=head + 1) as live:
        while until is None or now() < until:
            left = None if until is None else (until - now()).total_seconds()
            msg = live.get(1.0 if left is None else max(0.0, min(1.0, left)))
            if msg is None:
                quiet += 1.0
                if quiet >= HEARTBEAT:
                    quiet = 0.0
                    yield {}  # written as a newline: a client gone is noticed then
                continue
            quiet = 0.0
            if until is not None and datetime.fromisoformat(msg.recorded_at) > until:
                return
            shaped = shaper.shape(msg)
            if shaped is not None:
                yield shaped
