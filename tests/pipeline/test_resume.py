"""A `dvc repro` killed in the middle of tuning resumes and loses no finished trial.

The trial the kill interrupted is left RUNNING; its heartbeat goes stale, so the
resumed run fails it and retries its params (Optuna's heartbeat and
``RetryHeartbeatStaleTrialCallback``). A short grace period makes that happen at once.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.pipeline.conftest import mlflow_client, pipeline_env, run, stages_run

pytestmark = pytest.mark.slow

N_TRIALS = 12


def finished_trials(db: Path) -> list[tuple[int, str, float | None]]:
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        try:
            rows = conn.execute(
                "SELECT t.number, t.state, v.value FROM trials t LEFT JOIN trial_values v "
                "ON v.trial_id = t.trial_id ORDER BY t.number"
            ).fetchall()
        except sqlite3.OperationalError:  # tables not created yet
            return []
    return [(n, s, v) for n, s, v in rows]


def running_with_heartbeat(db: Path) -> list[int]:
    """Numbers of RUNNING trials whose worker has sent a heartbeat (Optuna can see them die)."""
    with sqlite3.connect(db) as conn:
        try:
            rows = conn.execute(
                "SELECT t.number FROM trials t JOIN trial_heartbeats h ON h.trial_id = t.trial_id "
                "WHERE t.state = 'RUNNING'"
            ).fetchall()
        except sqlite3.OperationalError:
            return []
    return [n for (n,) in rows]


def test_killed_tuning_resumes_without_losing_trials(make_repo) -> None:
    # No early stopping and more rounds: each trial takes long enough to be killed mid-way.
    repo = make_repo(
        "resume",
        {
            "tune.n_trials": N_TRIALS,
            "tune.num_boost_round": 200,
            "tune.early_stopping_rounds": 200,
            "tune.heartbeat_interval_s": 1,
            "tune.grace_period_s": 2,
        },
    )
    run(repo, "dvc", "repro", "prepare")
    db = repo / "tuning" / "optuna.db"
    proc = subprocess.Popen(
        ["dvc", "repro", "tune"],
        cwd=repo,
        env=pipeline_env(repo),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            done = [t for t in finished_trials(db) if t[1] in ("COMPLETE", "PRUNED")]
            if len(done) >= 3 and running_with_heartbeat(db):
                break
            time.sleep(0.05)
        else:
            pytest.fail("tuning never finished 3 trials")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    before = {n: (s, v) for n, s, v in finished_trials(db) if s in ("COMPLETE", "PRUNED")}
    interrupted = [n for n, s, _ in finished_trials(db) if s == "RUNNING"]
    assert 3 <= len(before) < N_TRIALS
    assert len(interrupted) == 1, finished_trials(db)
    assert not (repo / "tuning/best_params.json").exists()

    again = run(repo, "dvc", "repro", "tune")
    assert stages_run(again.stdout) == ["prepare", "tune"] or stages_run(again.stdout) == ["tune"]
    assert "finished trial(s) kept" in again.stderr
    assert "Warning" not in again.stderr, again.stderr
    after = finished_trials(db)
    states = [s for _, s, _ in after]
    assert "RUNNING" not in states
    finished = {n: (s, v) for n, s, v in after if s in ("COMPLETE", "PRUNED")}
    assert len(finished) == N_TRIALS
    # Nothing finished before the kill was recomputed or lost.
    assert all(finished[n] == before[n] for n in before)
    best = json.loads((repo / "tuning/best_params.json").read_text())
    assert best["n_finished"] == N_TRIALS

    # The interrupted trial was failed (it does not count) and retried with its params.
    import optuna

    study = optuna.load_study(study_name=best["study"], storage=f"sqlite:///{db}")
    (killed,) = [t for t in study.trials if t.number in interrupted]
    assert killed.state.name == "FAIL"
    (retry,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed.number]
    assert retry.state.name in ("COMPLETE", "PRUNED")
    assert retry.params.items() >= killed.params.items()

    client = mlflow_client(repo)
    experiment = client.get_experiment_by_name("tabserve")
    trial_runs = [
        r
        for r in client.search_runs([experiment.experiment_id], max_results=500)
        if r.data.tags.get("optuna.trial_number") is not None
    ]
    numbers = [int(r.data.tags["optuna.trial_number"]) for r in trial_runs]
    assert set(finished) <= set(numbers)
    # A trial finished before the kill was not run again: it has its one MLflow run.
    assert all(numbers.count(n) == 1 for n in before), sorted(numbers)
    parents = {r.data.tags["mlflow.parentRunId"] for r in trial_runs}
    assert len(parents) == 1  # the resumed run kept the same parent run
