"""Imports inside ``analysis`` go one way: no module imports one that (directly or not) imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

ANALYSIS = Path(__file__).resolve().parents[2] / "analysis"


def _imports(path: Path) -> set[str]:
    """analysis modules imported anywhere in ``path`` (function-level imports included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("analysis."):
            out.add(node.module.split(".")[1])
        elif isinstance(node, ast.ImportFrom) and node.module == "analysis":
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("analysis."))
    return out


def test_no_import_cycle_inside_analysis():
    mods = {p.stem: p for p in ANALYSIS.glob("*.py") if p.stem not in ("__init__", "__main__")}
    graph = {m: _imports(p) & set(mods) - {m} for m, p in mods.items()}
    assert "evaluate" not in graph["sweep"] and "sweep" in graph["evaluate"]  # the cycle of issue 14

    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        if state.get(m) == 1:
            raise AssertionError("import cycle: " + " -> ".join(path + [m]))
        if state.get(m) == 2:
            return
        state[m] = 1
        for n in sorted(graph[m]):
            visit(n, path + [m])
        state[m] = 2

    for m in sorted(graph):
        visit(m, [])
