"""The tune stage's study: its name, its budget, and resuming it (a real SQLite storage)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from pydantic import ValidationError

from training.params import Params, TuneParams, load_params
from training.tune import n_finished, open_study, optimize, setup_lock, study_name

ROOT = Path(__file__).resolve().parents[2]
DATA = {"train": "0" * 32, "valid": "1" * 32}


def _params(**tune: Any) -> Params:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["tune"] |= tune
    return Params.model_validate(raw)


def _tune(n_trials: int, **extra: Any) -> TuneParams:
    return TuneParams(
        n_trials=n_trials, num_boost_round=1, early_stopping_rounds=1, space={}, **extra
    )


def _objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -1.0, 1.0)
    if x > 0.3:  # a pruned trial counts towards the budget too
        raise optuna.TrialPruned()
    return x * x


def test_timeout_is_off_by_default_and_validated() -> None:
    assert load_params(ROOT / "params.yaml").tune.timeout_s is None
    assert _params(timeout_s=30).tune.timeout_s == 30
    with pytest.raises(ValidationError, match="timeout_s"):
        _params(timeout_s=0)
    with pytest.raises(ValidationError, match="must exceed heartbeat_interval_s"):
        _params(heartbeat_interval_s=10, grace_period_s=10)


def test_study_name_follows_what_decides_the_trials_only() -> None:
    name = study_name(_params(), DATA)
    # When to stop and how dead workers are noticed: the same study goes on.
    assert study_name(_params(timeout_s=5, heartbeat_interval_s=2, grace_period_s=9), DATA) == name
    assert study_name(_params(n_trials=3), DATA) != name
    assert study_name(_params(num_boost_round=10), DATA) != name
    assert study_name(_params(), {**DATA, "train": "2" * 32}) != name


def test_one_worker_ends_with_exactly_n_trials_and_a_resumed_study_keeps_them(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    with setup_lock(url):
        first = open_study(url, "s", _tune(4), seed=7)
    assert optimize(first, _objective, _tune(4), progress=False) == 4
    kept = [(t.number, t.state, t.value, t.params) for t in first.get_trials()]

    # Stopped at 4 of a budget of 9 (as a timeout or a kill would): the next run adds 5.
    resumed = open_study(url, "s", _tune(9), seed=7)
    assert optimize(resumed, _objective, _tune(9), progress=False) == 9
    trials = resumed.get_trials()
    assert len(trials) == 9 and n_finished(resumed) == 9
    assert [(t.number, t.state, t.value, t.params) for t in trials[:4]] == kept
    assert any(t.state == optuna.trial.TrialState.PRUNED for t in trials)
    # The sampler was seeded on: the resumed trials do not replay the first proposals.
    first = {params["x"] for *_, params in kept}
    assert first.isdisjoint(t.params["x"] for t in trials[4:])

    # Nothing left to do: no trial is even started.
    again = open_study(url, "s", _tune(9), seed=7)
    assert optimize(again, _objective, _tune(9), progress=False) == 9
    assert len(again.get_trials()) == 9


def test_same_seed_same_trials(tmp_path: Path) -> None:
    values = []
    for run in ("a", "b"):
        url = f"sqlite:///{tmp_path / f'{run}.db'}"
        study = open_study(url, "s", _tune(6), seed=3)
        optimize(study, _objective, _tune(6), progress=False)
        values.append([(t.state, t.params) for t in study.get_trials()])
    assert values[0] == values[1]


def test_timeout_cuts_a_study_short(tmp_path: Path) -> None:
    def slow(trial: optuna.Trial) -> float:
        time.sleep(0.3)
        return _objective(trial)

    tune = _tune(50, timeout_s=0.5)
    study = open_study(f"sqlite:///{tmp_path / 'optuna.db'}", "s", tune, seed=1)
    assert 1 <= optimize(study, slow, tune, progress=False) < 50
