"""How far real Compose projects get on berth: a directory of projects (one sub
directory each, its compose file and whatever it names beside it), and for each one
row of a table:

* ``config``: ``berth compose config`` accepts the file (else its first refusal);
* ``up``: ``berth compose up -d`` converges;
* ``running``: every container of the project running (or exited 0, a one-shot), and
  each one with a health check healthy, within ``--wait`` seconds;
* ``names``: from the first running container, every other service's name resolves
  (``getent hosts``, or busybox ``nc``'s "bad address" where there is no getent): the
  project network and its /etc/hosts at work;
* ``down``: ``berth compose down -v`` leaves no container, network or volume of the
  project.

It runs against a private engine of its own (``berth up`` on directories under a
temporary base, its default network none, stopped at the end), so a host's engine and
its containers are never touched; ``--load REF=TARBALL`` imports a root filesystem
tarball as an image into it first (projects whose ``image:`` lines were pointed at a
local image). Each project runs under its directory's name with a random suffix, so a
run never meets an earlier one's recorded outcomes.

    .venv/bin/python -m bench.compose_compat /tmp/compat [--load REF=TARBALL] \\
        [--wait 60] [--markdown]

Exit status 0 when every project passed every column, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench.lifecycle_bench import Berth  # noqa: E402
from bus.client import Client  # noqa: E402

COLUMNS = ("config", "up", "running", "names", "down")
RESOLVE = ("for h in {names}; do if command -v getent >/dev/null 2>&1; then "
           "getent hosts $h >/dev/null || echo \"unresolved $h\"; else "
           "case \"$(nc -w 1 $h 1 </dev/null 2>&1)\" in *'bad address'*) "
           "echo \"unresolved $h\";; esac; fi; done")
"""The shell asked in a container to resolve the other services' names."""


@dataclass
class Row:
    project: str
    results: dict[str, str] = field(default_factory=dict)
    """Column -> "ok", "-" (not reached) or a short reason."""

    @property
    def passed(self) -> bool:
        return all(self.results.get(c) == "ok" for c in COLUMNS)


