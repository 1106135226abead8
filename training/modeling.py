"""XGBoost helpers shared by the tune, train and promote stages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn import metrics as skm

from tabserve.core.bundle import Interval
from tabserve.core.predictor import Predictor, class_probabilities
from tabserve.core.schema import FeatureSchema
from training.params import TrainParams


def dmatrix(schema: FeatureSchema, frame: pd.DataFrame, with_label: bool = True) -> xgb.DMatrix:
    """A DMatrix from a prepared split: schema dtypes, categories enabled, labels encoded."""
    features = schema.to_frame(frame)
    label = schema.encode_target(frame[schema.target.name]) if with_label else None
    return xgb.DMatrix(features, label=label, enable_categorical=True)


# The validation metric each regression objective is tuned and early-stopped on.
REGRESSION_EVAL_METRIC = {
    "reg:squarederror": "rmse",
    "reg:absoluteerror": "mae",
    "reg:pseudohubererror": "mphe",
}


def objective_params(schema: FeatureSchema, seed: int, train: TrainParams) -> dict[str, Any]:
    """Fixed booster params for the task (binary, multiclass, regression) of ``schema``."""
    params: dict[str, Any] = {
        "tree_method": "hist",
        "seed": seed,
        "nthread": train.nthread,
        "verbosity": 0,
    }
    task = schema.target.task
    if task == "regression":
        params |= {
            "objective": train.regression_objective,
            "eval_metric": eval_metric_name(schema, train),
        }
    elif task == "binary":
        params |= {"objective": "binary:logistic", "eval_metric": "logloss"}
    else:
        params |= {
            "objective": "multi:softprob",
            "eval_metric": "mlogloss",
            "num_class": len(schema.target.classes),
        }
    return params


def fit(
    booster_params: dict[str, Any],
    dtrain: xgb.DMatrix,
    dvalid: xgb.DMatrix,
    num_boost_round: int,
    early_stopping_rounds: int,
    callbacks: list[xgb.callback.TrainingCallback] | None = None,
) -> xgb.Booster:
    """Train with early stopping on the validation split (the tune and train stages alike)."""
    return xgb.train(
        booster_params,
        dtrain,
        num_boost_round=num_boost_round,
        evals=[(dvalid, "valid")],
        early_stopping_rounds=early_stopping_rounds,
        callbacks=callbacks,
        verbose_eval=False,
    )


def eval_metric_name(schema: FeatureSchema, train: TrainParams) -> str:
    """The validation metric the booster reports (and Optuna minimises)."""
    task = schema.target.task
    if task == "regression":
        return REGRESSION_EVAL_METRIC[train.regression_objective]
    return "logloss" if task == "binary" else "mlogloss"


def predict_proba(booster: xgb.Booster, schema: FeatureSchema, frame: pd.DataFrame) -> np.ndarray:
    """Class probabilities, shape (rows, classes), for a prepared split (the service's path:
    the schema's code matrix)."""
    return class_probabilities(booster, schema.encode(frame))


def classification_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Accuracy, ROC AUC, log loss and F1 (binary, or macro one-vs-rest for multiclass)."""
    labels = np.arange(proba.shape[1])
    y_pred = proba.argmax(axis=1)
    if proba.shape[1] == 2:
        auc = skm.roc_auc_score(y_true, proba[:, 1])
        f1 = skm.f1_score(y_true, y_pred)
    else:
        auc = skm.roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=labels)
        f1 = skm.f1_score(y_true, y_pred, average="macro")
    return {
        "accuracy": round(float(skm.accuracy_score(y_true, y_pred)), 6),
        "roc_auc": round(float(auc), 6),
        "log_loss": round(float(skm.log_loss(y_true, proba, labels=labels)), 6),
        "f1": round(float(f1), 6),
    }


def regression_metrics(y_true: np.ndarray, values: np.ndarray) -> dict[str, float]:
    """RMSE, MAE, R² and MAPE; MAPE over the rows whose target is not zero (where it is
    defined), and only when at least half of them are."""
    metrics = {
        "rmse": round(float(np.sqrt(skm.mean_squared_error(y_true, values))), 6),
        "mae": round(float(skm.mean_absolute_error(y_true, values)), 6),
        "r2": round(float(skm.r2_score(y_true, values)), 6),
    }
    nonzero = np.abs(y_true) > 1e-12
    if nonzero.mean() >= 0.5:
        mape = np.mean(np.abs((y_true[nonzero] - values[nonzero]) / y_true[nonzero]))
        metrics["mape"] = round(float(mape), 6)
    return metrics


def interval_metrics(y_true: np.ndarray, low: np.ndarray, high: np.ndarray) -> dict[str, float]:
    """The share of targets inside their interval (its test coverage) and the mean width."""
    inside = (y_true >= low) & (y_true <= high)
    return {
        "interval_coverage": round(float(inside.mean()), 6),
        "interval_width": round(float(np.mean(high - low)), 6),
    }


def fit_interval(
    booster_params: dict[str, Any],
    dtrain: xgb.DMatrix,
    dvalid: xgb.DMatrix,
    coverage: float,
    num_boost_round: int,
    early_stopping_rounds: int,
) -> tuple[xgb.Booster, Interval]:
    """The prediction interval: one XGBoost model of its two ends (``reg:quantileerror``
    at the quantiles ``(1 - coverage) / 2`` and ``(1 + coverage) / 2``), then calibrated on
    the validation split (conformalized quantile regression: both ends widened, or
    narrowed, by the quantile of how far the validation targets fall outside them), so
    that the interval holds ``coverage`` of new targets however well the quantile
    model alone is calibrated.
    """
    low, high = round((1 - coverage) / 2, 10), round((1 + coverage) / 2, 10)
    params = {
        **{k: v for k, v in booster_params.items() if k not in ("objective", "eval_metric")},
        "objective": "reg:quantileerror",
        "quantile_alpha": [low, high],
        "eval_metric": "quantile",
    }
    booster = fit(params, dtrain, dvalid, num_boost_round, early_stopping_rounds)
    booster = booster[: booster.best_iteration + 1]
    y = dvalid.get_label().astype(np.float64)
    ends = np.asarray(booster.predict(dvalid), dtype=np.float64)
    outside = np.maximum(ends[:, 0] - y, y - ends[:, 1])
    level = min(1.0, np.ceil((len(y) + 1) * coverage) / len(y))
    offset = float(np.quantile(outside, level, method="higher"))
    return booster, Interval(coverage=coverage, quantiles=(low, high), offset=offset, rows=len(y))


@dataclass(frozen=True)
class Evaluation:
    """A model scored on a split, through the service's own predictor."""

    metrics: dict[str, float]
    y_true: np.ndarray
    outputs: np.ndarray  # class probabilities (rows, classes), or the values (rows,)
    lows: np.ndarray | None = None  # regression: the intervals' ends
    highs: np.ndarray | None = None


def evaluate(predictor: Predictor, frame: pd.DataFrame) -> Evaluation:
    """Test metrics of ``predictor`` on a prepared split: accuracy, ROC AUC, log loss, F1
    for a classifier; RMSE, MAE, R², MAPE and the interval's coverage (with its nominal
    value) and mean width for a regression model."""
    schema = predictor.schema
    y_true = schema.encode_target(frame[schema.target.name])
    if not predictor.regression:
        proba = predictor.predict_proba(frame)
        return Evaluation(classification_metrics(y_true, proba), y_true, proba)
    assert predictor.interval is not None
    values, lows, highs = predictor.predict_values(frame)
    metrics = (
        regression_metrics(y_true, values)
        | interval_metrics(y_true, lows, highs)
        | {"interval_nominal": predictor.interval[1].coverage}
    )
    return Evaluation(metrics, y_true, values, lows, highs)
