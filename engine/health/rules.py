"""Health checks: their options, and the pure rules that turn probe results into a status.

A probe is an exec session in the container (``engine.runtime.execs``). Its results
feed ``after_probe``, Docker's rules: a success makes the container ``healthy`` and
clears the failing streak; a failure (non-zero exit, or no answer within the timeout)
adds to the streak, and ``retries`` failures in a row make it ``unhealthy``, except
that failures during the start period do not count while it is still ``starting``.
Only a change of status is recorded (``container.health_status``), so a container
checked every second for a month does not fill the log; the last few probe results
are kept in the worker's memory for ``inspect`` (gone when the worker restarts).

``--health-on-failure`` (podman's): what happens when the container turns unhealthy:
``none``, ``kill`` (SIGKILL, an explicit kill: the restart policy leaves it) or
``restart`` (stopped and started again).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

from engine.errors import InvalidArgument

STARTING, HEALTHY, UNHEALTHY = "starting", "healthy", "unhealthy"
ON_FAILURE = ("none", "kill", "restart", "stop")
OUTPUT_TAIL = 4096
"""Bytes of a probe's output kept (in the event of a change, and in memory)."""
KEEP_RESULTS = 5
"""Probe results kept per container for ``inspect``."""
MIN_INTERVAL_S = 0.05

_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_DURATIONS = ("health_interval", "health_timeout", "health_start_period")


def parse_duration(text: str, what: str) -> float:
    """``30s``, ``500ms``, ``1m``, or plain seconds, as Docker's health options take them."""
    m = _DURATION_RE.match(text.strip())
    if not m:
        raise InvalidArgument(f"invalid {what} {text!r}: use a duration like 30s or 500ms")
    return float(m.group(1)) * _UNITS[m.group(2)]


class HealthOptions(Protocol):
    @property
    def health_cmd(self) -> tuple[str, ...]: ...
    @property
    def health_interval(self) -> float: ...
    @property
    def health_timeout(self) -> float: ...
    @property
    def health_retries(self) -> int: ...
    @property
    def health_start_period(self) -> float: ...
    @property
    def health_on_failure(self) -> str: ...
    @property
    def no_healthcheck(self) -> bool: ...


def check_health_options(spec: HealthOptions) -> None:
    """Structural checks of a run spec's health options (events decoded from the log
    pass here too)."""
    for name in ("health_interval", "health_timeout"):
        if not getattr(spec, name) >= MIN_INTERVAL_S:
            raise InvalidArgument(f"run spec: {name.replace('_', ' ')} must be at least "
                                  f"{MIN_INTERVAL_S * 1000:g} ms")
    if not spec.health_start_period >= 0:
        raise InvalidArgument("run spec: health start period must not be negative")
    if isinstance(spec.health_retries, bool) or spec.health_retries < 1:
        raise InvalidArgument("run spec: health retries must be at least 1")
    if spec.health_on_failure not in ON_FAILURE:
        raise InvalidArgument(f"run spec: invalid health on-failure action "
                              f"{spec.health_on_failure!r}: use none, kill, restart or stop")
    if spec.no_healthcheck and spec.health_cmd:
        raise InvalidArgument("run spec: --no-healthcheck and --health-cmd conflict")


def health_from_user(data: dict[str, Any]) -> None:
    """The publisher's forms, in place: a command as one string is run by ``/bin/sh -c``
    (Docker's CMD-SHELL), durations may carry units (``500ms``)."""
    if isinstance(data.get("health_cmd"), str):
        data["health_cmd"] = ["/bin/sh", "-c", data["health_cmd"]]
    for name in _DURATIONS:
        if isinstance(data.get(name), str):
            data[name] = parse_duration(data[name], name.replace("_", " "))


def enabled(spec: HealthOptions) -> bool:
    return bool(spec.health_cmd) and not spec.no_healthcheck


@dataclass(frozen=True, slots=True)
class Probe:
    """One probe's result: its exit code (-1: it timed out or could not run)."""

    exit_code: int
    output: str
    started_at: str
    ended_at: str


@dataclass(frozen=True, slots=True)
class Health:
    status: str = STARTING
    failing_streak: int = 0


def after_probe(spec: HealthOptions, current: Health, probe: Probe, *,
                in_start_period: bool) -> Health:
    """The status after one more probe (Docker's rules, above)."""
    if probe.exit_code == 0:
        return Health(HEALTHY, 0)
    if in_start_period and current.status == STARTING:
        return current
    streak = current.failing_streak + 1
    if streak >= spec.health_retries:
        return Health(UNHEALTHY, streak)
    return Health(current.status, streak)


def tail(output: bytes | str) -> str:
    text = output.decode(errors="replace") if isinstance(output, bytes) else output
    return text[-OUTPUT_TAIL:]
