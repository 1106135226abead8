"""Stage `tune`: an Optuna study over XGBoost hyperparameters, every trial an MLflow run.

The study lives in Optuna storage (SQLite in the repo by default), named after
the data and the tuning params, so a killed run resumes where it stopped and a
change of params starts a fresh study. Trials are nested MLflow runs under one
parent run, which also holds the best params and the study's plots.

Several workers can share one study: point ``TABSERVE_OPTUNA_STORAGE`` (and
``MLFLOW_TRACKING_URI``) at PostgreSQL and run ``python -m training.tune
--worker`` on as many machines as you like; they stop once ``tune.n_trials``
trials have finished in total.
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import hashlib
import json
import logging
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import xgboost as xgb
from optuna.trial import TrialState

from tabserve.bundle import md5_file
from tabserve.schema import FeatureSchema
from training.modeling import dmatrix, eval_metric_name, objective_params
from training.params import Params, TuneParams, load_params

log = logging.getLogger("training.tune")

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
BEST_PARAMS_PATH = Path("tuning/best_params.json")
PARENT_RUN_ATTR = "mlflow_parent_run_id"


def study_name(params: Params, data_md5: dict[str, str]) -> str:
    """A study name that changes when the data or anything tuning depends on changes."""
    key = json.dumps(
        {
            "tune": params.tune.model_dump(),
            "seed": params.seed,
            "data": data_md5,
            "nthread": params.train.nthread,
        },
        sort_keys=True,
    )
    return f"{params.registry.model_name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def suggest(trial: optuna.Trial, space: TuneParams) -> dict[str, Any]:
    """Sample one point of the search space declared in params.yaml."""
    values: dict[str, Any] = {}
    for name, rng in space.space.items():
        if rng.type == "int":
            values[name] = trial.suggest_int(name, int(rng.low), int(rng.high), log=rng.log)
        else:
            values[name] = trial.suggest_float(name, rng.low, rng.high, log=rng.log)
    return values


def fit(
    booster_params: dict[str, Any],
    dtrain: xgb.DMatrix,
    dvalid: xgb.DMatrix,
    num_boost_round: int,
    early_stopping_rounds: int,
    callbacks: list[xgb.callback.TrainingCallback] | None = None,
) -> xgb.Booster:
    """Train with early stopping on the validation split."""
    return xgb.train(
        booster_params,
        dtrain,
        num_boost_round=num_boost_round,
        evals=[(dvalid, "valid")],
        early_stopping_rounds=early_stopping_rounds,
        callbacks=callbacks,
        verbose_eval=False,
    )


def make_objective(
    schema: FeatureSchema,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    params: Params,
    study: str,
    log_trial: Any = None,
) -> Any:
    """The Optuna objective: validation log loss of an early-stopped booster.

    ``log_trial(trial, values, result)`` is called for every finished or pruned
    trial (the CLI logs it as a nested MLflow run).
    """
    from optuna_integration import XGBoostPruningCallback

    dtrain, dvalid = dmatrix(schema, train), dmatrix(schema, valid)
    fixed = objective_params(schema, params.seed, params.train.nthread)
    metric = eval_metric_name(schema)

    def objective(trial: optuna.Trial) -> float:
        values = suggest(trial, params.tune)
        pruning = XGBoostPruningCallback(trial, f"valid-{metric}")
        started = time.perf_counter()
        try:
            booster = fit(
                fixed | values,
                dtrain,
                dvalid,
                params.tune.num_boost_round,
                params.tune.early_stopping_rounds,
                [pruning],
            )
        except optuna.TrialPruned:
            if log_trial:
                log_trial(
                    trial, values, {"state": "PRUNED", "seconds": time.perf_counter() - started}
                )
            raise
        score = float(booster.best_score)
        trial.set_user_attr("best_iteration", int(booster.best_iteration))
        if log_trial:
            log_trial(
                trial,
                values,
                {
                    "state": "COMPLETE",
                    f"valid_{metric}": score,
                    "best_iteration": int(booster.best_iteration),
                    "seconds": time.perf_counter() - started,
                },
            )
        return score

    return objective


def fail_interrupted(study: optuna.Study, storage_url: str, exclusive: bool) -> int:
    """Mark trials left RUNNING by a killed run as FAIL; return how many.

    The DVC stage on the embedded SQLite storage (``exclusive``) is the only
    worker, so every RUNNING trial is an orphan. Otherwise other workers may be
    running: only trials whose heartbeat went stale are failed (Optuna's rule).
    """
    if exclusive and storage_url.startswith("sqlite"):
        orphans = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        for trial in orphans:
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        return len(orphans)
    before = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    optuna.storages.fail_stale_trials(study)
    return before - len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def n_finished(study: optuna.Study) -> int:
    """Trials that completed or were pruned (what counts towards ``n_trials``)."""
    return len(study.get_trials(deepcopy=False, states=FINISHED))


ACTIVE = (*FINISHED, TrialState.RUNNING)


@contextmanager
def trial_slot_lock(
    study_name: str, storage: optuna.storages.RDBStorage, storage_url: str
) -> Iterator[None]:
    """Serialise "count the trials, then create one" across every worker of a study.

    Without it two workers that both see ``n_trials - 1`` trials would each start
    one, and the study would end with more trials than asked for. PostgreSQL: a
    transaction-scoped advisory lock keyed on the study; SQLite: a file lock
    beside the database (workers on one machine).
    """
    if storage_url.startswith("postgresql"):
        from sqlalchemy import text

        key = int(hashlib.sha256(study_name.encode()).hexdigest()[:15], 16)
        with storage.engine.connect() as conn, conn.begin():
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
            yield
    elif storage_url.startswith("sqlite:///"):
        lock_path = Path(storage_url.removeprefix("sqlite:///") + ".lock")
        with lock_path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    else:
        yield


SCHEMA_LOCK_KEY = 0x7AB5E12E  # one advisory lock for "create Optuna's tables", any study


def open_storage(storage_url: str) -> optuna.storages.RDBStorage:
    """Optuna storage with heartbeats, its tables created by one worker at a time.

    On a fresh PostgreSQL database every worker that starts at once would run
    ``CREATE TYPE``/``CREATE TABLE`` and all but one would fail on a duplicate
    type, so creation is serialised by a session-level advisory lock (the others
    wait, then find the tables). SQLite needs no lock: one file, one writer.
    """

    def create() -> optuna.storages.RDBStorage:
        return optuna.storages.RDBStorage(storage_url, heartbeat_interval=10, grace_period=60)

    if not storage_url.startswith("postgresql"):
        return create()
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(storage_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
            try:
                return create()
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": SCHEMA_LOCK_KEY})
                conn.commit()
    finally:
        engine.dispose()


def _next_trial(study: optuna.Study, lock: Any, n_trials: int) -> optuna.Trial | None:
    """A new trial, or None once finished plus running trials reach ``n_trials``."""
    from optuna.storages._heartbeat import is_heartbeat_enabled

    with lock():
        if is_heartbeat_enabled(study._storage):
            optuna.storages.fail_stale_trials(study)  # a dead worker's trial frees its slot
        if len(study.get_trials(deepcopy=False, states=ACTIVE)) >= n_trials:
            return None
        return study.ask()


def run_study(
    study: optuna.Study,
    objective: Any,
    n_trials: int,
    timeout_s: float,
    lock: Any,
    progress: bool = True,
) -> int:
    """Run trials until ``n_trials`` have finished in the study, counting earlier runs and
    other workers; return how many this worker ran.

    Each trial is created under :func:`trial_slot_lock`, so any number of workers
    end with exactly ``n_trials`` finished trials. A trial that raises is marked
    FAIL (it does not count) and the error stops this worker.
    """
    from optuna.storages._heartbeat import get_heartbeat_thread
    from tqdm import tqdm

    done = n_finished(study)
    if done >= n_trials:
        log.info("study %s already has %d finished trials: nothing to do", study.study_name, done)
        return 0
    log.info("study %s: %d trial(s) to go", study.study_name, n_trials - done)
    deadline = time.monotonic() + timeout_s
    ran = 0
    bar = tqdm(total=n_trials, initial=done, desc="tuning", unit="trial", disable=not progress)
    with bar:
        while time.monotonic() < deadline:
            trial = _next_trial(study, lock, n_trials)
            if trial is None:
                break
            with get_heartbeat_thread(trial._trial_id, study._storage):
                try:
                    value = objective(trial)
                except optuna.TrialPruned:
                    study.tell(trial, state=TrialState.PRUNED)
                    value = None
                except BaseException:
                    study.tell(trial, state=TrialState.FAIL)
                    raise
                else:
                    study.tell(trial, value)
            ran += 1
            finished = n_finished(study)
            best = _best_value(study)
            bar.update(finished - bar.n)
            bar.set_postfix(best=f"{best:.5f}" if best is not None else "-")
            if not progress:
                log.info(
                    "trial %d %s (%d/%d finished), value %s, best %s",
                    trial.number,
                    "COMPLETE" if value is not None else "PRUNED",
                    finished,
                    n_trials,
                    f"{value:.5f}" if value is not None else "-",
                    f"{best:.5f}" if best is not None else "-",
                )
        else:
            log.warning("tune.timeout_s (%ss) reached: this worker stops", timeout_s)
    return ran


def _best_value(study: optuna.Study) -> float | None:
    try:
        return float(study.best_value)
    except ValueError:  # no complete trial yet
        return None


def wait_for_running(study: optuna.Study, timeout_s: float) -> None:
    """Wait (bounded) until other workers' running trials have finished."""
    deadline = time.monotonic() + timeout_s
    while study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if time.monotonic() > deadline:
            log.warning("other workers still have trials running; using the finished ones")
            return
        time.sleep(1.0)


def best_params_record(study: optuna.Study, n_trials: int) -> dict[str, Any]:
    """What the train stage needs, deterministic for a fixed seed (no timestamps)."""
    best = study.best_trial
    return {
        "study": study.study_name,
        "best_trial": best.number,
        "best_value": round(float(best.value), 8),
        "best_iteration": best.user_attrs.get("best_iteration"),
        "params": best.params,
        "n_trials": n_trials,
        "n_finished": n_finished(study),
    }


def _save_plots(study: optuna.Study, folder: Path) -> list[Path]:
    """Optimization history and param importances as standalone HTML (plotly)."""
    from optuna import visualization as vis

    saved = []
    plots = {
        "optimization_history.html": vis.plot_optimization_history,
        "param_importances.html": vis.plot_param_importances,
    }
    for name, plot in plots.items():
        try:
            figure = plot(study)
        except (ValueError, RuntimeError) as exc:  # e.g. too few complete trials for importances
            log.warning("could not draw %s: %s", name, exc)
            continue
        path = folder / name
        figure.write_html(path, include_plotlyjs="cdn")
        saved.append(path)
    return saved


def _start_parent_run(name: str, storage_url: str, params: Params) -> str:
    """The MLflow run that holds the study's trials, best params and plots."""
    import mlflow

    with mlflow.start_run(run_name=f"tune-{name}") as parent:
        mlflow.set_tags(
            {"stage": "tune", "optuna.study": name, "optuna.storage": storage_url.split("://")[0]}
        )
        mlflow.log_params(
            {
                "n_trials": params.tune.n_trials,
                "timeout_s": params.tune.timeout_s,
                "seed": params.seed,
                "search_space": json.dumps(params.tune.model_dump()["space"]),
            }
        )
        return str(parent.info.run_id)


def main(argv: list[str] | None = None) -> int:
    """CLI: tune on ``data/prepared``, write ``tuning/best_params.json``."""
    import mlflow

    from training.environment import configure_logging, configure_mlflow, optuna_storage

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    parser.add_argument(
        "--prepared", type=Path, default=Path("data/prepared"), help="prepared data folder"
    )
    parser.add_argument(
        "--out", type=Path, default=BEST_PARAMS_PATH, help="best params file (default: %(default)s)"
    )
    parser.add_argument(
        "--worker",
        action="store_true",
        help="only run trials on the shared study (no best-params file): for extra workers",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: only when stderr is a terminal)",
    )
    args = parser.parse_args(argv)
    configure_logging()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    params = load_params(args.params)

    schema = FeatureSchema.load(args.prepared / "schema.json")
    train = pd.read_parquet(args.prepared / "train.parquet")
    valid = pd.read_parquet(args.prepared / "valid.parquet")
    data_md5 = {s: md5_file(args.prepared / f"{s}.parquet") for s in ("train", "valid")}
    name = study_name(params, data_md5)

    storage_url = optuna_storage()
    if storage_url.startswith("sqlite:///"):
        Path(storage_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    storage = open_storage(storage_url)
    # Seeded by progress: a resumed study does not replay the trials it already has.
    probe = optuna.create_study(
        storage=storage, study_name=name, direction="minimize", load_if_exists=True
    )
    orphans = fail_interrupted(probe, storage_url, exclusive=not args.worker)
    if orphans:
        log.warning("marked %d trial(s) interrupted by an earlier run as FAIL", orphans)
    done = n_finished(probe)
    study = optuna.load_study(
        study_name=name,
        storage=storage,
        # Extra workers must not replay each other's proposals: seed them apart.
        sampler=optuna.samplers.TPESampler(
            seed=params.seed + done + (os.getpid() if args.worker else 0)
        ),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=10),
    )

    lock = functools.partial(trial_slot_lock, name, storage, storage_url)
    with lock():  # one MLflow set-up and one parent run, however many workers start
        configure_mlflow(params.registry.experiment)
        parent_id = study.user_attrs.get(PARENT_RUN_ATTR)
        if parent_id is None:
            parent_id = _start_parent_run(name, storage_url, params)
            study.set_user_attr(PARENT_RUN_ATTR, parent_id)
        elif done:
            log.info("resuming study %s: %d finished trial(s) kept", name, done)
    worker = f"{socket.gethostname()}:{os.getpid()}"

    client = mlflow.MlflowClient()
    experiment_id = client.get_run(parent_id).info.experiment_id

    def log_trial(trial: optuna.Trial, values: dict[str, Any], result: dict[str, Any]) -> None:
        run = client.create_run(
            experiment_id,
            run_name=f"trial-{trial.number}",
            tags={
                "mlflow.parentRunId": parent_id,
                "stage": "tune",
                "optuna.study": name,
                "optuna.trial_number": str(trial.number),
                "optuna.state": result["state"],
                "optuna.worker": worker,
            },
        )
        client.log_batch(
            run.info.run_id,
            params=[mlflow.entities.Param(k, str(v)) for k, v in values.items()],
            metrics=[
                mlflow.entities.Metric(k, float(v), int(time.time() * 1000), 0)
                for k, v in result.items()
                if k != "state"
            ],
        )
        client.set_terminated(
            run.info.run_id, status="FINISHED" if result["state"] == "COMPLETE" else "KILLED"
        )
        trial.set_user_attr("mlflow_run_id", run.info.run_id)

    objective = make_objective(schema, train, valid, params, name, log_trial)
    run_study(
        study,
        objective,
        params.tune.n_trials,
        params.tune.timeout_s,
        lock,
        progress=sys.stderr.isatty() if args.progress is None else args.progress,
    )
    if args.worker:
        return 0
    wait_for_running(study, params.tune.timeout_s)

    finished = n_finished(study)
    if finished < params.tune.n_trials:
        log.warning(
            "timeout (%ss) reached after %d of %d trials: results depend on machine speed",
            params.tune.timeout_s,
            finished,
            params.tune.n_trials,
        )
    record = best_params_record(study, params.tune.n_trials)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")

    with mlflow.start_run(run_id=parent_id):
        mlflow.log_params({f"best.{k}": v for k, v in record["params"].items()})
        mlflow.log_metrics({"best_valid_loss": record["best_value"], "n_finished": finished})
        with tempfile.TemporaryDirectory() as tmp:
            for path in _save_plots(study, Path(tmp)):
                mlflow.log_artifact(str(path), artifact_path="plots")
        mlflow.log_artifact(str(args.out))
    log.info(
        "best trial #%d: valid loss %.5f, params %s",
        record["best_trial"],
        record["best_value"],
        record["params"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
