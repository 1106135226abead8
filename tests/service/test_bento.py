"""The bento: built from bentofile.yaml, its Dockerfile linted, and served from a fresh
virtualenv made from nothing but the bento's own requirements.

No Docker engine runs here, so this is the proof that what the image will contain
(the bento's source, models and pinned requirements) is enough to serve.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import xgboost as xgb

from load_tests.processes import free_port, stop_group
from tests.service.conftest import REPO, TEST_PASSWORD

pytestmark = pytest.mark.slow

BENTOML = str(Path(sys.executable).with_name("bentoml"))
HADOLINT = str(Path(sys.executable).with_name("hadolint"))
# Findings in BentoML's own Dockerfile template (not ours to change); anything else fails.
KNOWN_TEMPLATE_FINDINGS = {"DL3008", "DL3009", "DL3013", "DL3042", "DL3046", "DL3066", "SC3020"}
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
    assert (src / "service.py").is_file() and (src / "tabserve" / "predictor.py").is_file()
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


def test_generated_dockerfile_is_slim_non_root_and_lints(bento: dict[str, Any]) -> None:
    dockerfile = bento["dir"] / "env" / "docker" / "Dockerfile"
    text = dockerfile.read_text()
    assert "FROM python:3.11-slim" in text
    assert [line for line in text.splitlines() if line.startswith("USER ")][-1] == "USER bentoml"
    proc = subprocess.run(
        [HADOLINT, "--no-color", "-f", "json", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(proc.stdout)
    assert not [f for f in findings if f["level"] == "error"], findings
    assert {f["code"] for f in findings} <= KNOWN_TEMPLATE_FINDINGS, findings


def test_bento_serves_from_a_fresh_virtualenv(
    bento: dict[str, Any], models: dict[str, Any], users_file: Path, test_env: dict[str, str]
) -> None:
    work: Path = bento["work"]
    venv = work / "venv"
    base_python = (
        Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    )
    _run(_uv(), "venv", "--quiet", "--python", str(base_python), str(venv))
    _run(
        _uv(),
        "pip",
        "install",
        "--quiet",
        "--python",
        str(venv / "bin" / "python"),
        "-r",
        str(bento["dir"] / "env" / "python" / "requirements.txt"),
    )
    # Nothing from this repo is importable in the fresh environment: only the bento's src.
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import tabserve"],
        cwd=work,
        capture_output=True,
        text=True,
    )
    assert probe.returncode != 0

    port = free_port()
    env = {
        "PATH": f"{venv / 'bin'}{os.pathsep}/usr/bin:/bin",
        "HOME": str(work),
        "BENTOML_HOME": str(work / "empty-home"),  # the model must come from the bento itself
        "BENTOML_DO_NOT_TRACK": "True",
        "TABSERVE_ENV": "production",
        "TABSERVE_JWT_SECRET": test_env["TABSERVE_JWT_SECRET"],
        "TABSERVE_USERS_FILE": str(users_file),
    }
    log = work / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(venv / "bin" / "bentoml"),
                "serve",
                str(bento["dir"]),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=work,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"the bento did not start:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        token = httpx.post(
            f"{url}/auth/token", data={"username": "alice", "password": TEST_PASSWORD}
        ).json()["access_token"]
        model = models["binary"]
        rows = model.rows[:3]
        response = httpx.post(
            f"{url}/predict", json={"rows": rows}, headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 200, response.text
        assert response.headers["x-model-version"] == "v1"
        expected = model.booster.predict(
            xgb.DMatrix(model.schema.to_frame(rows), enable_categorical=True)
        )
        got = [answer["probabilities"]["1"] for answer in response.json()]
        np.testing.assert_allclose(got, expected.astype(np.float64), rtol=1e-6)
        assert httpx.post(f"{url}/predict", json={"rows": rows}).status_code == 401
    finally:
        stop_group(process, timeout=20)
