"""The tune stage's MLflow runs: one per finished trial, nested under the study's run.

Part of stage ``tune`` (``training/tune.py``): the trials are written from inside the
objective (:func:`logged`), the study's parent run holds its best params and plots.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import TrialState

from training.params import Params

log = logging.getLogger("training.tune")

Objective = Callable[[optuna.Trial], float]


def logged(objective: Objective, parent_run_id: str, study: str, metric: str) -> Objective:
    """``objective``, logging each trial it completes or prunes as an MLflow run.

    The runs are nested under the study's parent run and written from inside the
    objective, before Optuna marks the trial finished, so a process killed at any
    moment leaves no finished trial without its run. (optuna-integration's
    ``MLflowCallback`` logs after the trial has finished, cannot tag the worker,
    needs the parent run active in every worker process, and is deprecated.)
    """
    import mlflow
    from mlflow.entities import Metric, Param

    client = mlflow.MlflowClient()
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    worker = f"{socket.gethostname()}:{os.getpid()}"

    def log(trial: optuna.Trial, state: str, metrics: dict[str, float]) -> None:
        tags = {
            "mlflow.parentRunId": parent_run_id,
            "stage": "tune",
            "optuna.study": study,
            "optuna.trial_number": str(trial.number),
            "optuna.state": state,
            "optuna.worker": worker,
        }
        run = client.create_run(experiment_id, run_name=f"trial-{trial.number}", tags=tags)
        now = int(time.time() * 1000)
        client.log_batch(
            run.info.run_id,
            params=[Param(k, str(v)) for k, v in trial.params.items()],
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
        )
        client.set_terminated(
            run.info.run_id, status="FINISHED" if state == "COMPLETE" else "KILLED"
        )
        trial.set_user_attr("mlflow_run_id", run.info.run_id)

    def run(trial: optuna.Trial) -> float:
        started = time.perf_counter()
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            log(trial, "PRUNED", {"seconds": time.perf_counter() - started})
            raise
        metrics = {f"valid_{metric}": value, "best_iteration": trial.user_attrs["best_iteration"]}
        log(trial, "COMPLETE", metrics | {"seconds": time.perf_counter() - started})
        return value

    return run


def start_parent_run(name: str, storage_url: str, params: Params) -> str:
    """The MLflow run that holds the study's trials, best params and plots."""
    import mlflow

    with mlflow.start_run(run_name=f"tune-{name}") as parent:
        mlflow.set_tags(
            {"stage": "tune", "optuna.study": name, "optuna.storage": storage_url.split("://")[0]}
        )
        mlflow.log_params(
            {
                "n_trials": params.tune.n_trials,
                "seed": params.seed,
                "search_space": json.dumps(params.tune.model_dump()["space"]),
            }
        )
        return str(parent.info.run_id)


def record_in_mlflow(parent_run_id: str, record_path: Path, study: optuna.Study) -> None:
    """The best params, why the study stopped, its counts and plots, on the parent run.

    Tags, not params: a resumed study (say, after a timeout) may find a better trial.
    """
    import mlflow
    from optuna import visualization as vis

    record = json.loads(record_path.read_text())
    with mlflow.start_run(run_id=parent_run_id), tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tags({f"best.{k}": str(v) for k, v in record["params"].items()})
        mlflow.set_tag("tune.timed_out", str(record["timed_out"]).lower())
        failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        mlflow.log_metrics(
            {
                "best_valid_loss": record["best_value"],
                "n_finished": record["n_finished"],
                "n_failed": len(failed),
            }
        )
        for plot in (vis.plot_optimization_history, vis.plot_param_importances):
            try:
                figure = plot(study)
            except (ValueError, RuntimeError) as exc:  # e.g. too few trials for importances
                log.warning("could not draw %s: %s", plot.__name__, exc)
                continue
            path = Path(tmp) / f"{plot.__name__.removeprefix('plot_')}.html"
            figure.write_html(path, include_plotlyjs="cdn")
            mlflow.log_artifact(str(path), artifact_path="plots")
        mlflow.log_artifact(str(record_path))
