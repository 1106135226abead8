"""Regression in the pure code: the task rule, the target's spec, metrics, the interval's
calibration, the predictor's answers and the promotion metric that fits the task."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from tabserve.core.predictor import Predictor, answer_columns
from tabserve.core.schema_inference import decide_task, infer_schema
from training.modeling import dmatrix, evaluate, fit_interval, regression_metrics
from training.params import PromoteParams


@pytest.mark.parametrize(
    ("values", "task"),
    [
        (list(range(100)), "regression"),  # many distinct numbers: a quantity
        ([0.5, 1.0, 1.5] * 10, "regression"),  # few, but not whole numbers
        ([0, 1, 2] * 30, "classification"),  # a few integer codes
        (list(range(20)) * 3, "classification"),  # 20 distinct integers: still classes
        (["a", "b"] * 30, "classification"),
        ([True, False] * 30, "classification"),
    ],
)
def test_auto_task_rule(values: list[object], task: str) -> None:
    assert decide_task(pd.Series(values)) == task


def test_explicit_task_wins_and_the_regression_target_is_described() -> None:
    assert decide_task(pd.Series(range(100)), "classification") == "classification"
    frame = pd.DataFrame({"x": range(100), "price": np.linspace(10, 1000, 100)})
    target = infer_schema(frame, "price").target
    assert target.task == "regression" and target.classes == []
    assert (target.min, target.max) == (10.0, 1000.0)
    assert len(target.quantiles) == 11 and target.quantiles[5] == pytest.approx(505.0)


def test_mape_is_guarded_against_zero_targets() -> None:
    y = np.array([0.0, 0.0, 2.0, 4.0])
    metrics = regression_metrics(y, np.array([0.1, 0.0, 1.0, 4.0]))
    assert metrics["mape"] == pytest.approx(0.25)  # (0.5 + 0) / 2: zero targets left out
    assert "mape" not in regression_metrics(np.zeros(4), np.ones(4))
    assert metrics["rmse"] == pytest.approx(np.sqrt((0.01 + 0 + 1 + 0) / 4), abs=1e-6)


def _model(coverage: float = 0.8) -> tuple[Predictor, pd.DataFrame]:
    rng = np.random.default_rng(1)
    n = 900
    frame = pd.DataFrame({"x": rng.uniform(0, 10, n), "c": rng.choice(["a", "b"], n)})
    frame["y"] = 3 * frame["x"] + (frame["c"] == "b") * 5 + rng.normal(0, 2, n)
    schema = infer_schema(frame, "y")
    train, valid, test = frame.iloc[:500], frame.iloc[500:700], frame.iloc[700:]
    params = {"objective": "reg:squarederror", "max_depth": 3, "nthread": 1, "seed": 0}
    dtrain, dvalid = dmatrix(schema, train), dmatrix(schema, valid)
    booster = xgb.train(params, dtrain, 60)
    interval = fit_interval(params, dtrain, dvalid, coverage, 200, 10)
    return Predictor(booster, schema, None, version="t", interval=interval), test


def test_calibrated_interval_holds_its_nominal_share_of_new_targets() -> None:
    predictor, test = _model(0.8)
    metrics = evaluate(predictor, test).metrics
    assert metrics["interval_nominal"] == 0.8
    assert abs(metrics["interval_coverage"] - 0.8) < 0.08  # 200 test rows
    assert metrics["r2"] > 0.8


def test_regression_answers_columns_and_explanations() -> None:
    predictor, test = _model()
    rows = test.drop(columns=["y"]).head(5).to_dict("records")
    answers = predictor.predict(rows)
    values, lows, highs = predictor.predict_values(rows)
    assert [a["value"] for a in answers] == values.tolist()
    assert [a["interval"]["low"] for a in answers] == lows.tolist()
    assert [a["interval"]["high"] for a in answers] == highs.tolist()
    assert all(a["interval"]["low"] <= a["value"] <= a["interval"]["high"] for a in answers)
    assert {a["interval"]["coverage"] for a in answers} == {0.8}
    assert list(answer_columns(answers)) == ["prediction", "low", "high"]
    for answer in predictor.explain(rows):
        total = answer["base_value"] + sum(answer["contributions"].values())
        assert total == pytest.approx(answer["value"], abs=1e-4)


def test_promotion_metric_follows_the_task() -> None:
    assert PromoteParams(metric="auto").metric_for("regression") == "rmse"
    assert PromoteParams(metric="auto").metric_for("classification") == "roc_auc"
    assert PromoteParams(metric="r2").metric_for("regression") == "r2"
    with pytest.raises(ValueError, match="'f1' does not fit a regression model"):
        PromoteParams(metric="f1").metric_for("regression")
    with pytest.raises(ValueError, match="rmse"):
        PromoteParams(metric="rmse").metric_for("classification")
