"""A model's quality on labelled rows: its answers against the ground truth that came back.

The figures the service publishes as live quality (``tabserve_live_quality``), the same
definitions as scikit-learn's (``accuracy_score``, ``log_loss``, ``roc_auc_score`` with
``multi_class="ovr", average="macro"``, ``root_mean_squared_error``,
``mean_absolute_error``) so that they compare with the test figures the pipeline
computed; written on NumPy here because the service's image has no scikit-learn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata

CLASSIFICATION_METRICS = ("accuracy", "log_loss", "roc_auc")
REGRESSION_METRICS = ("rmse", "mae", "coverage")


def actual_label(actual: Any, classes: Sequence[Any]) -> Any:
    """The class ``actual`` names: one of ``classes`` itself, or its text (a client may send
    ``"1"`` for the class ``1``, as a CSV would).

    Raises:
        ValueError: naming the classes when ``actual`` is none of them.
    """
    if isinstance(actual, str | int | float):  # bool too: an int
        for label in classes:
            if type(label) is type(actual) and label == actual:
                return label
        for label in classes:
            if str(label) == str(actual):
                return label
    raise ValueError(f"must be one of the model's classes {list(classes)}")


def actual_value(actual: Any) -> float:
    """A regression target's ground truth: a finite number.

    Raises:
        ValueError: for anything else (text, a boolean, NaN, an infinity).
    """
    if isinstance(actual, bool) or not isinstance(actual, int | float):
        raise ValueError("must be a number")
    if not math.isfinite(actual):
        raise ValueError("must be a finite number")
    return float(actual)


def _binary_auc(positive: np.ndarray, scores: np.ndarray) -> float | None:
    """The ROC AUC of ``scores`` for ``positive`` (Mann-Whitney, ties counted half); None
    with only one kind of row."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def classification_quality(
    classes: Sequence[Any], probabilities: np.ndarray, actual: Sequence[Any]
) -> dict[str, float]:
    """Accuracy, log loss and ROC AUC of class probabilities against the true labels.

    Args:
        classes: the model's classes, in the order of ``probabilities``' columns.
        probabilities: ``(n_rows, n_classes)``.
        actual: each row's true class (one of ``classes``).

    Returns:
        ``accuracy`` and ``log_loss`` for any rows; ``roc_auc`` (binary: of the second
        class; multiclass: the mean over the classes of one against the rest) once the
        rows hold two classes or more. Empty for no rows.
    """
    if len(actual) == 0:
        return {}
    index = {label: i for i, label in enumerate(classes)}
    truth = np.array([index[label] for label in actual])
    proba = np.asarray(probabilities, dtype=np.float64)
    rows = np.arange(len(truth))
    eps = np.finfo(np.float64).eps
    figures = {
        "accuracy": float(np.mean(np.argmax(proba, axis=1) == truth)),
        "log_loss": float(-np.mean(np.log(np.clip(proba[rows, truth], eps, 1.0)))),
    }
    if len(classes) == 2:
        auc = _binary_auc(truth == 1, proba[:, 1])
    else:
        present = [c for c in range(len(classes)) if (truth == c).any()]
        aucs = [_binary_auc(truth == c, proba[:, c]) for c in present] if len(present) > 1 else []
        auc = float(np.mean([a for a in aucs if a is not None])) if aucs else None
    if auc is not None:
        figures["roc_auc"] = auc
    return figures


def regression_quality(
    values: np.ndarray, lows: np.ndarray, highs: np.ndarray, actual: np.ndarray
) -> dict[str, float]:
    """RMSE, MAE and the prediction intervals' coverage (the share of true values inside
    their interval) of predicted values against the true ones; empty for no rows."""
    if len(actual) == 0:
        return {}
    truth = np.asarray(actual, dtype=np.float64)
    errors = np.asarray(values, dtype=np.float64) - truth
    inside = (np.asarray(lows) <= truth) & (truth <= np.asarray(highs))
    return {
        "rmse": float(np.sqrt(np.mean(errors**2))),
        "mae": float(np.mean(np.abs(errors))),
        "coverage": float(np.mean(inside)),
    }


def answers_quality(answers: Sequence[dict[str, Any]], actual: Sequence[Any]) -> dict[str, float]:
    """:func:`classification_quality` or :func:`regression_quality` of the service's answers
    (``{"label", "probabilities"}`` or ``{"value", "interval"}``) against the true labels
    or values; the classes are the answers' own (their probabilities' keys, which are the
    classes' text)."""
    if not answers:
        return {}
    if "probabilities" in answers[0]:
        keys = list(answers[0]["probabilities"])
        proba = np.array([[a["probabilities"][k] for k in keys] for a in answers])
        return classification_quality(keys, proba, [str(label) for label in actual])
    return regression_quality(
        np.array([a["value"] for a in answers], dtype=np.float64),
        np.array([a["interval"]["low"] for a in answers], dtype=np.float64),
        np.array([a["interval"]["high"] for a in answers], dtype=np.float64),
        np.asarray(actual, dtype=np.float64),
    )


def agrees(champion: dict[str, Any], shadow: dict[str, Any]) -> bool:
    """Whether a shadow's answer agrees with the champion's: the same class, or the
    shadow's value inside the champion's prediction interval."""
    if "label" in champion:
        return bool(champion["label"] == shadow["label"])
    interval = champion["interval"]
    return bool(interval["low"] <= shadow["value"] <= interval["high"])
