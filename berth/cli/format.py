"""Parsing of CLI values and formatting of CLI output, kept apart from the commands."""

from __future__ import annotations

import functools
import json
import re
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Self

from berth.cli.table import print_table
from bus.client import Client
from bus.protocol import EventMessage
from engine.containers.spec import PortMapping
from engine.containers.spec import parse_size as parse_size  # the CLI's and the client's one rule
from engine.errors import InvalidArgument, NotFound

_DURATION_PART = r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)"
_DURATION_RE = re.compile(rf"^(?:{_DURATION_PART})+$")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 0.001, "s": 1, "m": 60, "h": 3600,
          "d": 86400}
_TIMESTAMP_RE = re.compile(r"^\d+(\.\d{1,9})?$")


def parse_time(text: str, now: datetime | None = None) -> str:
    """A moment as podman takes one -> ISO 8601 UTC: RFC 3339 (``2026-11-28T10:03:00Z``),
    with or without a time or an offset (without one: local time, as podman's), a Go
    duration ago (``10m``, ``1h30m``, ``1.5h``), or a unix timestamp (``1700000000``,
    with up to nine decimals)."""
    now = now or datetime.now(UTC)
    text = text.strip()
    if _DURATION_RE.fullmatch(text):
        seconds = sum(float(n) * _UNITS[u] for n, u in re.findall(_DURATION_PART, text))
        return (now - timedelta(seconds=seconds)).isoformat()
    if _TIMESTAMP_RE.fullmatch(text):
        return datetime.fromtimestamp(float(text), UTC).isoformat()
    try:
        value = datetime.fromisoformat(text.replace(" ", "T", 1) if len(text) > 10 else text)
    except ValueError:
        raise InvalidArgument(
            f"invalid time {text!r}: use RFC 3339 (2026-11-28T10:03:00Z or 2026-11-28), "
            "a duration like 1h30m, or a unix timestamp") from None
    if value.tzinfo is None:
        value = value.astimezone()  # local time, as podman reads a time without an offset
    return value.astimezone(UTC).isoformat()


def parse_port(text: str) -> list[Any]:
    """podman's ``[IP:]HOST:CTR[/tcp|udp]`` -> the spec's [ip, host, ctr, proto]."""
    return list(PortMapping.parse(text))


