"""The rules of the layout that import-linter cannot state (``make lint`` checks the rest:
the ``[tool.importlinter]`` contracts in ``pyproject.toml``)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUNTIME = ("tabserve", "training", "ui", "load_tests")
PRIVATE_BENTOML = ("bentoml._internal", "_bentoml_sdk", "_bentoml_impl")
MAX_LINES = 400


def _sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py"))


def _imported(path: Path) -> set[str]:
    """Every module ``path`` imports by name, at any depth (functions included), and the
    module names it passes to ``importlib.import_module`` or writes as ``module:Class``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value.startswith(PRIVATE_BENTOML)
            and ":" in node.value
        ):
            names.add(node.value.split(":")[0])
    return names


def test_only_bentoml_private_reaches_into_bentoml_internals() -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted(
            n for n in _imported(path) if n.startswith(PRIVATE_BENTOML)
        )
        for path in [*_sources("tabserve", "ui", "training"), REPO / "service.py"]
        if path.name != "bentoml_private.py"
    }
    assert {k: v for k, v in offenders.items() if v} == {}
    private = _imported(REPO / "tabserve" / "serving" / "bentoml_private.py")
    assert {n.split(".")[0] for n in private if n.startswith(PRIVATE_BENTOML)} == {
        "bentoml",
        "_bentoml_sdk",
        "_bentoml_impl",
    }


def test_service_py_declares_and_carries_no_training_code() -> None:
    imported = _imported(REPO / "service.py")
    assert not any(n.startswith(("training", "load_tests")) for n in imported)
    tree = ast.parse((REPO / "service.py").read_text())
    # Declarations only: imports, the one set-up call, the class, the typed name and
    # the edge's installation; no logic at module level.
    kinds = {type(node).__name__ for node in tree.body}
    assert kinds <= {"Expr", "ImportFrom", "Import", "Assign", "ClassDef", "AnnAssign"}


@pytest.mark.parametrize("path", _sources(*RUNTIME), ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_is_over_400_lines(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(REPO)}: {lines} lines; split it by job"


def test_import_linter_contracts_hold() -> None:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert "0 broken" in done.stdout
