"""Real DVC pipelines in temporary copies of the repo (its own git, MLflow, Optuna, BentoML)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from palmerpenguins import load_penguins

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def repo_files() -> list[str]:
    """What a fresh clone holds: tracked files plus new ones git does not ignore."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [f for f in out.split("\0") if f and f != "dvc.lock" and not f.startswith("tests/")]


def pipeline_env(repo: Path) -> dict[str, str]:
    """Environment for a stage run: the venv first on PATH, every store inside ``repo``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "MLFLOW_TRACKING_URI",
            "TABSERVE_OPTUNA_STORAGE",
            "BENTOML_HOME",
            "PROMETHEUS_MULTIPROC_DIR",
        )
    }
    env |= {
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "BENTOML_HOME": str(repo / ".bentoml"),
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "tabserve-tests",
        "GIT_AUTHOR_EMAIL": "tests@example.invalid",
        "GIT_COMMITTER_NAME": "tabserve-tests",
        "GIT_COMMITTER_EMAIL": "tests@example.invalid",
    }
    return env


def run(
    repo: Path, *cmd: str, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run a command in ``repo``; on failure show its output."""
    proc = subprocess.run(
        cmd, cwd=repo, env=pipeline_env(repo), capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def set_params(repo: Path, updates: dict[str, Any]) -> None:
    """Set dotted keys in ``repo/params.yaml`` (e.g. ``{"tune.n_trials": 5}``)."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for dotted, value in updates.items():
        *parents, leaf = dotted.split(".")
        node = params
        for key in parents:
            node = node[key]
        node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def commit(repo: Path, message: str) -> str:
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-q", "--allow-empty", "-m", message)
    return run(repo, "git", "rev-parse", "HEAD").stdout.strip()


@pytest.fixture(scope="session")
def make_repo(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Copy the repo as a fresh clone would have it, with ``params`` overrides, committed."""

    def factory(name: str, params: dict[str, Any] | None = None) -> Path:
        repo = tmp_path_factory.mktemp(name)
        for rel in repo_files():
            target = repo / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, target)
        # Small budgets: the tests check behaviour, `make bench`/README give the timings.
        set_params(
            repo,
            {"tune.n_trials": 6, "tune.num_boost_round": 60, "train.num_boost_round": 60}
            | (params or {}),
        )
        run(repo, "git", "init", "-q", "-b", "main")
        commit(repo, "fixture")
        return repo

    return factory


def mlflow_client(repo: Path) -> Any:
    import mlflow

    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")


def dvc_lock_md5(repo: Path, stage: str) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {out["path"]: out["md5"] for out in lock["stages"][stage]["outs"]}


def stages_run(output: str) -> list[str]:
    """Stage names DVC reports as run in ``dvc repro`` output."""
    return [
        line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")
    ]


STATIONS = 90  # levels of `station`: more than prepare.max_categories (50) keeps


def with_business_columns(frame: pd.DataFrame, seed: int = 7) -> pd.DataFrame:
    """``frame`` with a date, a timestamp, an order reference (unique text), free-text
    notes and a station code of many levels, none of them telling the target."""
    rng = np.random.default_rng(seed)
    n = len(frame)
    days = pd.Timestamp("2007-11-01") + pd.to_timedelta(rng.integers(0, 800, n), unit="D")
    seconds = pd.to_timedelta(rng.integers(0, 86_400 * 600, n), unit="s")
    words = np.array(["calm sea", "strong wind", "colony busy", "nest found", "light rain"])
    return frame.assign(
        observed=[d.date().isoformat() for d in days],
        logged_at=[(pd.Timestamp("2008-01-01") + s).isoformat() + "Z" for s in seconds],
        order_ref=[f"REF-{i:05d}-{rng.integers(10**6):06d}" for i in range(n)],
        notes=[" and ".join(rng.choice(words, 4)) for _ in range(n)],
        station=[f"ST{v:03d}" for v in rng.integers(0, STATIONS, n)],
    )


@pytest.fixture(scope="package")
def penguins(make_repo) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The whole pipeline on palmerpenguins written as a CSV with its row index (once for
    the package: its tests read it, none changes it)."""
    # Two trials: this is about the data's path through the stages, not about tuning.
    repo = make_repo(
        "penguins",
        {"data.source": "data/sources/penguins.csv", "data.target": "species", "tune.n_trials": 2},
    )
    # Written with its index: the unnamed row-number column must be dropped, not learnt;
    # with the columns business tables have (issue 37), made from seeded random values.
    with_business_columns(load_penguins()).to_csv(repo / "data/sources/penguins.csv", index=True)
    commit(repo, "penguins")
    return repo, run(repo, "dvc", "repro")


def served_answers(repo: Path, frame: pd.DataFrame) -> pd.DataFrame:
    """What `POST /predict` answers for ``frame``: the service's predictor on the bundle,
    as table columns (``label``, ``proba_<class>``)."""
    from tabserve.core.predictor import Predictor, answer_columns

    predictor = Predictor.from_bundle(repo / ".bentoml/models/tabserve/v1", version="v1")
    rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
    return pd.DataFrame(answer_columns(predictor.predict(rows)), index=frame.index)