def _short(text: str) -> str:
    """The first line that says something, cut to 70 characters."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = next((ln for ln in lines if not ln.startswith(("created ", "started ",
                                                          "removed ", "stopped "))), "")
    line = re.sub(r"^berth: ", "", line or (lines[-1] if lines else "failed"))
    return line if len(line) <= 70 else line[:67] + "..."


class Compat:
    def __init__(self, engine: Berth, wait: float) -> None:
        self.engine, self.wait = engine, wait

    def compose(self, directory: str, project: str, *args: str, timeout: float = 300
                ) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run([sys.executable, "-m", "berth", "compose", "-p", project,
                                   *args], cwd=directory, env=self.engine.env, text=True,
                                  capture_output=True, timeout=timeout, check=False,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(args, 1, "", f"timed out after {timeout:.0f} s")

    def mine(self, client: Client, project: str) -> list[dict[str, Any]]:
        """The project's containers: by name, or by label (a ``container_name``)."""
        return [r for r in client.ps(all=True) if r.get("state") != "removed" and (
            str(r.get("name", "")).startswith(f"{project}-") or dict(
                r.get("labels") or {}).get("com.docker.compose.project") == project)]

    def run(self, directory: str) -> Row:
        base = re.sub(r"[^a-z0-9]", "", os.path.basename(directory.rstrip("/")).lower())
        project = f"{base[:40] or 'p'}{uuid.uuid4().hex[:6]}"
        row = Row(os.path.basename(directory.rstrip("/")))
        res = row.results
        done = self.compose(directory, project, "config")
        res["config"] = "ok" if done.returncode == 0 else _short(done.stderr)
        if done.returncode != 0:
            return row
        try:
            done = self.compose(directory, project, "up", "-d")
            res["up"] = "ok" if done.returncode == 0 else _short(done.stderr)
            if done.returncode == 0:
                with self.engine.client() as client:
                    res["running"] = self.running(client, project)
                    res["names"] = self.names(client, project, directory)
        finally:
            res["down"] = self.down(directory, project)
        return row

    def running(self, client: Client, project: str) -> str:
        deadline = time.monotonic() + self.wait
        while True:
            bad = []
            for r in self.mine(client, project):
                state, name = r.get("state"), str(r.get("name"))
                if state == "exited" and r.get("exit_code") == 0:
                    continue  # a one-shot that completed
                if state != "running":
                    bad.append(f"{name} {state}")
                    continue
                events = client.history(str(r["id"])).get("events", [])
                health = [e for e in events if e.get("type") == "container.health_status"]
                status = health[-1].get("data", {}).get("status") if health else None
                if status not in (None, "healthy"):
                    bad.append(f"{name} {status}")
                elif status is None and _has_check(client, str(r["id"])):
                    bad.append(f"{name} starting")
            if not bad:
                return "ok"
            if time.monotonic() > deadline:
                return _short("; ".join(bad))
            time.sleep(0.5)

    def names(self, client: Client, project: str, directory: str) -> str:
        rows = sorted(self.mine(client, project), key=lambda r: str(r["name"]))
        services = sorted({str(dict(r.get("labels") or {}).get(
            "com.docker.compose.service", "")) for r in rows} - {""})
        live = [r for r in rows if r.get("state") == "running"]
        if len(services) < 2:
            return "ok" if live else "no running container"
        if not live:
            return "no running container"
        first = live[0]
        me = str(dict(first.get("labels") or {}).get("com.docker.compose.service"))
        others = [s for s in services if s != me]
        done = subprocess.run([sys.executable, "-m", "berth", "exec", str(first["name"]),
                               "sh", "-c", RESOLVE.format(names=" ".join(others))],
                              env=self.engine.env, capture_output=True, text=True,
                              timeout=60, check=False, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            return _short(done.stderr or "exec failed")
        missing = [ln.split()[-1] for ln in done.stdout.splitlines()
                   if ln.startswith("unresolved ")]
        return "ok" if not missing else f"{me} cannot resolve " + ", ".join(missing)

    def down(self, directory: str, project: str) -> str:
        done = self.compose(directory, project, "down", "-v")
        if done.returncode != 0:
            return _short(done.stderr)
        with self.engine.client() as client:
            left = [str(r["name"]) for r in self.mine(client, project)]
            left += [f"network {n.get('name')}" for n in client.networks()
                     if str(n.get("name", "")).startswith(f"{project}_")]
            left += [f"volume {v.get('name')}" for v in client.volumes()
                     if str(v.get("name", "")).startswith(f"{project}_")]
        return "ok" if not left else _short("left: " + ", ".join(left))


def _has_check(client: Client, cid: str) -> bool:
    spec = client.inspect(cid).get("spec") or {}
    return bool(spec.get("health_cmd")) if isinstance(spec, dict) else False


def table(rows: list[Row], markdown: bool) -> str:
    head = ["project", *COLUMNS]
    body = [[r.project, *(r.results.get(c, "-") for c in COLUMNS)] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join([*lines, *("| " + " | ".join(b) + " |" for b in body)])
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    return "\n".join("  ".join(x[i].ljust(widths[i]) for i in range(len(head))).rstrip()
                     for x in [head, *body])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", help="a directory of projects, one sub directory each")
    parser.add_argument("--load", action="append", default=[], metavar="REF=TARBALL",
                        help="import a root filesystem tarball as image REF first")
    parser.add_argument("--wait", type=float, default=60.0, metavar="SECONDS",
                        help="how long a project's containers have to be running and "
                             "healthy (default 60)")
    parser.add_argument("--markdown", action="store_true", help="a Markdown table")
    args = parser.parse_args()
    if not os.path.isdir(args.directory):
        parser.error(f"{args.directory} is not a directory")
    projects = sorted(os.path.join(args.directory, d) for d in os.listdir(args.directory)
                      if os.path.isdir(os.path.join(args.directory, d)))
    with tempfile.TemporaryDirectory(prefix="berth-compat-") as base:
        engine = Berth(base)
        try:
            for item in args.load:
                ref, sep, tarball = item.partition("=")
                if not sep:
                    parser.error(f"--load {item!r}: use REF=TARBALL")
                done = subprocess.run([sys.executable, "-m", "berth", "image", "import",
                                       os.path.abspath(tarball), ref], env=engine.env,
                                      capture_output=True, text=True, timeout=300,
                                      check=False)
                if done.returncode != 0:
                    raise SystemExit(f"--load {ref}: {_short(done.stderr)}")
            compat = Compat(engine, args.wait)
            rows = []
            for path in projects:
                rows.append(compat.run(path))
                print(f"{rows[-1].project}: " + " ".join(
                    f"{c}={rows[-1].results.get(c, '-')}" for c in COLUMNS), file=sys.stderr)
        finally:
            engine.close()
    print(table(rows, args.markdown))
    return 0 if all(r.passed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
