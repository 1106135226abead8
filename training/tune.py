"""Stage `tune`: an Optuna study over XGBoost hyperparameters, every trial an MLflow run.

Search space (``tune.space``) → objective (validation log loss of an early-stopped,
median-pruned booster) → ``study.optimize`` → record (``tuning/best_params.json`` and
the study's parent MLflow run, with the trials nested under it).

The study lives in Optuna storage (SQLite in the repo by default), named after the
data and the params that decide its trials, so a killed run resumes where it stopped
and a change of params starts a fresh study. The budget is ``tune.n_trials`` finished
(complete or pruned) trials, counting earlier runs: with one worker the study ends
with exactly that many, and a resumed run recomputes none of them.

Several workers can share one study: point ``TABSERVE_OPTUNA_STORAGE`` (and
``MLFLOW_TRACKING_URI``) at PostgreSQL and run ``python -m training.tune --worker``
on as many machines as you like. Each stops once the study holds ``tune.n_trials``
finished trials; trials other workers had started by then still finish, so k
workers end with between ``n_trials`` and ``n_trials + k - 1``. A worker that dies
stops sending heartbeats: its trial is failed and retried with the same params.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.exceptions import ExperimentalWarning
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from tabserve.core.bundle import md5_file
from tabserve.core.schema import FeatureSchema
from training.modeling import dmatrix, eval_metric_name, fit, objective_params
from training.params import Params, TuneParams, load_params
from training.tune_runs import Objective, logged, record_in_mlflow, start_parent_run

log = logging.getLogger("training.tune")


FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
BEST_PARAMS_PATH = Path("tuning/best_params.json")
PARENT_RUN_ATTR = "mlflow_parent_run_id"
# When a run stops and how a dead worker is noticed, not what the trials are: changing
# these resumes the same study.
NOT_IN_STUDY_NAME = {"timeout_s", "heartbeat_interval_s", "grace_period_s"}
# A trial that kills its worker every time (out of memory, say) is given up after this.
MAX_RETRIES = 2
SETUP_LOCK_KEY = 0x7AB5E12E  # PostgreSQL advisory lock: "set up a shared study", any study


def study_name(params: Params, data_md5: dict[str, str]) -> str:
    """A study name that changes when the data or anything deciding the trials changes."""
    key = json.dumps(
        {
            "tune": params.tune.model_dump(exclude=NOT_IN_STUDY_NAME),
            "seed": params.seed,
            "data": data_md5,
            "nthread": params.train.nthread,
            "regression_objective": params.train.regression_objective,
        },
        sort_keys=True,
    )
    return f"{params.registry.model_name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


# ---- search space ------------------------------------------------------------------


def suggest(trial: optuna.Trial, space: TuneParams) -> dict[str, Any]:
    """Sample one point of the search space declared in params.yaml."""
    values: dict[str, Any] = {}
    for name, rng in space.space.items():
        if rng.type == "int":
            values[name] = trial.suggest_int(name, int(rng.low), int(rng.high), log=rng.log)
        else:
            values[name] = trial.suggest_float(name, rng.low, rng.high, log=rng.log)
    return values


# ---- objective ---------------------------------------------------------------------


def make_objective(
    schema: FeatureSchema, train: pd.DataFrame, valid: pd.DataFrame, params: Params
) -> Objective:
    """The Optuna objective: validation log loss of an early-stopped booster.

    XGBoost reports the validation loss every round to the trial, so the study's
    pruner can stop a trial that trails the others. The best round is kept as the
    trial's ``best_iteration`` user attribute.
    """
    from optuna_integration import XGBoostPruningCallback

    dtrain, dvalid = dmatrix(schema, train), dmatrix(schema, valid)
    fixed = objective_params(schema, params.seed, params.train)
    observed = f"valid-{eval_metric_name(schema, params.train)}"

    def objective(trial: optuna.Trial) -> float:
        booster = fit(
            fixed | suggest(trial, params.tune),
            dtrain,
            dvalid,
            params.tune.num_boost_round,
            params.tune.early_stopping_rounds,
            [XGBoostPruningCallback(trial, observed)],
        )
        trial.set_user_attr("best_iteration", int(booster.best_iteration))
        return float(booster.best_score)

    return objective


# ---- optimize ----------------------------------------------------------------------


@contextmanager
def setup_lock(storage_url: str) -> Iterator[None]:
    """One worker at a time through set-up: Optuna's tables, the study, the parent run.

    On a fresh PostgreSQL database, workers starting at once would all run Optuna's
    ``CREATE TYPE``/``CREATE TABLE`` and all but one fail on a duplicate; two could
    also each start a parent MLflow run. PostgreSQL: a session-level advisory lock;
    SQLite: a file lock beside the database (its workers share one machine).
    """
    if storage_url.startswith("sqlite:///"):
        with Path(storage_url.removeprefix("sqlite:///") + ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
            yield
    elif storage_url.startswith("postgresql"):
        from sqlalchemy import create_engine, text
        from sqlalchemy.pool import NullPool

        engine = create_engine(storage_url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": SETUP_LOCK_KEY})
                try:
                    yield
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": SETUP_LOCK_KEY})
                    conn.commit()
        finally:
            engine.dispose()
    else:
        yield


def open_study(storage_url: str, name: str, tune: TuneParams, seed: int | None) -> optuna.Study:
    """The study ``name`` (created if new), with heartbeats, a seeded sampler and a pruner.

    A running trial whose heartbeat is older than ``tune.grace_period_s`` (its worker
    died) is failed when any worker next starts a trial, and queued again with the
    same params. The sampler's seed moves on with the trials the study already holds,
    so a resumed study does not replay the proposals of its first trials; ``seed=None``
    (extra workers) seeds at random, so workers do not replay each other's.
    """
    # Optuna still marks its heartbeat, the documented way to detect dead workers,
    # as experimental (since 2.8): there is nothing to act on in that warning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        storage = optuna.storages.RDBStorage(
            storage_url,
            heartbeat_interval=tune.heartbeat_interval_s,
            grace_period=tune.grace_period_s,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=MAX_RETRIES
            ),
        )
    known = optuna.create_study(
        storage=storage, study_name=name, direction="minimize", load_if_exists=True
    )
    offset = len(known.get_trials(deepcopy=False))
    return optuna.load_study(
        study_name=name,
        storage=storage,
        sampler=optuna.samplers.TPESampler(seed=None if seed is None else seed + offset),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=10),
    )


def n_finished(study: optuna.Study) -> int:
    """Trials that completed or were pruned: what counts towards ``n_trials``."""
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def optimize(study: optuna.Study, objective: Objective, tune: TuneParams, progress: bool) -> int:
    """Run trials until the study holds ``tune.n_trials`` finished ones; return how many it holds.

    Trials of earlier runs and of other workers count. Fewer come back only when
    ``tune.timeout_s`` ran out. A trial that raises is failed and stops this worker.
    """
    remaining = tune.n_trials - n_finished(study)
    if remaining > 0:
        study.optimize(
            objective,
            n_trials=remaining,  # this worker's share at most; the callback counts the others'
            timeout=tune.timeout_s,
            callbacks=[MaxTrialsCallback(tune.n_trials, states=FINISHED)],
            show_progress_bar=progress,
        )
    return n_finished(study)


# ---- record ------------------------------------------------------------------------


def best_params_record(study: optuna.Study, tune: TuneParams) -> dict[str, Any]:
    """What the train stage needs, deterministic for a fixed seed (no timestamps)."""
    best = study.best_trial
    finished = n_finished(study)
    return {
        "study": study.study_name,
        "best_trial": best.number,
        "best_value": round(float(best.values[0]), 8),
        "best_iteration": best.user_attrs.get("best_iteration"),
        "params": best.params,
        "n_trials": tune.n_trials,
        "n_finished": finished,
        "timed_out": finished < tune.n_trials,
    }


def main(argv: list[str] | None = None) -> int:
    """CLI: tune on ``data/prepared``, write ``tuning/best_params.json``."""
    from training.environment import configure_logging, configure_mlflow, optuna_storage_url

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
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    # Without the bar, Optuna's own log line per trial shows the progress.
    optuna.logging.set_verbosity(optuna.logging.WARNING if progress else optuna.logging.INFO)
    params = load_params(args.params)
    tune = params.tune

    schema = FeatureSchema.load(args.prepared / "schema.json")
    train = pd.read_parquet(args.prepared / "train.parquet")
    valid = pd.read_parquet(args.prepared / "valid.parquet")
    name = study_name(
        params, {s: md5_file(args.prepared / f"{s}.parquet") for s in ("train", "valid")}
    )

    storage_url = optuna_storage_url()
    if storage_url.startswith("sqlite:///"):
        Path(storage_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    with setup_lock(storage_url):
        study = open_study(storage_url, name, tune, seed=None if args.worker else params.seed)
        configure_mlflow(params.registry.experiment)
        parent_run_id = study.user_attrs.get(PARENT_RUN_ATTR)
        if parent_run_id is None:
            parent_run_id = start_parent_run(name, storage_url, params)
            study.set_user_attr(PARENT_RUN_ATTR, parent_run_id)

    done = n_finished(study)
    if done >= tune.n_trials:
        log.info("study %s already has %d finished trials: nothing to do", name, done)
    elif done:
        log.info("resuming study %s: %d finished trial(s) kept", name, done)
    objective = logged(
        make_objective(schema, train, valid, params),
        parent_run_id,
        name,
        eval_metric_name(schema, params.train),
    )
    finished = optimize(study, objective, tune, progress)
    if finished < tune.n_trials:
        log.warning(
            "tune.timeout_s (%ss) reached after %d of %d trials: the result depends on "
            "this machine's speed",
            tune.timeout_s,
            finished,
            tune.n_trials,
        )
    if args.worker:
        return 0

    record = best_params_record(study, tune)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    record_in_mlflow(parent_run_id, args.out, study)
    log.info(
        "best of %d finished trials: #%d, valid loss %.5f, params %s",
        record["n_finished"],
        record["best_trial"],
        record["best_value"],
        record["params"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
