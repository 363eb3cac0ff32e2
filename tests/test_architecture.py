"""The import graph of berth's packages: the arrows go one way.

    berth (CLI, daemon) ──▶ bus (the wire), workers (the process) ──▶ engine (the core)
    migrations (Alembic) ──▶ engine

A lower layer that imports a higher one makes every change above a risk below, and a
cycle makes the layers one big package. So every ``.py`` file of each package is read
with ``ast`` (imports at module level and inside functions, ``import x`` and ``from x
import y``, relative imports resolved, ``importlib.import_module("x")``), and so is
every ``python -m MODULE`` a production file launches: a process of another layer is an
import by other means.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "bus", "workers", "migrations", "berth")

# package -> the packages it must never import
FORBIDDEN: dict[str, frozenset[str]] = {
    "engine": frozenset({"bus", "workers", "migrations", "berth"}),
    "bus": frozenset({"workers", "migrations", "berth"}),
    "workers": frozenset({"berth"}),
    "migrations": frozenset({"bus", "workers", "berth"}),
    "berth": frozenset(),
}


@dataclass(frozen=True)
class Arrow:
    """One place where a module reaches another: an import, or a ``-m`` launch."""

    path: Path  # relative to the repository
    line: int
    target: str  # the absolute module name reached
    how: str  # "import" or "launch"

    @property
    def source(self) -> str:
        return self.path.parts[0]

    @property
    def target_package(self) -> str:
        return self.target.split(".")[0]

    def __str__(self) -> str:
        verb = "imports" if self.how == "import" else "launches python -m"
        return (f"{self.path}:{self.line}: {self.source} -> {self.target_package} "
                f"({verb} {self.target})")


def module_name(path: Path) -> str:
    """``bus/client.py`` -> ``bus.client``; ``berth/cli/__init__.py`` -> ``berth.cli``."""
    parts = list(path.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve(node: ast.ImportFrom, path: Path) -> str:
    """The absolute module a ``from ... import`` names, relative levels resolved."""
    if node.level == 0:
        return node.module or ""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package.pop()  # a module's relative imports start from its package
    up = node.level - 1
    if up >= len(package):
        raise ValueError(f"{path}:{node.lineno}: relative import beyond the top-level package")
    base = package[: len(package) - up]
    return ".".join([*base, node.module] if node.module else base)


def _docstrings(tree: ast.Module) -> set[int]:
    """ids of the docstring nodes: prose about ``python -m`` is not a launch."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


_DASH_M = re.compile(r"(?:^|\s)-m\s+([A-Za-z_][\w.]*)")


def arrows_of(path: Path, root: Path = REPO) -> Iterator[Arrow]:
    """Every import and ``-m`` launch in one file (``path`` relative to ``root``)."""
    tree = ast.parse((root / path).read_text(), filename=str(path))
    docstrings = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Arrow(path, node.lineno, alias.name, "import")
        elif isinstance(node, ast.ImportFrom):
            yield Arrow(path, node.lineno, resolve(node, path), "import")
        elif isinstance(node, ast.Call) and node.args and _is_dynamic_import(node.func):
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                yield Arrow(path, node.lineno, first.value, "import")
        elif isinstance(node, ast.List | ast.Tuple):
            # argv as a sequence: [sys.executable, "-m", "pkg.mod", ...]
            items = node.elts
            for flag, module in zip(items, items[1:], strict=False):
                if (isinstance(flag, ast.Constant) and flag.value == "-m"
                        and isinstance(module, ast.Constant) and isinstance(module.value, str)):
                    yield Arrow(path, module.lineno, module.value, "launch")
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and id(node) not in docstrings):
            # argv as a shell string: "python -m pkg.mod ..."
            for match in _DASH_M.finditer(node.value):
                yield Arrow(path, node.lineno, match.group(1), "launch")


