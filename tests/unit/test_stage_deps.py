"""Every DVC stage declares the project code it runs, derived from the code itself.

A stage is ``python -m training.<module>``; the modules it imports from the project (at
any depth, inside functions too, transitively) are what decide its outputs. Each must be
a ``deps`` entry of the stage in ``dvc.yaml`` (the file, or a folder holding it), and be
matched by the path triggers of ``.github/workflows/pipeline.yml``, so that editing any
of them re-runs exactly the stages that use it, locally and in CI.
"""

from __future__ import annotations

import ast
import fnmatch
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROJECT_PACKAGES = ("tabserve", "training")
DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())
WORKFLOW = yaml.safe_load((REPO / ".github" / "workflows" / "pipeline.yml").read_text())


def module_file(name: str) -> Path | None:
    """The file of project module ``name`` (a package's ``__init__.py``), or None."""
    if name.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = REPO.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _holds_code(path: Path) -> bool:
    """Whether a file does anything (a package ``__init__`` with a docstring only does not)."""
    body = ast.parse(path.read_text()).body
    return any(not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)) for n in body)


def stage_code(module: str) -> set[Path]:
    """The project files ``python -m <module>`` imports, transitively, itself included."""
    start = module_file(module)
    assert start is not None, module
    seen: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(path):
            parts = name.split(".")
            # `from a.b import c` may name a module c, or a name in a.b; and importing
            # a.b.c runs a/__init__ and a/b/__init__ first.
            for depth in range(1, len(parts) + 1):
                found = module_file(".".join(parts[:depth]))
                if found is not None and found not in seen:
                    todo.append(found)
    return {p for p in seen if p.name != "__init__.py" or _holds_code(p)}


def _relative(path: Path) -> str:
    return str(path.relative_to(REPO))


def _covered(path: str, entries: list[str]) -> bool:
    return any(path == entry or path.startswith(entry.rstrip("/") + "/") for entry in entries)


STAGES = {
    name: stage
    for name, stage in DVC["stages"].items()
    if str(stage["cmd"]).startswith("python -m ")
}


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_imported_project_module_is_a_dep_of_its_stage(name: str) -> None:
    stage = STAGES[name]
    module = str(stage["cmd"]).split()[2]
    deps = [d if isinstance(d, str) else next(iter(d)) for d in stage["deps"]]
    missing = sorted(_relative(p) for p in stage_code(module) if not _covered(_relative(p), deps))
    assert missing == [], f"stage {name}: add to its deps in dvc.yaml: {missing}"


def _triggers() -> dict[str, list[str]]:
    on = WORKFLOW.get("on", WORKFLOW.get(True))
    return {event: on[event]["paths"] for event in ("pull_request", "push")}


@pytest.mark.parametrize("event", ["pull_request", "push"])
def test_the_pipeline_workflow_runs_when_any_stage_code_changes(event: str) -> None:
    patterns = _triggers()[event]
    code = {
        _relative(p) for stage in STAGES.values() for p in stage_code(str(stage["cmd"]).split()[2])
    }
    unmatched = sorted(c for c in code if not any(fnmatch.fnmatch(c, pat) for pat in patterns))
    assert unmatched == [], f"{event} paths of pipeline.yml miss: {unmatched}"


def test_the_derivation_follows_imports_inside_functions() -> None:
    """train imports the MLflow model inside a function: it is found all the same."""
    assert REPO / "tabserve" / "mlflow_model" / "model.py" in stage_code("training.train")
    assert REPO / "training" / "params.py" in stage_code("training.ingest")


def test_train_depends_on_all_the_code_its_model_carries() -> None:
    """The registered model carries a copy of whole layers (``carried_code``): a change
    anywhere in them changes the model's artifact, so ``train`` depends on the folders."""
    from tabserve.mlflow_model.model import CARRIED_LAYERS

    deps = [d if isinstance(d, str) else next(iter(d)) for d in STAGES["train"]["deps"]]
    for layer in CARRIED_LAYERS:
        assert f"tabserve/{layer}" in deps
    assert "tabserve/__init__.py" in deps
