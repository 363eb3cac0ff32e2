"""Write berth's man pages (berth.1 and berth-COMMAND.1) from the CLI's own parser, so
they say what ``berth COMMAND --help`` says.

    python scripts/man_pages.py OUT_DIR      # then: man -l OUT_DIR/berth-run.1
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from berth import cli  # noqa: E402  (the checkout first on the path)


def roff(text: str) -> str:
    """Escape text for roff: backslashes and hyphens, and a leading dot or quote."""
    out = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + out if out[:1] in (".", "'") else out


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[
        argparse.ArgumentParser] | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _options(parser: argparse.ArgumentParser) -> list[str]:
    lines: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
            continue
        if action.option_strings:
            names = ", ".join(action.option_strings)
            if action.nargs != 0:
                names += " " + str(action.metavar or action.dest.upper())
        else:
            names = str(action.metavar or action.dest)
        if action.choices and not action.option_strings:
            names += " {" + ",".join(map(str, action.choices)) + "}"
        lines += [".TP", f"\\fB{roff(names)}\\fR", roff(action.help or "")]
    return lines


def _header(title: str, summary: str, date: str) -> list[str]:
    return [f'.TH {title.upper()} 1 "{date}" "berth" "berth manual"', ".SH NAME",
            f"{roff(title)} \\- {roff(summary)}"]


def pages(date: str) -> dict[str, str]:
    """Each page's file name and roff text."""
    top = cli.build_parser()
    sub = _subparsers(top)
    if sub is None:
        raise SystemExit("the berth parser has no commands")
    helps = {a.dest: a.help or "" for a in sub._choices_actions}
    out: dict[str, str] = {}
    lines = _header("berth", top.description or "", date)
    lines += [".SH SYNOPSIS", "\\fBberth\\fR [\\fIOPTIONS\\fR] \\fICOMMAND\\fR ...",
              ".SH OPTIONS", *_options(top), ".SH COMMANDS"]
    for name in cli.COMMANDS:
        lines += [".TP", f"\\fBberth\\-{roff(name)}\\fR(1)", roff(helps.get(name, ""))]
    out["berth.1"] = "\n".join(lines) + "\n"
    for name in cli.COMMANDS:
        parser = sub.choices[name]
        usage = parser.format_usage().removeprefix("usage: ").strip()
        lines = _header(f"berth-{name}", helps.get(name, ""), date)
        lines += [".SH SYNOPSIS", ".nf", roff(usage), ".fi", ".SH OPTIONS", *_options(parser)]
        nested = _subparsers(parser)
        if nested is not None:
            lines.append(".SH ACTIONS")
            for action in nested._choices_actions:
                lines += [".SS " + roff(action.dest), roff(action.help or ""),
                          *_options(nested.choices[action.dest])]
        lines += [".SH SEE ALSO", "\\fBberth\\fR(1)"]
        out[f"berth-{name}.1"] = "\n".join(lines) + "\n"
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: man_pages.py OUT_DIR", file=sys.stderr)
        return 2
    os.makedirs(argv[0], exist_ok=True)
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    for name, text in pages(date).items():
        with open(os.path.join(argv[0], name), "w", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