def _is_dynamic_import(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in ("__import__", "import_module")
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def python_files(package: str, root: Path = REPO) -> list[Path]:
    return sorted(p.relative_to(root) for p in (root / package).rglob("*.py"))


@cache
def all_arrows() -> tuple[Arrow, ...]:
    return tuple(a for package in PACKAGES for path in python_files(package)
                 for a in arrows_of(path))


def cross_package(arrows: tuple[Arrow, ...]) -> list[Arrow]:
    return [a for a in arrows
            if a.target_package in PACKAGES and a.target_package != a.source]


def cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """Each elementary cycle once, as a path that returns to its start."""
    graph: dict[str, list[str]] = {}
    for a, b in sorted(edges):
        graph.setdefault(a, []).append(b)
    found: list[list[str]] = []

    def walk(start: str, node: str, path: list[str]) -> None:
        for nxt in graph.get(node, []):
            if nxt == start:
                found.append([*path, start])
            elif nxt not in path and nxt > start:  # report each cycle from its least node
                walk(start, nxt, [*path, nxt])

    for start in sorted(graph):
        walk(start, start, [start])
    return found


def _report(arrows: list[Arrow]) -> str:
    return "\n".join(str(a) for a in sorted(arrows, key=lambda a: (str(a.path), a.line)))


# -- the rules ---------------------------------------------------------------------------


@pytest.mark.parametrize("package", PACKAGES)
def test_no_arrow_points_up(package: str) -> None:
    wrong = [a for a in cross_package(all_arrows())
             if a.source == package and a.target_package in FORBIDDEN[package]]
    assert not wrong, (f"{package}/ must not reach {', '.join(sorted(FORBIDDEN[package]))}; "
                       f"it does here:\n{_report(wrong)}")


def test_the_package_graph_has_no_cycle() -> None:
    arrows = cross_package(all_arrows())
    edges = {(a.source, a.target_package) for a in arrows}
    found = cycles(edges)
    lines = []
    for cycle in found:
        lines.append("cycle: " + " -> ".join(cycle))
        for a, b in zip(cycle, cycle[1:], strict=False):
            lines.extend("  " + str(x) for x in arrows if (x.source, x.target_package) == (a, b))
    assert not found, "\n".join(lines)


def test_launches_stay_in_their_layer_and_name_a_real_module() -> None:
    """``python -m X`` from production code: X is of the launching package's own layer
    and exists (a module, or a package with ``__main__.py``)."""
    wrong = []
    for a in all_arrows():
        if a.how != "launch" or a.target_package not in PACKAGES:
            continue
        module = REPO / a.target.replace(".", "/")
        runnable = module.with_suffix(".py").is_file() or (module / "__main__.py").is_file()
        if a.target_package != a.source or not runnable:
            wrong.append(a)
    assert not wrong, "launches of another layer or of no module:\n" + _report(wrong)


# -- the walker itself -------------------------------------------------------------------


def test_the_walker_sees_the_arrows_that_should_exist() -> None:
    """A walker that found nothing would pass every rule above."""
    edges = {(a.source, a.target_package) for a in cross_package(all_arrows())}
    for expected in (("berth", "bus"), ("berth", "workers"), ("berth", "engine"),
                     ("bus", "engine"), ("workers", "engine"),
                     ("migrations", "engine")):
        assert expected in edges
    launches = [a for a in all_arrows() if a.how == "launch"]
    assert any(a.path == Path("berth/daemon.py") and a.target == "berth" for a in launches)


def test_the_walker_resolves_every_kind_of_import(tmp_path: Path) -> None:
    (tmp_path / "low" / "sub").mkdir(parents=True)
    (tmp_path / "low" / "__init__.py").write_text("from . import sub\n")
    (tmp_path / "low" / "sub" / "__init__.py").write_text("")
    (tmp_path / "low" / "sub" / "mod.py").write_text(
        '"""Run it with python -m high.tool (prose, not a launch)."""\n'
        "import os, high.a\n"
        "from .. import sibling\n"
        "from ..other import thing\n"
        "from .near import x\n"
        "def f():\n"
        "    from high.b import y\n"
        "    import importlib\n"
        "    importlib.import_module('high.c')\n"
        "    return ['python', '-m', 'high.d'], 'sh -c \"python3 -m high.e --x\"'\n"
    )
    found = {(a.line, a.target, a.how) for a in arrows_of(Path("low/sub/mod.py"), tmp_path)}
    assert found == {
        (2, "os", "import"), (2, "high.a", "import"), (3, "low", "import"),
        (4, "low.other", "import"), (5, "low.sub.near", "import"), (7, "high.b", "import"),
        (8, "importlib", "import"), (9, "high.c", "import"), (10, "high.d", "launch"),
        (10, "high.e", "launch"),
    }
    assert {a.target for a in arrows_of(Path("low/__init__.py"), tmp_path)} == {"low"}
    assert cycles({("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")}) == [["a", "b", "c", "a"]]
    assert cycles({("a", "b"), ("b", "c")}) == []


@pytest.mark.parametrize("module", ["berth.daemon", "engine.audit.transparency",
                                    "engine.store.recorder", "workers.worker"])
def test_entry_modules_import_first_in_a_fresh_interpreter(module: str) -> None:
    """A cycle between packages (audit -> store.schema -> store/__init__ -> recorder ->
    audit) only shows when one side is imported first: ``berth up`` imported the
    audit module first and could not start, while the suite, importing the store
    first, never saw it."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=root,
                          capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
