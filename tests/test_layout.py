"""The package layout follows the data flow, and nothing points back up it (read from the source with `ast`).

captions → generation → augment → data → models → losses → methods → evaluation → callbacks →
interop → cli; `distributed` is the base every layer may use. A module may import its own folder,
`distributed` and the folders before its own; evaluation uses the generation package only through
the generator interface (an eval set's config picks the generator).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "stablerep_pl"
FLOW = ["captions", "generation", "augment", "data", "models", "losses", "methods", "evaluation", "callbacks",
        "interop", "cli"]  # fmt: skip
BASE = "distributed"
ONLY_THROUGH = {("evaluation", "generation"): {"stablerep_pl.generation.base"}}


def folder_of(path: Path, package: Path) -> str:
    return path.relative_to(package).parts[0].removesuffix(".py")


def internal_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("stablerep_pl"):
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.startswith("stablerep_pl")]
    return found


def violations(path: Path, package: Path = PACKAGE) -> list[str]:
    here = folder_of(path, package)
    problems = []
    for module in internal_imports(path):
        parts = module.split(".")
        if len(parts) < 2 or parts[1] == here:
            continue
        there = parts[1]
        if there == BASE:
            continue
        if here == BASE:
            problems.append(f"{module} (distributed is the base layer)")
        elif here in FLOW and there in FLOW and FLOW.index(there) > FLOW.index(here):
            problems.append(f"{module} (points back up the flow)")
        elif (here, there) in ONLY_THROUGH and module not in ONLY_THROUGH[(here, there)]:
            problems.append(f"{module} (only {sorted(ONLY_THROUGH[(here, there)])})")
    return problems


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if len(p.relative_to(PACKAGE).parts) > 1)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_points_back_up_the_flow(path: Path) -> None:
    assert violations(path) == []


def test_every_folder_is_in_the_flow_and_says_what_it_owns() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert folders == {*FLOW, BASE}
    for folder in folders:
        doc = ast.get_docstring(ast.parse((PACKAGE / folder / "__init__.py").read_text()))
        first = doc.split("\n\n")[0] if doc else ""
        assert "\n" not in first and first.endswith(".") and first.count(". ") == 0, folder  # one sentence


def test_no_source_file_over_300_lines() -> None:
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 300
    }
    assert long == {}


def test_the_checker_catches_a_backward_import(tmp_path: Path) -> None:
    """The rule itself can fail: a data module importing a model, evaluation importing a generator."""
    fake = tmp_path / "stablerep_pl"
    (fake / "data").mkdir(parents=True)
    (fake / "evaluation").mkdir()
    (fake / "data" / "bad.py").write_text("from stablerep_pl.models.text import TextTransformer\n")
    (fake / "evaluation" / "bad.py").write_text("from stablerep_pl.generation.procedural import X\n")
    assert violations(fake / "data" / "bad.py", fake) == [
        "stablerep_pl.models.text (points back up the flow)"
    ]
    assert "only" in violations(fake / "evaluation" / "bad.py", fake)[0]
