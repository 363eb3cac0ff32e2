"""The import graph of berth's packages and of engine/'s modules: the arrows go one way.

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
import subprocess
import sys
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


def test_the_compose_library_never_reaches_the_cli() -> None:
    """``berth/compose/`` (the reconciler, a publisher) is called by the CLI and calls
    the bus client and the pure engine: an import of ``berth.cli`` from it would put
    the CLI and its library in one circle again."""
    wrong = [a for a in all_arrows() if a.path.parts[:2] == ("berth", "compose")
             and (a.target == "berth.cli" or a.target.startswith("berth.cli."))]
    assert not wrong, "berth/compose/ must not import the CLI:\n" + _report(wrong)


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


# -- inside engine/: modules -------------------------------------------------------------
#
# The rules above see packages; these see the modules of engine/. Importing a module
# runs its package's __init__ first, so an arrow to engine.a.b is an arrow to engine.a
# too. Imports under ``if TYPE_CHECKING:`` run nothing and are left out of the graph;
# imports inside functions are in it (they run, only later).

ENGINE = "engine"

PURE: tuple[str, ...] = (
    # the kernel's values and the one parser
    "engine.commands", "engine.command_types", "engine.events", "engine.arguments",
    "engine.parsing", "engine.ids", "engine.errors", "engine.signals",
    # each feature's rules, values and parser
    "engine.containers.decide", "engine.containers.projection", "engine.containers.spec",
    "engine.containers.mountspec", "engine.containers.process", "engine.containers.parsing",
    "engine.networks.rules", "engine.networks.names", "engine.networks.parsing",
    "engine.volumes.rules", "engine.volumes.parsing",
    "engine.health.rules", "engine.restarts.rules",
    "engine.compose.model", "engine.compose.plan", "engine.compose.checks",
    "engine.compose.commands",
    "engine.images.commands", "engine.images.reference", "engine.images.config",
    "engine.audit.merkle", "engine.audit.parsing",
    "engine.runtime.types",
)
"""Modules that decide or describe and never act: with everything they import, they
load no store, no runtime and no service, so they run (and are tested) without one."""

SERVICES: tuple[str, ...] = (
    "engine.volumes.service", "engine.networks.service", "engine.images.service",
    "engine.health.prober", "engine.restarts.restarter", "engine.compose.stacks",
)
"""The features around containers: each may drive engine.containers.service, which is
the one path that changes a container and drives none of them; and none drives another."""


def _impure(module: str) -> bool:
    """A store, a runtime or a service: what a pure module must never load."""
    if module == "engine.store" or module.startswith("engine.store."):
        return True
    if module.startswith("engine.runtime.") and module != "engine.runtime.types":
        return True  # engine.runtime.types: the values a runtime reports, nothing more
    return module.rsplit(".", 1)[-1] in ("service", "prober", "restarter", "recovery",
                                         "queries", "stacks")


@dataclass(frozen=True)
class Use:
    """One import of an engine module by an engine module."""

    path: Path
    line: int
    source: str
    target: str  # the module named (``from engine.a import b``: engine.a.b if a module)
    in_function: bool
    type_only: bool

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.source} -> {self.target}"


def modules_of(package: str, root: Path = REPO) -> dict[str, Path]:
    return {module_name(p): p for p in python_files(package, root)}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _inside(tree: ast.Module) -> tuple[set[int], set[int]]:
    """ids of the nodes inside a function, and of those under ``if TYPE_CHECKING:``."""
    in_function: set[int] = set()
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            in_function.update(id(n) for n in ast.walk(node) if n is not node)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            type_only.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return in_function, type_only


def local_imports(path: Path, root: Path = REPO) -> Iterator[tuple[int, str, bool]]:
    """Every import statement inside a function: (line, source text, has a comment)."""
    text = (root / path).read_text()
    lines = text.splitlines()
    tree = ast.parse(text, filename=str(path))
    in_function, _ = _inside(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom) and id(node) in in_function:
            statement = lines[node.lineno - 1: (node.end_lineno or node.lineno)]
            yield node.lineno, " ".join(s.strip() for s in statement), any(
                "#" in s for s in statement)


def uses_of(path: Path, modules: dict[str, Path], root: Path = REPO) -> Iterator[Use]:
    """The imports of ``path`` that name a module of ``modules``."""
    tree = ast.parse((root / path).read_text(), filename=str(path))
    in_function, type_only = _inside(tree)
    source = module_name(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            named = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = resolve(node, path)
            named = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                     for a in node.names]
        else:
            continue
        for target in named:
            if target in modules and target != source:
                yield Use(path, node.lineno, source, target, id(node) in in_function,
                          id(node) in type_only)


def runtime_graph(uses: list[Use]) -> dict[str, dict[str, Use]]:
    """module -> the modules importing it runs (with their packages' __init__), each
    with one import that brings it in."""
    graph: dict[str, dict[str, Use]] = {}
    for use in uses:
        if use.type_only:
            continue
        parts = use.target.split(".")
        own = {".".join(use.source.split(".")[:i]) for i in range(1, use.source.count(".") + 1)}
        for i in range(2, len(parts) + 1):  # engine.a, engine.a.b: each __init__ runs
            reached = ".".join(parts[:i])
            if reached not in own:  # the importer's own packages are already running
                graph.setdefault(use.source, {}).setdefault(reached, use)
    return graph


def strongly_connected(graph: dict[str, dict[str, Use]]) -> list[list[str]]:
    """The groups of modules that reach each other (Tarjan), each sorted; singles left out."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def reach(graph: dict[str, dict[str, Use]], start: str) -> dict[str, list[Use]]:
    """Every module importing ``start`` loads, with the chain of imports that loads it."""
    seen: dict[str, list[Use]] = {start: []}
    todo = [start]
    while todo:
        node = todo.pop(0)
        for nxt, use in sorted(graph.get(node, {}).items()):
            if nxt not in seen:
                seen[nxt] = [*seen[node], use]
                todo.append(nxt)
    del seen[start]
    return seen


@cache
def engine_uses() -> tuple[Use, ...]:
    modules = modules_of(ENGINE)
    return tuple(u for path in modules.values() for u in uses_of(path, modules))


def test_no_import_cycle_between_modules_inside_engine() -> None:
    graph = runtime_graph(list(engine_uses()))
    lines = []
    for group in strongly_connected(graph):
        lines.append(f"these {len(group)} modules import each other:")
        lines.extend(f"  {use}" for m in group for t, use in sorted(graph[m].items())
                     if t in group)
    assert not lines, "\n".join(lines)


@pytest.mark.parametrize("module", PURE)
def test_a_pure_module_loads_no_store_runtime_or_service(module: str) -> None:
    assert module in modules_of(ENGINE), f"{module} is listed as pure but does not exist"
    wrong = {m: chain for m, chain in reach(runtime_graph(list(engine_uses())), module).items()
             if _impure(m)}
    assert not wrong, f"{module} is pure, yet importing it loads:\n" + "\n".join(
        f"  {m}, through\n" + "\n".join(f"    {use}" for use in chain)
        for m, chain in sorted(wrong.items()))


def test_features_drive_the_container_service_never_the_reverse() -> None:
    graph = runtime_graph(list(engine_uses()))
    wrong = []
    for module in ("engine.containers.service", *SERVICES):
        loaded = reach(graph, module)
        for other in SERVICES:
            if other != module and other in loaded:
                wrong.append(f"{module} loads {other}, through\n"
                             + "\n".join(f"    {use}" for use in loaded[other]))
    assert not wrong, "\n".join(wrong)


def patched_attributes(path: Path) -> list[str]:
    """Assignments to an attribute of an attribute (``self.service.volumes = ...``):
    one object setting what another object needs after building it."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        for target in targets:
            if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Attribute):
                found.append(f"{path.name}:{node.lineno}: {ast.unparse(target)}")
    return found


def test_the_worker_wires_its_parts_in_their_constructors() -> None:
    """The worker builds its parts in dependency order, each given what it needs when
    it is made: an attribute patched in afterwards is a dependency the constructor
    hides (and a window in which the part runs without it)."""
    wrong = patched_attributes(REPO / "workers" / "worker.py")
    assert not wrong, "parts patched after they were built:\n" + "\n".join(wrong)


def test_the_patch_finder_sees_a_patch(tmp_path: Path) -> None:
    source = tmp_path / "wiring.py"
    source.write_text("class W:\n    def __init__(self):\n        self.a = A()\n"
                      "        self.a.b = B()\n        self.c: int = 1\n")
    assert patched_attributes(source) == ["wiring.py:4: self.a.b"]


def test_imports_inside_functions_say_why() -> None:
    """An import inside a function hides an arrow from the reader (and once hid a
    circle): allowed for a reason (a start-up cost, an optional library), written on
    the import's own line."""
    wrong = [f"{path}:{line}: {text}" for path in python_files(ENGINE)
             for line, text, commented in local_imports(path) if not commented]
    assert not wrong, ("imports inside functions without a comment saying why:\n"
                       + "\n".join(wrong))


IMPORT_ALONE = """
import importlib, sys, traceback
OURS = ("engine", "bus", "workers", "berth", "migrations")
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m.split(".")[0] in OURS]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ": " + traceback.format_exc().strip().splitlines()[-1])
print("\\n".join(failed))
"""


def test_every_module_imports_first() -> None:
    """Each module imported first, into an interpreter holding none of berth's modules: a
    circle that only works in one order fails here (engine.audit.chain once did, and
    every ``berth worker`` died at start-up while the suite, importing the store first,
    passed). The process entries (workers.worker, berth.daemon, berth.cli) are among
    them; Alembic's own files and ``__main__`` are not importable on their own."""
    names = sorted(name for package in PACKAGES for name in modules_of(package)
                   if not name.startswith("migrations.versions")
                   and name not in {"migrations.env", "berth.__main__"})
    assert {"workers.worker", "berth.daemon", "engine.audit.transparency"} <= set(names)
    done = subprocess.run([sys.executable, "-c", IMPORT_ALONE, *names], cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.stdout.strip() == "", done.stdout


# -- the module walker itself ------------------------------------------------------------


def test_the_module_walker_sees_cycles_parents_and_local_imports(tmp_path: Path) -> None:
    """Each rule above fails on its violation: the same functions on a small tree."""
    pkg = tmp_path / "engine"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("from engine.a import pure\n")
    (pkg / "a" / "pure.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from engine import low\n"
        "if TYPE_CHECKING:\n"
        "    from engine.a import service\n")
    (pkg / "a" / "service.py").write_text("")
    (pkg / "low.py").write_text(
        "def f():\n"
        "    from engine.a import service  # a reason\n"
        "    import json\n")
    modules = modules_of("engine", tmp_path)
    uses = [u for p in modules.values() for u in uses_of(p, modules, tmp_path)]
    graph = runtime_graph(uses)
    # engine.low -> engine.a.service runs engine/a/__init__ -> pure -> low: a circle
    assert strongly_connected(graph) == [["engine.a", "engine.a.pure", "engine.low"]]
    assert "engine.a.service" in reach(graph, "engine.a.pure")  # through low, at runtime
    assert _impure("engine.a.service") and not _impure("engine.runtime.types")
    assert [u.target for u in uses if u.type_only] == ["engine.a.service"]
    assert [(line, commented) for line, _, commented
            in local_imports(Path("engine/low.py"), tmp_path)] == [(2, True), (3, False)]
    (pkg / "low.py").write_text("")
    uses = [u for p in modules.values() for u in uses_of(p, modules, tmp_path)]
    assert strongly_connected(runtime_graph(uses)) == []
