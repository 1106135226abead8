"""Several tuning workers on one SQLite study (one machine): real processes, a cheap objective.

Neither worker takes the other's running trials for dead ones, and together they end
with between ``n_trials`` and ``n_trials + k - 1`` finished trials.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
N_TRIALS = 8
WORKERS = 3

WORKER = """
import sys, time
from training.params import TuneParams
from training.tune import open_study, optimize, setup_lock

tune = TuneParams(
    n_trials=int(sys.argv[2]), num_boost_round=1, early_stopping_rounds=1, space={},
    heartbeat_interval_s=1, grace_period_s=3,
)
with setup_lock(sys.argv[1]):
    study = open_study(sys.argv[1], "shared", tune, seed=None)

def objective(trial):
    x = trial.suggest_float("x", -1, 1)
    time.sleep(0.4)  # long enough for the workers' trials to overlap
    return x * x

print(optimize(study, objective, tune, progress=False))
"""


def test_sqlite_workers_share_a_study_and_fail_none_of_each_others_trials(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, url, str(N_TRIALS)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(WORKERS)
    ]
    outputs = [w.communicate(timeout=120)[0] for w in workers]
    assert [w.returncode for w in workers] == [0] * WORKERS, "\n".join(outputs)
    assert all("Warning" not in out for out in outputs), outputs

    study = optuna.load_study(study_name="shared", storage=url)
    states = [t.state.name for t in study.trials]
    assert "FAIL" not in states and "RUNNING" not in states, states
    assert N_TRIALS <= states.count("COMPLETE") <= N_TRIALS + WORKERS - 1, states
