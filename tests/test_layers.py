"""The packages are layered one way: probpose <- analysis <- training / studio (and app.py wires the studio).

Every import in every file counts, including imports inside functions and `try` blocks: a lazy import is still a
dependency."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> top-level modules it must never import
FORBIDDEN = {
    "probpose": {"gradio", "spaces", "analysis", "training", "studio", "app"},
    "analysis": {"gradio", "spaces", "training", "studio", "app"},
    "training": {"gradio", "spaces", "studio", "app"},
    "studio": {"training", "app"},
}


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module imported anywhere in the file (relative imports resolve to its package)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = path.relative_to(ROOT).parts[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add(package if node.level else (node.module or "").split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            found.add(str(node.args[0].value).split(".")[0])
    return found


def test_import_parser_sees_function_level_and_dynamic_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "probpose"
    pkg.mkdir()
    f = pkg / "x.py"
    f.write_text("import os\ndef f():\n    from analysis.exoks import a\n    import gradio as gr\n"
                 "    importlib.import_module('studio.explore')\nfrom . import codec\n")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    assert imported_modules(f) == {"os", "analysis", "gradio", "studio", "probpose"}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_downwards(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no Python files"
    bad = {str(f.relative_to(ROOT)): sorted(imported_modules(f) & FORBIDDEN[package]) for f in files}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"{package} must not import {sorted(FORBIDDEN[package])}: {bad}"
