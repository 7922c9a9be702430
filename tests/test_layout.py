"""The shape of the house (issue 23): layers that import only downwards and never in a circle, no function longer
than a screen and a half, and one function that parses a schedule, read from the source with `ast`; and what
reading a study imports, in one subprocess."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Each package may import those below it, never those above: the command line drives searches and reports, a
# search drives trials, a report reads what searches stored.
LAYERS = {"trainer": 0, "analysis": 1, "search": 2, "results": 3, "cli": 4}
MAX_FUNCTION_LINES = 80


def _modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the four packages and their subpackages, by dotted name (a package by its `__init__`; entry
    scripts, `__main__`, are imported by nothing)."""
    found = {}
    for package in LAYERS:
        for path in sorted((root / package).rglob("*.py")):
            if path.stem == "__main__":
                continue
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports, at the top or inside a function (a late import is still one)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    target = f"{node.module}.{alias.name}"
                    graph[name].add(target if target in modules else node.module)
            elif isinstance(node, ast.Import):
                graph[name].update(alias.name for alias in node.names)
        graph[name] = {t for t in graph[name] if t in modules or t in LAYERS} - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_one_that_imports_it_back():
    cycles = _cycles(_imports(_modules()))
    assert not cycles, f"import circles: {cycles}"


def _upward(graph: dict[str, set[str]]) -> list[str]:
    return [
        f"{a} imports {b}"
        for a, targets in graph.items()
        for b in targets
        if LAYERS[b.split(".")[0]] > LAYERS[a.split(".")[0]]
    ]


def test_packages_import_only_downwards():
    upward = _upward(_imports(_modules()))
    assert not upward, upward


# search's own parts, bottom up: the space (what a grid and its design mean), the study's record (its database,
# store, attributes, trials), planning (what runs, at what price, how a design grows, the confirmation), the run.
SEARCH_LAYERS = {"space": 0, "records": 1, "planning": 2, "run": 3}


def _search_upward(graph: dict[str, set[str]]) -> list[str]:
    def layer(name: str) -> int | None:
        parts = name.split(".")
        return SEARCH_LAYERS.get(parts[1]) if parts[0] == "search" and len(parts) > 1 else None

    return [
        f"{a} imports {b}"
        for a, targets in graph.items()
        for b in targets
        if layer(a) is not None and layer(b) is not None and layer(b) > layer(a)  # type: ignore[operator]
    ]


def test_search_is_its_parts_each_importing_only_those_below():
    modules = _modules()
    loose = [n for n in modules if n.startswith("search.") and n.split(".")[1] not in SEARCH_LAYERS]
    assert not loose, f"every module of search belongs to one of its parts {list(SEARCH_LAYERS)}: {loose}"
    upward = _search_upward(_imports(modules))
    assert not upward, upward


def test_the_trainer_knows_nothing_of_optuna_or_ray():
    offenders = []
    for name, path in _modules().items():
        if name.startswith("trainer."):
            for node in ast.walk(ast.parse(path.read_text())):
                roots = (
                    [a.name.split(".")[0] for a in node.names]
                    if isinstance(node, ast.Import)
                    else [(node.module or "").split(".")[0]]
                    if isinstance(node, ast.ImportFrom)
                    else []
                )
                offenders += [f"{name} imports {r}" for r in roots if r in ("optuna", "ray")]
    assert not offenders, offenders


def test_reading_a_study_or_driving_a_run_imports_neither_torch_nor_scikit_learn():
    """`search status`, `export` and `report` read names and records: each paid ~2 CPU-s importing torch and
    scikit-learn for a tuple of metric names (`trainer.metrics`). A run's driver checks its image caches and sends
    jobs: it paid ~1.7 CPU-s for torch, which only its workers (and a cache being built) need."""
    code = (
        "import sys, cli, cli.inspection, results.report, search.records.trialtable, search.run.driver\n"
        "import trainer.data.cache, search.run.dispatch\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'sklearn', 'timm', 'pytorch_grad_cam'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def _long_functions(paths: list[Path]) -> list[str]:
    return [
        f"{path}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in paths
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]


def test_no_function_is_longer_than_80_lines():
    long = _long_functions([*_modules().values(), *sorted((ROOT / "bench").glob("*.py"))])
    assert not long, long


def _parses_a_schedule(function: ast.AST) -> bool:
    """Splits text on commas and compares a piece with "p": what reading `proxy_steps` takes."""
    splits = any(
        isinstance(n, ast.Call)
        and isinstance(n.func, ast.Attribute)
        and n.func.attr == "split"
        and any(isinstance(a, ast.Constant) and a.value == "," for a in n.args)
        for n in ast.walk(function)
    )
    compares_p = any(
        isinstance(n, ast.Compare)
        and any(isinstance(c, ast.Constant) and c.value == "p" for c in [n.left, *n.comparators])
        for n in ast.walk(function)
    )
    return splits and compares_p


def test_proxy_steps_is_parsed_in_exactly_one_function():
    parsers = [
        f"{name}.{node.name}"
        for name, path in _modules().items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _parses_a_schedule(node)
    ]
    assert parsers == ["trainer.schedule.parse_schedule"]


def test_the_layout_checks_can_fail(tmp_path):
    """The checks above, on a made-up package with a circle, an upward import and a second parser."""
    made = {
        "trainer.a": "from trainer.b import x\n",
        "trainer.b": "from trainer.a import y\nfrom search.c import z\n",
        "search.c": "def read(text):\n    return [t == 'p' for t in text.split(',')]\n",
    }
    modules = {}
    for name, source in made.items():
        path = tmp_path / f"{name}.py"
        path.write_text(source)
        modules[name] = path
    graph = _imports(modules)
    assert _cycles(graph) == [["trainer.a", "trainer.b"]]
    assert "search.c" in graph["trainer.b"] and LAYERS["search"] > LAYERS["trainer"]
    assert _parses_a_schedule(ast.parse(made["search.c"]).body[0])
    assert _search_upward({"search.space.grid": {"search.run.driver"}}) == [
        "search.space.grid imports search.run.driver"
    ]


def test_the_checks_reach_into_subpackages(tmp_path):
    """A nested module (`trainer/data/…`) is held to the same rules: an upward import, a long function."""
    nested = tmp_path / "trainer" / "data"
    nested.mkdir(parents=True)
    (nested / "__init__.py").write_text("")
    (nested / "reader.py").write_text("from search.up import x\n\n\ndef long():\n" + "    y = 1\n" * 90)
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "up.py").write_text("x = 1\n")
    modules = _modules(tmp_path)
    assert {"trainer.data", "trainer.data.reader", "search.up"} <= set(modules)
    assert _upward(_imports(modules)) == ["trainer.data.reader imports search.up"]
    assert len(_long_functions(list(modules.values()))) == 1
