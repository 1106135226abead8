"""A model's raw outputs turned into answers: class probabilities and labels, or a value
and its prediction interval; and answers as table columns (the UI's CSV, the MLflow
model's frame)."""

from __future__ import annotations

from typing import Any

import numpy as np
import xgboost as xgb

from tabserve.core.bundle import Interval
from tabserve.core.schema import Label


def class_probabilities(booster: xgb.Booster, matrix: np.ndarray) -> np.ndarray:
    """Class probabilities of an encoded matrix, ``(n_rows, n_classes)`` in class order."""
    raw = np.asarray(booster.inplace_predict(matrix), dtype=np.float64)
    if raw.ndim == 1:  # binary:logistic gives P(class 1) only
        raw = np.column_stack([1.0 - raw, raw])
    return raw


def classification_answers(classes: list[Label], proba: np.ndarray) -> list[dict[str, Any]]:
    """One ``{"label", "probabilities"}`` answer per row of class probabilities."""
    keys = [str(c) for c in classes]
    # Whole-array argmax and tolist (Python floats): a tenth of the cost row by row.
    best = np.argmax(proba, axis=1).tolist()
    return [
        {"label": classes[i], "probabilities": dict(zip(keys, p, strict=True))}
        for i, p in zip(best, proba.tolist(), strict=True)
    ]


def regression_values(
    booster: xgb.Booster, ends: xgb.Booster, interval: Interval, matrix: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(values, lows, highs)``: the model's values and their calibrated intervals.

    The quantile model's ends are moved by the calibration offset, kept in order, and
    widened to hold the value where it falls outside (the two models are separate).
    """
    values = np.asarray(booster.inplace_predict(matrix), dtype=np.float64).reshape(-1)
    predicted = np.asarray(ends.inplace_predict(matrix), dtype=np.float64).reshape(-1, 2)
    low = predicted.min(axis=1) - interval.offset
    high = predicted.max(axis=1) + interval.offset
    low, high = np.minimum(low, high), np.maximum(low, high)
    return values, np.minimum(low, values), np.maximum(high, values)


def regression_answers(
    values: np.ndarray, lows: np.ndarray, highs: np.ndarray, coverage: float
) -> list[dict[str, Any]]:
    """One ``{"value", "interval": {"low", "high", "coverage"}}`` answer per row."""
    return [
        {"value": value, "interval": {"low": low, "high": high, "coverage": coverage}}
        for value, low, high in zip(
            np.asarray(values, dtype=np.float64).tolist(),
            np.asarray(lows, dtype=np.float64).tolist(),
            np.asarray(highs, dtype=np.float64).tolist(),
            strict=True,
        )
    ]


def answer_columns(answers: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Answers as table columns (a scored CSV, the MLflow model's output frame):
    ``label`` and one ``proba_<class>`` per class, or ``prediction``, ``low``, ``high``."""
    if answers and "value" in answers[0]:
        return {
            "prediction": [a["value"] for a in answers],
            "low": [a["interval"]["low"] for a in answers],
            "high": [a["interval"]["high"] for a in answers],
        }
    columns: dict[str, list[Any]] = {"label": [a["label"] for a in answers]}
    for key in answers[0]["probabilities"] if answers else ():
        columns[f"proba_{key}"] = [a["probabilities"][key] for a in answers]
    return columns


def classification_columns(classes: list[Label], proba: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`answer_columns` of :func:`classification_answers`, as whole arrays (no dict per
    row: a file of millions of rows is scored through this)."""
    labels = np.array(classes, dtype=np.int64 if _all_ints(classes) else object)
    columns: dict[str, np.ndarray] = {"label": labels[np.argmax(proba, axis=1)]}
    for index, key in enumerate(str(c) for c in classes):
        columns[f"proba_{key}"] = np.ascontiguousarray(proba[:, index], dtype=np.float64)
    return columns


def regression_columns(
    values: np.ndarray, lows: np.ndarray, highs: np.ndarray
) -> dict[str, np.ndarray]:
    """:func:`answer_columns` of :func:`regression_answers`, as whole arrays."""
    return {
        "prediction": np.asarray(values, dtype=np.float64),
        "low": np.asarray(lows, dtype=np.float64),
        "high": np.asarray(highs, dtype=np.float64),
    }


def _all_ints(classes: list[Label]) -> bool:
    return bool(classes) and all(
        isinstance(c, int | np.integer) and not isinstance(c, bool) for c in classes
    )
