"""Health-check rules and options (engine.health.rules, engine.containers.spec), without a
process."""

from __future__ import annotations

import pytest

from engine.containers.spec import RunSpec, spec_from_user
from engine.errors import InvalidArgument
from engine.health import rules as h

SPEC = RunSpec(rootfs="/r", args=("true",), health_cmd=("true",), health_retries=3)


def probe(code: int) -> h.Probe:
    return h.Probe(code, "out", "t0", "t1")


def test_a_success_is_healthy_and_clears_the_streak() -> None:
    assert h.after_probe(SPEC, h.Health(h.UNHEALTHY, 5), probe(0),
                         in_start_period=False) == h.Health(h.HEALTHY, 0)


def test_retries_failures_in_a_row_make_it_unhealthy() -> None:
    health = h.Health(h.HEALTHY, 0)
    seen = []
    for _ in range(4):
        health = h.after_probe(SPEC, health, probe(1), in_start_period=False)
        seen.append(health)
    assert seen == [h.Health(h.HEALTHY, 1), h.Health(h.HEALTHY, 2),
                    h.Health(h.UNHEALTHY, 3), h.Health(h.UNHEALTHY, 4)]


def test_failures_in_the_start_period_do_not_count_while_starting() -> None:
    starting = h.Health(h.STARTING, 0)
    assert h.after_probe(SPEC, starting, probe(-1), in_start_period=True) is starting
    assert h.after_probe(SPEC, starting, probe(1), in_start_period=False) == h.Health(
        h.STARTING, 1)
    # once healthy, a failure counts even inside the period
    assert h.after_probe(SPEC, h.Health(h.HEALTHY, 0), probe(1), in_start_period=True) == \
        h.Health(h.HEALTHY, 1)


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30.0), ("500ms", 0.5), ("2m", 120.0),
                                                ("1h", 3600.0), ("1.5", 1.5), (" 7s ", 7.0)])
def test_durations(text: str, seconds: float) -> None:
    assert h.parse_duration(text, "health interval") == seconds


@pytest.mark.parametrize("text", ["", "s", "-1s", "1d", "1 s", "fast"])
def test_bad_durations_are_one_sentence(text: str) -> None:
    with pytest.raises(InvalidArgument, match=f"invalid health interval {text!r}"):
        h.parse_duration(text, "health interval")


def test_the_client_edge_takes_a_shell_string_and_units() -> None:
    data = spec_from_user({"rootfs": "/r", "args": ["true"], "health_cmd": "test -f /x",
                           "health_interval": "100ms", "health_timeout": "2s",
                           "health_start_period": "1m", "restart": "on-failure:2"})
    assert data["health_cmd"] == ["/bin/sh", "-c", "test -f /x"]
    assert (data["health_interval"], data["health_timeout"],
            data["health_start_period"]) == (0.1, 2.0, 60.0)
    spec = RunSpec.from_data(data)
    assert h.enabled(spec) and spec.restart == "on-failure:2"
    assert RunSpec.from_data(spec.to_data()) == spec
    assert not h.enabled(RunSpec(rootfs="/r", args=("true",)))
    assert not h.enabled(RunSpec(rootfs="/r", args=("true",), no_healthcheck=True))


@pytest.mark.parametrize(("options", "message"), [
    ({"health_interval": 0.01}, "health interval must be at least 50 ms"),
    ({"health_timeout": 0}, "health timeout must be at least 50 ms"),
    ({"health_start_period": -1}, "health start period must not be negative"),
    ({"health_retries": 0}, "health retries must be at least 1"),
    ({"health_on_failure": "explode"}, "invalid health on-failure action 'explode'"),
    ({"no_healthcheck": True}, "--no-healthcheck and --health-cmd conflict"),
    ({"restart": "always", "auto_remove": True}, "conflicts with --rm"),
    ({"restart": "maybe"}, "invalid restart policy 'maybe'"),
    ({"health_retries": True}, "invalid run option health_retries True"),
    ({"health_interval": "1s"}, "invalid run option health_interval '1s'"),
])
def test_bad_options_are_refused(options: dict[str, object], message: str) -> None:
    data = {"rootfs": "/r", "args": ["true"], "health_cmd": ["true"], **options}
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(")):
        RunSpec.from_data(data)


def test_old_specs_load_with_the_defaults() -> None:
    spec = RunSpec.from_data({"rootfs": "/r", "args": ["true"]})
    assert (spec.restart, spec.health_cmd, spec.health_interval, spec.health_retries,
            spec.health_on_failure) == ("no", (), 30.0, 3, "none")


def test_output_tail_is_bounded() -> None:
    assert h.tail(b"x" * (h.OUTPUT_TAIL + 10)) == "x" * h.OUTPUT_TAIL
    assert h.tail("abc") == "abc"
