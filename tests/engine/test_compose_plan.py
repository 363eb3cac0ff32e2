"""The foreground reconciler's pure rules (``engine.compose.plan``): which replicas are
made again, which exits are deaths, which events call for a new pass. No engine."""

from __future__ import annotations

from typing import Any

import pytest

from engine.compose import model
from engine.compose.plan import (
    BACKOFF_CAP,
    Action,
    Observed,
    all_ended,
    backoff,
    defer,
    died,
    hold_until,
    plan,
    touches,
)


def _stack(*, web: int = 2, restart: str | None = None, args: list[str] | None = None
           ) -> dict[str, Any]:
    web_opts: dict[str, Any] = {"args": args or ["sleep", "9"]}
    if restart is not None:
        web_opts["restart"] = restart
    return {"name": "p", "volumes": [], "networks": {}, "services": {
        "db": {"replicas": 1, "depends_on": {}, "labels": {}, "options": {"args": ["db"]}},
        "web": {"replicas": web, "depends_on": {"db": "service_started"},
                "labels": {"tier": "front"}, "options": web_opts}}}


def _seen(stack: dict[str, Any], name: str, state: str = "running", **kw: Any) -> Observed:
    service = name.split("-")[1]
    return Observed(name, "id-" + name, state, config_hash=model.config_hash(stack, service),
                    **kw)


def _running(stack: dict[str, Any]) -> list[Observed]:
    return [_seen(stack, "p-db-1"), _seen(stack, "p-web-1"), _seen(stack, "p-web-2")]


def test_config_hash_is_what_a_replica_is_made_from() -> None:
    base = _stack()
    assert model.config_hash(base, "web") == model.config_hash(_stack(), "web")
    assert model.config_hash(base, "web") != model.config_hash(base, "db")
    assert model.config_hash(base, "web") != model.config_hash(_stack(args=["x"]), "web")
    labelled = _stack()
    labelled["services"]["web"]["labels"] = {"tier": "back"}
    assert model.config_hash(labelled, "web") != model.config_hash(base, "web")
    # scaling or reordering does not recreate (docker compose leaves them out too)
    assert model.config_hash(_stack(web=5), "web") == model.config_hash(base, "web")
    no_deps = _stack()
    no_deps["services"]["web"]["depends_on"] = {}
    assert model.config_hash(no_deps, "web") == model.config_hash(base, "web")
    assert len(model.config_hash(base, "web")) == 64
    label = model.run_options(base, "web", 1)["labels"][model.CONFIG_HASH_LABEL]
    assert label == model.config_hash(base, "web")


def test_a_changed_service_is_recreated_and_only_it() -> None:
    old = _stack()
    new = _stack(args=["sleep", "10"])
    assert plan(old, _running(old)) == []
    assert plan(new, _running(old)) == [
        Action("wait", "db", condition="service_started"),
        Action("remove", "web", 1, "p-web-1"), Action("create", "web", 1, "p-web-1"),
        Action("start", "web", 1, "p-web-1"),
        Action("remove", "web", 2, "p-web-2"), Action("create", "web", 2, "p-web-2"),
        Action("start", "web", 2, "p-web-2")]
    # one made before config hashes were labelled is made again too
    unlabelled = [Observed("p-db-1", "d", "running")] + _running(old)[1:]
    assert plan(old, unlabelled) == [Action("remove", "db", 1, "p-db-1"),
                                     Action("create", "db", 1, "p-db-1"),
                                     Action("start", "db", 1, "p-db-1")]


def test_a_created_replica_is_started_in_either_mode() -> None:
    s = _stack(web=1)
    seen = [_seen(s, "p-db-1"), _seen(s, "p-web-1", "created")]
    for following in (False, True):
        assert plan(s, seen, following=following) == [
            Action("wait", "db", condition="service_started"),
            Action("start", "web", 1, "p-web-1")]


@pytest.mark.parametrize("reason,code,state,dead", [
    ("conmon_lost", 137, "exited", True),
    ("unknown", -1, "exited", True),
    ("crash", 137, "exited", True),       # SIGKILL from outside: 128 + 9
    ("crash", 129, "exited", True),
    ("crash", 128, "exited", False),      # its own exit code
    ("crash", 1, "exited", False),
    ("crash", None, "exited", False),
    ("exit", 0, "exited", False),
    ("stop", 137, "exited", False),       # a berth stop or kill: never undone
    ("checkpoint", 0, "exited", False),
    ("conmon_lost", 137, "running", False),  # started again since
])
def test_died(reason: str, code: int | None, state: str, dead: bool) -> None:
    assert died(Observed("p-web-1", "i", state, exit_reason=reason, exit_code=code)) is dead


