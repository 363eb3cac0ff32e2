"""The --format Go-template subset, without an engine."""

from __future__ import annotations

import json

import pytest

from berth.cli import template
from engine.errors import InvalidArgument

ROW = {"ID": "0123456789abcdef", "Names": "web", "State": "running", "Labels": {"a": "1"},
       "Command": ["sh", "-c", "echo"], "exit_code": None, "started_at": "T"}


def test_fields_text_and_escapes() -> None:
    assert template.parse("{{.ID}}").render(ROW) == "0123456789abcdef"
    assert template.parse("name={{.Names}}\\t{{ .State }}").render(ROW) == "name=web\trunning"
    assert template.parse("{{.Command}}").render(ROW) == "[sh -c echo]"
    assert template.parse("{{.Labels.a}}").render(ROW) == "1"
    assert template.parse("{{.Labels.missing}}").render(ROW) == "<no value>"  # a map's key
    assert template.parse("{{.ExitCode}}").render(ROW) == "<no value>"  # exit_code
    assert template.parse("{{.StartedAt}}").render(ROW) == "T"  # snake_case fallback
    assert template.parse("no actions").render(ROW) == "no actions"


def test_functions() -> None:
    assert json.loads(template.parse("{{json .}}").render(ROW)) == ROW
    assert template.parse("{{json .Labels}}").render(ROW) == '{"a": "1"}'
    assert template.parse("{{upper .Names}}").render(ROW) == "WEB"
    assert template.parse("{{lower .State}}").render({"State": "UP"}) == "up"
    assert template.parse("{{truncate .ID 4}}").render(ROW) == "0123"


def test_table_prefix_aligns_columns_under_a_header() -> None:
    t = template.parse("table {{.ID}}\\t{{.Names}}\\t{{.State}}")
    rows = [ROW, dict(ROW, ID="ff", Names="a-much-longer-name")]
    lines = t.render_all(rows)
    assert lines[0].split() == ["CONTAINER", "ID", "NAMES", "STATE"]
    assert lines[1].startswith("0123456789abcdef  web ")
    assert lines[1].index("running") == lines[2].index("running") == lines[0].index("STATE")
    assert template.parse("{{.Names}}").render_all(rows) == ["web", "a-much-longer-name"]


@pytest.mark.parametrize("bad", ["{{.Nope}}", "{{range .}}x{{end}}", "{{}}", "{{.ID",
                                 "{{truncate .ID}}", "{{.ID | upper}}", "{{Names}}"])
def test_what_is_not_supported_is_one_clear_error(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        template.parse(bad).render(ROW)