def parse_filters(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in ("container", "type") or not value:
            raise InvalidArgument(f"invalid filter {item!r}: use container=CTR or type=TYPE")
        out[key] = value
    return out


def write_log_lines(lines: list[list[str]]) -> None:
    """Print k8s-file lines; partial ('P') lines are joined to the next one."""
    for _time, stream, tag, text in lines:
        out = sys.stderr if stream == "stderr" else sys.stdout
        out.write(text if tag == "P" else text + "\n")
    sys.stdout.flush()
    sys.stderr.flush()


def _ago(iso: str | None, now: datetime) -> str:
    if not iso:
        return ""
    seconds = int((now - datetime.fromisoformat(iso)).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def status_text(row: dict[str, Any], now: datetime) -> str:
    state = str(row["state"])
    if state == "running":
        health = f" ({row['health']})" if row.get("health") else ""
        return f"Up {_ago(row.get('started_at'), now)}{health}"
    if state == "exited":
        return f"Exited ({row.get('exit_code')}) {_ago(row.get('finished_at'), now)} ago"
    return state.capitalize()


def print_rows(rows: list[dict[str, Any]], as_json: bool,
               now: datetime | None = None) -> None:
    """JSON lines, or the ps table (ages counted from ``now``: the present, or the
    moment a ``state --at`` asked about)."""
    if as_json:
        for row in rows:
            print(json.dumps(row, sort_keys=True))
    else:
        print_ps(rows, now)


def ports_text(ports: Any) -> str:
    """Published ports as podman's ``ps`` shows them: ``0.0.0.0:8080->80/tcp, ...``."""
    out = []
    for item in ports or ():
        if isinstance(item, (list, tuple)) and len(item) == 4:
            host_ip, host_port, ctr_port, proto = item
            out.append(f"{host_ip or '0.0.0.0'}:{host_port}->{ctr_port}/{proto}")
    return ", ".join(out)


def print_ps(rows: list[dict[str, Any]], now: datetime | None = None, *,
             heading: bool = True) -> None:
    """podman's columns (CONTAINER ID, IMAGE, COMMAND, CREATED, STATUS, PORTS, NAMES),
    then berth's NODE: the worker that runs the container."""
    now = now or datetime.now(UTC)
    table = [["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES",
              "NODE"]] if heading else []
    for r in rows:
        table.append([
            r["id"][:12], str(r.get("image") or r.get("rootfs") or ""),
            " ".join(r.get("command") or [])[:40], _ago(r.get("created_at"), now) + " ago",
            status_text(r, now), ports_text(r.get("ports")), r["name"], str(r["node"]),
        ])
    if not table:
        return
    print_table(table)


class NameCache:
    """Container names for event lines, fetched once (events carry only ids)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._names: dict[str, str] | None = None

    def learn(self, e: EventMessage) -> None:
        """``container.created`` carries the name: remember it, also for removed containers."""
        if e.type in ("container.created", "container.renamed") \
                and isinstance(e.data.get("name"), str):
            if self._names is None:
                self._names = {}
            self._names[e.stream] = str(e.data["name"])

    def name(self, cid: str) -> str:
        if ":" in cid:  # a volume's stream, or another of no container
            return ""
        if self._names is None or cid not in self._names:
            self._names = {r["id"]: r["name"] for r in self._client.ps(all=True)}
            if cid not in self._names:
                try:
                    self._names[cid] = str(self._client.inspect(cid).get("name", ""))
                except NotFound:
                    self._names[cid] = ""
        return self._names.get(cid, "")


def event_json(e: EventMessage, names: NameCache) -> dict[str, Any]:
    names.learn(e)
    return {
        "position": e.position,
        "container": e.stream,
        "name": names.name(e.stream),
        "type": e.type,
        "time": e.recorded_at,
        "data": e.data,
        "command_id": e.command_id,
        "actor": e.actor,
        "node": e.node,
    }


@functools.lru_cache(maxsize=4)
def parsed_template(text: str) -> Any:
    """A ``--format`` Go template, parsed once (``berth.cli.template``, loaded on use)."""
    from berth.cli import template

    return template.parse(text)


def event_view(e: EventMessage, names: NameCache) -> dict[str, Any]:
    """An event under podman's template names as well as berth's own keys."""
    view = event_json(e, names)
    kind, _, status = e.type.partition(".")
    view.update(ID=e.stream, Name=view["name"], Type=kind, Status=status, Time=e.recorded_at,
                Position=e.position, Actor=e.actor, Node=e.node, Data=e.data)
    return view


def print_event(e: EventMessage, names: NameCache, format: str) -> None:
    if format not in ("table", "json"):
        print(parsed_template(format).render(event_view(e, names)))
        return
    if format == "json":
        print(json.dumps(event_json(e, names), sort_keys=True, default=str))
        return
    names.learn(e)
    data = " ".join(f"{k}={v}" for k, v in sorted(e.data.items()) if k != "spec")
    line = (f"{e.recorded_at} {e.position:>6} {e.type:<26} {e.stream[:12]} "
            f"({names.name(e.stream)}) {data}")
    print(line.rstrip())


def print_history(events: list[EventMessage]) -> None:
    table = [["POSITION", "TIME", "EVENT", "ACTOR", "COMMAND", "DETAIL"]]
    for e in events:
        detail = " ".join(f"{k}={v}" for k, v in sorted(e.data.items()) if k != "spec")
        table.append([str(e.position), e.recorded_at, e.type, e.actor, (e.command_id or "")[:8],
                      detail[:60]])
    print_table(table)


class Progress:
    """On a terminal, show that a long wait is still alive (after one quiet second)."""

    def __init__(self, label: str, stream: Any = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self._done: threading.Event | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        if self.stream.isatty():
            self._done = threading.Event()
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        start = time.monotonic()
        shown = False
        assert self._done is not None
        while not self._done.wait(0.25):
            elapsed = time.monotonic() - start
            if elapsed >= 1:
                self.stream.write(f"\r{self.label}... {elapsed:.0f}s")
                self.stream.flush()
                shown = True
        if shown:
            self.stream.write("\r\033[K")
            self.stream.flush()

    def __exit__(self, *exc: object) -> None:
        if self._done is not None and self._thread is not None:
            self._done.set()
            self._thread.join(1)
