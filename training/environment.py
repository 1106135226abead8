"""Where the pipeline's state lives: embedded defaults inside the repo, each one
setting away from a real engine.

| state            | default (inside the repo, ignored by git) | override                     |
|------------------|-------------------------------------------|------------------------------|
| MLflow tracking  | ``sqlite:///mlruns/mlflow.db``            | ``MLFLOW_TRACKING_URI``      |
| MLflow artifacts | ``mlruns/<experiment id>/``               | the tracking server decides  |
| Optuna storage   | ``sqlite:///tuning/optuna.db``            | ``TABSERVE_OPTUNA_STORAGE``  |
| BentoML store    | ``.bentoml/``                             | ``BENTOML_HOME``             |

Nothing here runs at import time: stages call these from ``main()``.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path


def repo_root() -> Path:
    """The repo root: DVC runs every stage with the repo root as working directory."""
    return Path.cwd()


def tracking_uri() -> str:
    """MLflow tracking URI: ``MLFLOW_TRACKING_URI`` or a SQLite file in the repo."""
    return os.environ.get("MLFLOW_TRACKING_URI") or (
        f"sqlite:///{repo_root() / 'mlruns' / 'mlflow.db'}"
    )


def optuna_storage_url() -> str:
    """Optuna storage URL: ``TABSERVE_OPTUNA_STORAGE`` or a SQLite file in the repo."""
    return os.environ.get("TABSERVE_OPTUNA_STORAGE") or (
        f"sqlite:///{repo_root() / 'tuning' / 'optuna.db'}"
    )


def use_bentoml_home() -> Path:
    """Point BentoML at ``BENTOML_HOME`` or the repo's ``.bentoml``; call before importing it."""
    home = Path(os.environ.setdefault("BENTOML_HOME", str(repo_root() / ".bentoml")))
    return home


def configure_mlflow(experiment: str) -> str:
    """Set the tracking URI and the experiment (created if missing); return its id.

    With the embedded SQLite store, MLflow puts artifacts under ``mlruns/<experiment id>/``.
    """
    import mlflow

    (repo_root() / "mlruns").mkdir(exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(tracking_uri())
    existing = mlflow.get_experiment_by_name(experiment)
    if existing is not None:
        mlflow.set_experiment(experiment_id=existing.experiment_id)
        return str(existing.experiment_id)
    experiment_id = mlflow.create_experiment(experiment)
    mlflow.set_experiment(experiment_id=experiment_id)
    return str(experiment_id)


def git_commit() -> str:
    """The current git commit (``-dirty`` if the tree has changes); ``unknown`` outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def configure_logging() -> None:
    """Plain, timestamped logs on stderr; quiet the chattiest libraries."""
    logging.basicConfig(
        level=os.environ.get("TABSERVE_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("alembic", "urllib3", "git", "matplotlib", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # MLflow pins pip in a logged model's conda.yaml by asking the installed pip; a uv
    # environment has none, so every log_model warns and lists pip unpinned. Harmless:
    # the model's pip requirements are pinned and nothing here builds a conda env.
    logging.getLogger("mlflow.utils.environment").addFilter(
        lambda record: not record.getMessage().startswith("Failed to resolve installed pip")
    )
