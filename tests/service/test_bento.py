"""The bento: built from bentofile.yaml with runtime code, the model and pinned runtime
requirements only; its generated (multi-stage) Dockerfile linted.

The image built from it is run for real by ``tests/image/``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.service.conftest import REPO

pytestmark = pytest.mark.slow

BENTOML = str(Path(sys.executable).with_name("bentoml"))
HADOLINT = str(Path(sys.executable).with_name("hadolint"))
# The one accepted finding: build-essential is not pinned to a Debian version (it exists
# only in the build stage, and Debian's security updates would break a pin).
ACCEPTED_FINDINGS = {"DL3008"}
TRAINING_ONLY = ("optuna", "dvc", "mlflow", "locust", "scikit-learn", "pytest", "ruff")


def _uv() -> str:
    found = shutil.which("uv") or str(Path.home() / ".local/bin/uv")
    assert Path(found).exists(), "uv is installed by `make setup`"
    return found


def _run(*cmd: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def bento(test_env: dict[str, str], models: dict[str, Any], tmp_path_factory) -> dict[str, Any]:
    """Build the bento exactly as `make bento` does, then export it (models included)."""
    env = {**os.environ, **test_env, "TABSERVE_MODEL_TAG": models["binary"].tag}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    # `bentoml build` runs uv from PATH (and tries to pip-install it otherwise).
    env["PATH"] = f"{Path(_uv()).parent}{os.pathsep}{env.get('PATH', '')}"
    (REPO / "build").mkdir(exist_ok=True)
    _run(
        _uv(),
        "export",
        "--frozen",
        "--no-default-groups",
        "--no-emit-project",
        "--no-hashes",
        "--format",
        "requirements-txt",
        "--output-file",
        "build/requirements-serve.txt",
        "--quiet",
    )
    out = _run(BENTOML, "build", "--output", "tag", env=env)
    tag = next(line.split("__tag__:")[1] for line in out.splitlines() if "__tag__:" in line)
    name, version = tag.split(":")
    built = Path(test_env["BENTOML_HOME"]) / "bentos" / name / version
    work = tmp_path_factory.mktemp("bento")
    _run(BENTOML, "export", tag, str(work / "tabserve.bento"), env=env)
    extracted = work / "bento"
    with tarfile.open(work / "tabserve.bento") as archive:
        archive.extractall(extracted, filter="data")
    return {"tag": tag, "built": built, "dir": extracted, "work": work}


def test_bento_holds_runtime_code_model_and_pinned_runtime_requirements(
    bento: dict[str, Any],
) -> None:
    src = bento["dir"] / "src"
    assert (src / "service.py").is_file() and (src / "tabserve" / "core" / "predictor.py").is_file()
    assert (src / "ui" / "templates" / "login.html").is_file()
    for absent in ("training", "tests", "data", ".tabserve", "dvc.yaml", "params.yaml"):
        assert not (src / absent).exists(), absent
    assert (bento["dir"] / "models" / "tabserve" / "v1" / "model.ubj").is_file()
    requirements = (bento["dir"] / "env" / "python" / "requirements.txt").read_text()
    pins = [
        line.split(";")[0].strip()
        for line in requirements.splitlines()
        if line and not line.startswith(("#", " "))
    ]
    assert pins and all("==" in pin for pin in pins), "every requirement is pinned from uv.lock"
    names = {pin.split("==")[0].lower() for pin in pins}
    assert {"bentoml", "xgboost-cpu", "pandas", "pyjwt", "argon2-cffi"} <= names
    assert "xgboost" not in names, "the CPU-only wheel, not the one that pulls in CUDA"
    assert not [n for n in names if n.startswith(TRAINING_ONLY) or n.endswith("-cu12")]
    bento_yaml = (bento["dir"] / "bento.yaml").read_text()
    assert "TABSERVE_ENV" in bento_yaml and "tabserve:v1" in bento_yaml


def test_generated_dockerfile_is_multi_stage_non_root_and_lints(bento: dict[str, Any]) -> None:
    dockerfile = bento["dir"] / "env" / "docker" / "Dockerfile"
    text = dockerfile.read_text()
    stages = [line.split() for line in text.splitlines() if line.startswith("FROM ")]
    assert stages == [
        ["FROM", "python:3.11-slim-bookworm", "AS", name] for name in ("build", "base-container")
    ]
    build, runtime = text.split("\nFROM ")[1:]
    assert "build-essential" in build and "uv" in build
    # The runtime stage installs nothing: it copies the virtualenv and the bento.
    assert not [line for line in runtime.splitlines() if line.startswith("RUN ") and "apt" in line]
    assert "COPY --from=build /app/.venv /app/.venv" in runtime
    assert [line for line in text.splitlines() if line.startswith("USER ")] == ["USER 1034:1034"]
    proc = subprocess.run(
        [HADOLINT, "--no-color", "-f", "json", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(proc.stdout)
    assert not [f for f in findings if f["level"] == "error"], findings
    assert {f["code"] for f in findings} <= ACCEPTED_FINDINGS, findings