def test_following_starts_only_the_dead_without_a_restart_policy() -> None:
    s = _stack(web=1)
    db = _seen(s, "p-db-1")
    lost = _seen(s, "p-web-1", "exited", exit_reason="conmon_lost", exit_code=137)
    own = _seen(s, "p-web-1", "exited", exit_reason="exit", exit_code=0)
    restart = [Action("wait", "db", condition="service_started"),
               Action("start", "web", 1, "p-web-1")]
    assert plan(s, [db, lost], following=True) == restart
    assert plan(s, [db, own], following=True) == []
    assert plan(s, [db, own]) == restart  # a new ``up`` starts any stopped replica
    for policy, expected in (("no", restart), ("always", []), ("on-failure:3", [])):
        with_policy = _stack(web=1, restart=policy)
        seen = [_seen(with_policy, "p-db-1"),
                _seen(with_policy, "p-web-1", "exited", exit_reason="conmon_lost",
                      exit_code=137)]
        assert plan(with_policy, seen, following=True) == expected, policy
    # a removed replica is made again while following
    assert plan(s, [db], following=True) == [
        Action("wait", "db", condition="service_started"),
        Action("create", "web", 1, "p-web-1"), Action("start", "web", 1, "p-web-1")]


def test_touches() -> None:
    known = {"c1"}
    assert touches("p", known, "stack.applied", "stack:p", {})
    assert touches("p", known, "stack.removed", "stack:p", {})
    assert not touches("p", known, "stack.applied", "stack:q", {})
    for kind in ("container.exited", "container.removed", "container.renamed",
                 "container.created"):
        assert touches("p", known, kind, "c1", {}), kind
        assert not touches("p", known, kind, "c2", {}), kind
    assert not touches("p", known, "container.health_status", "c1", {})
    assert not touches("p", known, "container.exec_exited", "c1", {})
    assert touches("p", known, "container.created", "c9", {"name": "p-web-3"})
    assert touches("p", known, "container.renamed", "c9", {"name": "p-web-3"})
    assert not touches("p", known, "container.created", "c9", {"name": "q-web-3"})
    assert not touches("p", known, "container.created", "c9", {"name": 3})
    assert not touches("p", known, "container.started", "c9", {"name": "p-web-3"})


def test_all_ended() -> None:
    exited = Observed("p-a-1", "a", "exited")
    assert not all_ended([])
    assert all_ended([exited])
    assert all_ended([exited, Observed("p-a-2", "b", "exited")])
    assert not all_ended([exited, Observed("p-a-2", "b", "running")])
    assert not all_ended([Observed("p-a-2", "b", "created")])


def test_backoff() -> None:
    assert [backoff(n) for n in range(7)] == [0.0] * 3 + [0.25, 0.5, 1.0, 2.0]
    assert backoff(8) == 8.0
    assert backoff(9) == BACKOFF_CAP == 10.0  # 16 s, capped
    assert backoff(100) == BACKOFF_CAP


def test_hold_until_counts_the_recent_revivals_of_one_replica() -> None:
    assert hold_until([]) == 0.0
    assert hold_until([100.0, 101.0]) == 101.0
    assert hold_until([100.0, 101.0, 102.0]) == 102.25  # the fourth waits
    assert hold_until([100.0, 101.0, 102.0, 103.0]) == 103.5
    # revivals BACKOFF_WINDOW or more before the last one no longer count
    assert hold_until([70.0, 71.0, 101.0, 102.0]) == 102.0
    assert hold_until([72.0, 80.0, 101.0, 102.0]) == 102.25
    assert hold_until([72.5, 80.0, 101.0, 102.0]) == 102.5


def test_defer_leaves_out_the_replicas_backing_off() -> None:
    acts = [Action("wait", "db", condition="service_started"),
            Action("create", "web", 1, "p-web-1"), Action("start", "web", 1, "p-web-1"),
            Action("start", "web", 2, "p-web-2"), Action("remove", "web", 3, "p-web-3")]
    assert defer(acts, {}, 50.0) == (acts, None)
    assert defer(acts, {"p-web-1": 50.0, "p-web-2": 10.0}, 50.0) == (acts, None)
    kept, due = defer(acts, {"p-web-1": 52.0, "p-web-2": 51.0, "p-other-1": 40.0}, 50.0)
    assert kept == [acts[0], acts[4]] and due == 51.0
    kept, due = defer(acts, {"p-web-1": 52.0, "p-gone-1": 51.0}, 50.0)
    assert kept == [acts[0], acts[3], acts[4]] and due == 52.0


def test_observed_from_a_ps_row() -> None:
    row = {"name": "p-web-1", "id": "abc", "state": "exited", "exit_code": 137,
           "exit_reason": "conmon_lost", "finished_at": "2026-01-01T00:00:00+00:00",
           "labels": {model.CONFIG_HASH_LABEL: "f" * 64, "tier": "x"}}
    assert Observed.from_row(row) == Observed("p-web-1", "abc", "exited",
                                              "2026-01-01T00:00:00+00:00", "conmon_lost",
                                              137, "f" * 64)
    bare = Observed.from_row({"name": "p-web-1", "id": "abc", "state": "running",
                              "exit_code": None, "finished_at": None, "labels": None})
    assert bare == Observed("p-web-1", "abc", "running")
    assert Observed.from_row({"name": "n", "id": "i", "state": "created",
                              "exit_code": "1", "labels": {}}).exit_code is None
