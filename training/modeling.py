"""XGBoost helpers shared by the tune, train and promote stages."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn import metrics as skm

from tabserve.predictor import class_probabilities
from tabserve.schema import FeatureSchema


def dmatrix(schema: FeatureSchema, frame: pd.DataFrame, with_label: bool = True) -> xgb.DMatrix:
    """A DMatrix from a prepared split: schema dtypes, categories enabled, labels encoded."""
    features = schema.to_frame(frame)
    label = schema.encode_target(frame[schema.target.name]) if with_label else None
    return xgb.DMatrix(features, label=label, enable_categorical=True)


def objective_params(schema: FeatureSchema, seed: int, nthread: int) -> dict[str, Any]:
    """Fixed booster params for the task (binary or multiclass) of ``schema``."""
    params: dict[str, Any] = {
        "tree_method": "hist",
        "seed": seed,
        "nthread": nthread,
        "verbosity": 0,
    }
    if schema.target.task == "binary":
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


def eval_metric_name(schema: FeatureSchema) -> str:
    """The validation metric the booster reports (and Optuna minimises)."""
    return "logloss" if schema.target.task == "binary" else "mlogloss"


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
