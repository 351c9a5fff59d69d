"""The package's shape, checked from its source: layers, no cycles, task plug-ins, small functions.

Layers, bottom to top (docs/architecture.md): base (errors, _io, _progress, rundir) < config < data
< models < engine, eval < predict < tasks < api, report, export, demos < cli. No module imports from
a layer above its own, at top level or inside a function; there are no import cycles; ``cli`` reaches
the library only through ``lanner.api`` (plus errors/config); no code outside ``tasks/`` branches on
a task's name; lanner's own modules are imported at the top of a module, never inside a function.
"""

from __future__ import annotations

import ast
import re
import statistics
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "lanner"
LAYER = {
    "errors": 0, "_io": 0, "_progress": 0, "rundir": 0,
    "config": 1, "data": 2, "models": 3, "engine": 4, "eval": 4, "predict": 5, "tasks": 6,
    "api": 7, "report": 7, "export": 7, "demo": 7, "demo_detect": 7, "predictor": 7, "share": 7,
    "cli": 8, "__main__": 8,
}  # fmt: skip
CLI_MAY_IMPORT = {"api", "errors", "config", "_progress"}
TASK_BRANCH = re.compile(r"""(\btask|\.task|\.name)\s*(==|!=|in)\s*\(?\s*["'](detect|classify)["']""")


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = ["lanner", *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(module: str, path: Path):
    """(imported lanner module, inside a function?) for every import of a lanner module."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base])
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        for name in names:
            while name not in MODULES and "." in name:
                name = name.rsplit(".", 1)[0]
            if name in MODULES and name not in (module, "lanner"):
                yield name


def _graph() -> dict[str, set[str]]:
    return {m: set(_imports(m, p)) for m, p in MODULES.items()}


def test_every_module_has_a_layer():
    assert {_top(m) for m in MODULES} - {"__init__"} <= set(LAYER)


def test_no_upward_imports():
    upward = [
        f"{m} -> {t}"
        for m, targets in _graph().items()
        for t in targets
        if _top(m) != "__init__" and LAYER[_top(t)] > LAYER[_top(m)]
    ]
    assert upward == []


def test_cli_goes_through_the_api():
    assert {_top(t) for t in _graph()["lanner.cli"]} <= CLI_MAY_IMPORT


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(m: str, trail: list[str]) -> list[str] | None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return [*trail, m, t]
            if t not in state and (cycle := visit(t, [*trail, m])):
                return cycle
        state[m] = 2
        return None

    cycles = [c for m in sorted(graph) if m not in state and (c := visit(m, []))]
    assert cycles == []


def _function_imports(path: Path):
    for fn in ast.walk(ast.parse(path.read_text())):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    yield from (a.name for a in node.names)
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    yield node.module or ""


def test_lanner_modules_are_imported_at_the_top():
    """An import of lanner's own inside a function hides a dependency (or a cycle) from the reader."""
    lazy = {
        f"{m}: {name}"
        for m, p in MODULES.items()
        for name in _function_imports(p)
        if name.split(".")[0] == "lanner"
    }
    assert lazy == set()


def test_no_task_name_branches_outside_tasks():
    found = [
        f"{p.relative_to(SRC)}:{i}"
        for m, p in MODULES.items()
        if _top(m) not in ("tasks", "data", "config", "demo")
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if TASK_BRANCH.search(line)
    ]
    assert found == []


def _functions():
    for m, p in MODULES.items():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield m, node


def _length(fn: ast.FunctionDef) -> int:
    body = fn.body[1:] if ast.get_docstring(fn) else fn.body  # the docstring is not code
    return body[-1].end_lineno - body[0].lineno + 1 if body else 0


def test_functions_are_small():
    lengths = [_length(fn) for _, fn in _functions()]
    too_long = [f"{m}.{fn.name}: {_length(fn)}" for m, fn in _functions() if _length(fn) > 60]
    assert too_long == []
    assert statistics.median(lengths) <= 10


def test_functions_take_few_parameters():
    def count(fn) -> int:
        a = fn.args
        return (
            len(a.posonlyargs)
            + len(a.args)
            + len(a.kwonlyargs)
            - (a.args[:1] != [] and a.args[0].arg == "self")
        )

    many = {f"{m}.{fn.name}" for m, fn in _functions() if m != "lanner.cli" and count(fn) > 8}
    assert many == set()


@pytest.mark.parametrize("name", ["classify", "detect", "two_stage"])
def test_each_task_is_a_registered_plug_in_folder(name):
    from lanner.tasks import Task, get_task

    task = get_task(name)
    assert isinstance(task, Task) and task.name == name
    assert (SRC / "tasks" / name / "__init__.py").exists()
