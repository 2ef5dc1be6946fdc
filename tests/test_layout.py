"""The layout's guard rails (issues 24 and 43), checked on the source with `ast`, no import, no
device:

- the imports of gpucore, gpustd and diffusion form no cycle of any kind: lazy imports inside
  functions count, and so do imports under `if TYPE_CHECKING:` (a module that needs another's
  type only, where that one imports it back, takes a `Protocol` of its own instead). A plan sits
  below its code generator, below its dispatcher; a tuner above what it tunes; when two modules
  need each other, one of them is two modules, the shared part below both;
- diffusion's kinds (models, text, sampling, ...) never import the generation front doors
  (pipelines, server, cli), and pipelines never import the server or the CLI;
- no module is over ~400 lines, except generated-kernel sources and data tables: a longer one
  splits along a real seam (argument groups, model families, plan / generator / dispatcher).

An allowance below names one known offender and the work that removes it; the lead deletes it
when that work lands (a stale allowance fails too, saying so).
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.nodevice

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gpucore", "gpustd", "diffusion")
MAX_LINES = 400

# Import cycles that exist today, each with the work that breaks it (none today).
KNOWN_CYCLES: dict[frozenset[str], str] = {}

# Modules allowed past MAX_LINES: generated-kernel sources and data tables (none today).
LONG_MODULES: dict[str, str] = {}


def _modules() -> dict[str, Path]:
    """Every module of PACKAGES by dotted name ('gpustd.nn' for gpustd/nn/__init__.py)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _import_statements(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth: lazy imports in functions and imports under
    `if TYPE_CHECKING:` count too (they are how a cycle hides)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The modules of PACKAGES that `node`, written in `module`, imports."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: from the package `module` is in (or is, for an __init__)
            package = module.split(".")
            is_package = MODULES[module].name == "__init__.py"
            anchor = package[: len(package) - node.level + (1 if is_package else 0)]
            base = ".".join([*anchor, *([base] if base else [])])
        # `from package import name` imports the submodule `name` when there is one
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                 for alias in node.names]
    for name in names:
        while name and name not in MODULES:  # `import a.b.c` of an object: its module
            name = name.rpartition(".")[0]
        if name and name != module:
            yield name


def _imports(module: str, tree: ast.Module) -> set[str]:
    """The modules of PACKAGES that `module` (whose source is `tree`) imports."""
    return {t for node in _import_statements(tree) for t in _targets(module, node)}


@functools.cache
def _graph() -> dict[str, set[str]]:
    return {module: _imports(module, ast.parse(path.read_text(encoding="utf-8"),
                                               filename=str(path)))
            for module, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def test_the_import_walk_sees_the_packages_imports():
    """The walk itself: relative, absolute, lazy, type-only and submodule imports resolve to
    modules, and a circle is found."""
    graph = _graph()
    assert "gpucore._device" in graph["gpucore._kernel"]  # from ._device import Device
    type_only = ast.parse("from typing import TYPE_CHECKING\n\n"
                          "if TYPE_CHECKING:\n    from gpucore._device import Device\n")
    assert _imports("gpucore._kernel", type_only) == {"gpucore._device"}
    assert "gpucore" in graph["gpustd._tensor"]  # import gpucore
    assert "diffusion.sampling.samplers.registry" in graph["diffusion.sampling.samplers.euler"]
    # from . import x
    assert "diffusion.sampling.samplers.timestep" in graph["diffusion.sampling.samplers"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset("abc")]


def test_imports_form_no_cycle():
    cycles = set(_cycles(_graph()))
    new = [sorted(c) for c in cycles - KNOWN_CYCLES.keys()]
    assert not new, (f"import cycles: {new}. Break each: when two modules need each other, one "
                     "of them is two modules (the shared part goes below both); where one "
                     "needs only the other's type, it takes a Protocol of its own")
    stale = [why for cycle, why in KNOWN_CYCLES.items() if cycle not in cycles]
    assert not stale, f"KNOWN_CYCLES allows cycles that are gone ({stale}): delete the allowance"


# diffusion's kinds that the generation front doors build on: none of them imports those doors.
BELOW_PIPELINES = ("models", "text", "sampling", "noise", "loaders", "lora",
                   "upscalers", "preprocessors")
FRONT_DOORS = ("pipelines", "server", "cli")


def test_diffusion_kinds_import_down_only():
    """models, text, sampling, ... never import a pipeline, the server or the CLI; pipelines
    never import the server or the CLI (diffusion/__init__'s table)."""
    def kind(module: str) -> str:
        return module.split(".")[1] if module.count(".") else ""

    wrong = []
    for module, targets in _graph().items():
        if not module.startswith("diffusion."):
            continue
        above = FRONT_DOORS if kind(module) in BELOW_PIPELINES else (
            ("server", "cli") if kind(module) == "pipelines" else ())
        wrong += [f"{module} -> {t}" for t in sorted(targets)
                  if t.startswith("diffusion.") and kind(t) in above]
    assert not wrong, f"imports pointing up the layout: {wrong}"


def test_sampling_imports_only_noise():
    """diffusion.sampling (samplers, schedulers, the model sampling, guidance, the loops) works
    on numpy arrays and a family's callables: of the three packages it imports only
    diffusion.noise (docs/ARCHITECTURE.md's order), so every family can use it."""
    wrong = [f"{module} -> {t}" for module, targets in _graph().items()
             if module.startswith("diffusion.sampling") for t in sorted(targets)
             if not t.startswith(("diffusion.sampling", "diffusion.noise"))]
    assert not wrong, f"diffusion.sampling imports what is above or beside it: {wrong}"


def test_no_module_is_over_400_lines():
    lines = {m: len(p.read_text(encoding="utf-8").splitlines()) for m, p in MODULES.items()}
    long = {m: n for m, n in lines.items() if n > MAX_LINES and m not in LONG_MODULES}
    assert not long, (f"modules over {MAX_LINES} lines: {long}; split each along a real seam "
                      "(argument groups, model families, plan / code generator / dispatcher), "
                      "not into _helpers")
    stale = [m for m in LONG_MODULES if lines.get(m, 0) <= MAX_LINES]
    assert not stale, f"LONG_MODULES allows modules that are short now ({stale}): delete them"


def test_the_tests_have_one_conftest():
    """Test files import helpers from tests/conftest.py as `conftest` (tests/ is on the path);
    a conftest.py in a subfolder is imported under the same name and shadows it for every
    later `from conftest import ...` of a whole run (files run alone still pass). Shared
    fixtures of a folder go in a module that tests/conftest.py names in `pytest_plugins`."""
    found = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("conftest.py"))
    assert found == ["tests/conftest.py"], found


def test_test_files_have_unique_names():
    """The test folders are not packages: pytest imports each test file under its basename,
    and a second file of the same name fails the whole run's collection ("import file
    mismatch"), though each passes alone."""
    names: dict[str, list[str]] = {}
    for path in (ROOT / "tests").rglob("test_*.py"):
        names.setdefault(path.name, []).append(str(path.relative_to(ROOT)))
    assert not {name: paths for name, paths in names.items() if len(paths) > 1}
