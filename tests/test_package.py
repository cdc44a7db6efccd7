"""The package's public names, and the shape of the house: no import cycles, light layers stay light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "conformance"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def import_graph() -> dict[str, set[str]]:
    """Each module of the package -> the package modules it imports (at any depth: function-level
    imports count, and so do imports under ``if TYPE_CHECKING``)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # `from pkg import mod` depends on pkg.mod; `from mod import name` on mod. The parent
                # package that Python imports first is not counted: a package's __init__ re-exports
                # from its own modules, which never import from that __init__.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_inside_the_package() -> None:
    graph = import_graph()
    assert len(graph) > 20
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def _reaches(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_lower_layers_import_nothing_from_higher_ones() -> None:
    graph = import_graph()
    higher = ("conformance.registry", "conformance.scoring", "conformance.api", "conformance.cli",
              "conformance.reconstruct")
    for low in [m for m in graph if m.startswith(("conformance.ledger", "conformance.stats", "conformance.baseline",
                                                    "conformance.records", "conformance.embedder",
                                                    "conformance.embedding_cache",
                                                    "conformance.verdict", "conformance.defaults"))]:
        bad = sorted(m for m in _reaches(graph, low) if m.startswith(higher))
        assert not bad, f"{low} imports {bad}"
    for stat in [m for m in graph if m.startswith("conformance.stats")]:
        bad = sorted(m for m in _reaches(graph, stat)
                     if not m.startswith(("conformance.stats", "conformance.defaults", "conformance.params",
                                               "conformance.errors")))
        assert not bad, f"{stat} (statistics only) imports {bad}"


def test_public_names() -> None:
    code = (
        "import conformance\n"
        "import conformance.baseline.fit, conformance.scoring\n"
        "assert callable(conformance.build) and conformance.build.__module__ == 'conformance.api'\n"
        "assert callable(conformance.score) and callable(conformance.approve)\n"
        "assert conformance.Baseline.__name__ == 'Baseline'\n"
        "assert set(conformance.__all__) >= {'build', 'score', 'approve', 'Baseline', 'ScoreResult', 'Verdict',"
        " 'ConformanceError'}\n"
        "print('ok')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr


def test_importing_the_package_and_the_cli_loads_no_heavy_library() -> None:
    code = (
        "import sys, conformance, conformance.cli, conformance.defaults, conformance.errors\n"
        "heavy = sorted(m for m in ('numpy', 'scipy', 'torch', 'mlflow', 'sentence_transformers', 'pandas',"
        " 'sqlalchemy') if m in sys.modules)\n"
        "print(heavy)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
