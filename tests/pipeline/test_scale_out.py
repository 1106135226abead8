"""Scale-out tuning: two Optuna workers on one study in a real PostgreSQL, MLflow on it too."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from tests.pipeline.conftest import pipeline_env, run
from tests.postgres import postgres_server

pytestmark = pytest.mark.slow

N_TRIALS = 10


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A throw-away PostgreSQL server with the databases ``optuna`` and ``mlflow``."""
    with postgres_server() as server:
        for db in ("optuna", "mlflow"):
            server.create_database(db)
        yield server.url


def test_two_workers_share_one_study_and_finish_n_to_n_plus_one_trials(
    make_repo, postgres: str
) -> None:
    repo = make_repo("scale-out", {"tune.n_trials": N_TRIALS})
    run(repo, "dvc", "repro", "prepare")
    env = pipeline_env(repo) | {
        "TABSERVE_OPTUNA_STORAGE": f"{postgres}/optuna",
        "MLFLOW_TRACKING_URI": f"{postgres}/mlflow",
    }
    workers = [
        subprocess.Popen(
            ["python", "-m", "training.tune", "--worker"],
            cwd=repo,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], "\n".join(outputs)
    # The DVC stage itself then finds the study done and writes the best params.
    final = subprocess.run(
        ["python", "-m", "training.tune"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert final.returncode == 0, final.stderr
    assert "already has" in final.stderr

    import mlflow
    import optuna

    names = optuna.get_all_study_names(storage=f"{postgres}/optuna")
    assert len(names) == 1
    study = optuna.load_study(study_name=names[0], storage=f"{postgres}/optuna")
    states = [t.state.name for t in study.trials]
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    # Each worker stops once the study holds N_TRIALS finished trials; a trial the other
    # one had started by then still finishes: k workers end with N to N + k - 1.
    assert N_TRIALS <= len(finished) <= N_TRIALS + len(workers) - 1, states
    assert "RUNNING" not in states and "FAIL" not in states
    assert all("Warning" not in out for out in outputs), outputs

    client = mlflow.MlflowClient(tracking_uri=f"{postgres}/mlflow")
    experiment = client.get_experiment_by_name("tabserve")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    trial_runs = [r for r in runs if "optuna.trial_number" in r.data.tags]
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in trial_runs) == sorted(
        t.number for t in finished
    )
    assert all(t.user_attrs.get("mlflow_run_id") for t in finished)
    assert len({r.data.tags["optuna.worker"] for r in trial_runs}) == 2, "both workers ran trials"
    parents = [r for r in runs if r.info.run_name.startswith("tune-")]
    assert len(parents) == 1
    assert {r.data.tags["mlflow.parentRunId"] for r in trial_runs} == {parents[0].info.run_id}
    best = json.loads((repo / "tuning/best_params.json").read_text())
    assert best["n_finished"] == len(finished) and best["study"] == names[0]
    del mlflow
