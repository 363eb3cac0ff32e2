"""``container.run`` parsed (pure): a create's spec and name, a session id, and the
step ids a resend finds again."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from engine import command_types as t
from engine import commands as c
from engine.errors import InvalidArgument
from engine.parsing import parse

SID = str(uuid.uuid4())


def test_run_is_a_create_and_its_session(tmp_path: Path) -> None:
    run = parse(t.RUN, None, {"rootfs": str(tmp_path), "args": ["/bin/true"], "name": "web",
                              "session_id": SID})
    assert isinstance(run, c.Run)
    assert run.create.name == "web" and run.create.spec.args == ("/bin/true",)
    assert run.session_id == SID
    again = parse(t.RUN, None, {"rootfs": str(tmp_path), "args": ["x"]})
    assert isinstance(again, c.Run) and again.session_id is None


@pytest.mark.parametrize(("args", "says"), [
    ({"rootfs": "/r", "args": ["x"], "session_id": "../../etc"}, "session"),
    ({"rootfs": "/r", "args": ["x"], "session_id": 7}, "session"),
    ({"rootfs": "/r", "args": ["x"], "auto_remove": True}, "auto_remove"),
    ({"rootfs": "/r", "args": ["x\0y"]}, "NUL"),
    ({"rootfs": "/r", "args": ["x"], "name": "bad name!"}, "name"),
])
def test_bad_run_input_is_refused_in_one_sentence(args: dict[str, object], says: str,
                                                 tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=says):
        parse(t.RUN, None, {**args, "rootfs": str(tmp_path)})


def test_step_ids_are_stable_distinct_and_only_for_known_steps() -> None:
    run_id = str(uuid.uuid4())
    ids = [c.run_step_id(run_id, s) for s in c.RUN_STEPS]
    assert ids == [c.run_step_id(run_id, s) for s in c.RUN_STEPS]  # a resend finds them
    assert len(set(ids)) == 3 and run_id not in ids
    assert c.run_step_id(str(uuid.uuid4()), "create") != ids[0]
    with pytest.raises(ValueError, match="no run step"):
        c.run_step_id(run_id, "exec")
