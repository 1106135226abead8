"""Data checks of the `prepare` stage: label leakage, and data quality worth a look.

Leakage: a feature that predicts the target almost perfectly on its own is, far more
often than not, information the model will not have when it is used (a cause of death
filled only for deaths, a follow-up time, a copy of the label). For each feature,
:func:`feature_scores` measures how well it alone predicts the target on the training
split, out of fold (3 folds, seeded), as a score where 1.0 is perfect:

- classification: the ROC AUC (macro one-vs-rest for several classes) of a depth-2
  decision tree on a numeric feature, or of its per-category class frequencies for a
  categorical one (missing counted as a category); and whether missingness alone
  separates a class (the ROC AUC of the "is missing" indicator, for the class it
  separates best);
- regression: for a numeric feature the higher of its rank correlation with the target
  (absolute Spearman, which catches any monotone copy) and the R² of a depth-8 tree, for
  a categorical one the R² of its per-category means; and whether missingness alone
  separates high from low targets (the ROC AUC of the indicator against the target).

:func:`find_leaks` flags every feature at or above the threshold that was not
knowingly allowed.

Quality (:func:`quality_findings`): reported, never fatal: mostly-missing columns, heavy
class imbalance, duplicate rows, test rows identical to training rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import r2_score, roc_auc_score
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from tabserve.core.schema import FeatureSchema

FOLDS = 3
MOSTLY_MISSING = 0.5  # share of missing values that earns a warning
IMBALANCE = 0.05  # a class below this share of the rows earns a warning


@dataclass(frozen=True)
class FeatureScore:
    """How well one feature alone predicts the target (1.0: perfectly)."""

    feature: str
    kind: str
    score: float  # ROC AUC of the one-feature model, out of fold
    missing_rate: float
    missing_score: float | None  # ROC AUC of "is missing" alone; None if never missing
    missing_class: str | None  # the class (or "high <target>") missingness separates best
    kind_of_task: str = "classification"
    source: str = ""  # the input feature of a model column (a date's part: the date)

    def worst(self) -> float:
        """The higher of the two scores."""
        return max(self.score, self.missing_score or 0.0)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, scores rounded to 4 digits."""
        data = asdict(self)
        del data["kind_of_task"]
        for key in ("score", "missing_rate", "missing_score"):
            if data[key] is not None:
                data[key] = round(float(data[key]), 4)
        return data


def _auc(y: np.ndarray, proba: np.ndarray) -> float:
    """ROC AUC of class probabilities (macro one-vs-rest for more than two classes)."""
    if proba.shape[1] == 2:
        return float(roc_auc_score(y, proba[:, 1]))
    labels = np.arange(proba.shape[1])
    return float(roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=labels))


def _category_frequencies(
    codes: pd.Series, y: np.ndarray, n_classes: int, folds: list[tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    """Out-of-fold class frequencies per category (missing is a category; smoothed)."""
    levels = codes.fillna(-1).to_numpy()
    prior = np.bincount(y, minlength=n_classes) / len(y)
    proba = np.empty((len(y), n_classes))
    for fit, held in folds:
        counts = pd.crosstab(levels[fit], y[fit]).reindex(columns=range(n_classes), fill_value=0)
        table = (counts + prior).div(counts.sum(axis=1) + 1.0, axis=0)  # one pseudo-row
        looked_up = table.reindex(levels[held])
        proba[held] = np.where(looked_up.isna(), prior, looked_up.to_numpy())
    return proba


def _missing_separation(
    missing: np.ndarray, y: np.ndarray, classes: list[Any]
) -> tuple[float | None, str | None]:
    """The best one-vs-rest ROC AUC of the missing indicator, and that class."""
    if not missing.any() or missing.all():
        return None, None
    best, best_class = 0.0, None
    for index, label in enumerate(classes):
        positive = y == index
        if positive.all() or not positive.any():
            continue
        auc = float(roc_auc_score(positive, missing))
        auc = max(auc, 1.0 - auc)  # "present" separating the class is the same signal
        if auc > best:
            best, best_class = auc, str(label)
    return best, best_class


def _regression_scores(train: pd.DataFrame, schema: FeatureSchema, seed: int) -> list[FeatureScore]:
    y = schema.encode_target(train[schema.target.name])
    folds = list(KFold(n_splits=FOLDS, shuffle=True, random_state=seed).split(y))
    encoded = schema.encode(train)
    scores = []
    for index, model_column in enumerate(schema.columns):
        column = encoded[:, index]
        missing = np.isnan(column)
        predicted = np.empty(len(y))
        if model_column.categorical:
            levels = pd.Series(column).fillna(-1).to_numpy()
            for fit, held in folds:
                means = pd.Series(y[fit]).groupby(levels[fit]).agg(["sum", "count"])
                smoothed = (means["sum"] + y[fit].mean()) / (means["count"] + 1.0)
                predicted[held] = smoothed.reindex(levels[held]).fillna(y[fit].mean()).to_numpy()
            score = max(0.0, float(r2_score(y, predicted)))
        else:
            for fit, held in folds:
                tree = DecisionTreeRegressor(max_depth=8, min_samples_leaf=5, random_state=seed)
                tree.fit(column[fit, None], y[fit])
                predicted[held] = tree.predict(column[held, None])
            present = ~missing
            varies = present.sum() > 2 and np.ptp(column[present]) > 0
            rank = abs(spearmanr(column[present], y[present]).statistic) if varies else 0.0
            score = max(float(np.nan_to_num(rank)), float(r2_score(y, predicted)), 0.0)
        missing_score, side = None, None
        if missing.any() and not missing.all():
            auc = float(roc_auc_score(missing, y))
            missing_score = max(auc, 1.0 - auc)
            side = "high" if auc >= 0.5 else "low"
        scores.append(
            FeatureScore(
                feature=model_column.name,
                kind="categorical" if model_column.categorical else "numeric",
                score=score,
                missing_rate=float(missing.mean()),
                missing_score=missing_score,
                missing_class=None if side is None else f"{side} {schema.target.name}",
                kind_of_task="regression",
                source=model_column.feature,
            )
        )
    return scores


def feature_scores(train: pd.DataFrame, schema: FeatureSchema, seed: int) -> list[FeatureScore]:
    """Each feature's single-feature score on the training split (see the module doc)."""
    if schema.target.is_regression:
        return _regression_scores(train, schema, seed)
    y = schema.encode_target(train[schema.target.name])
    classes = list(schema.target.classes)
    splitter = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=seed)
    folds = list(splitter.split(np.zeros(len(y)), y))
    encoded = schema.encode(train)
    scores = []
    for index, model_column in enumerate(schema.columns):
        column = encoded[:, index]
        missing = np.isnan(column)
        if model_column.categorical:
            proba = _category_frequencies(pd.Series(column), y, len(classes), folds)
        else:
            proba = np.empty((len(y), len(classes)))
            for fit, held in folds:
                tree = DecisionTreeClassifier(max_depth=2, random_state=seed)
                tree.fit(column[fit, None], y[fit])
                fitted = tree.predict_proba(column[held, None])
                proba[np.ix_(held, tree.classes_)] = fitted
                proba[np.ix_(held, np.setdiff1d(np.arange(len(classes)), tree.classes_))] = 0.0
        missing_score, missing_class = _missing_separation(missing, y, classes)
        scores.append(
            FeatureScore(
                feature=model_column.name,
                kind="categorical" if model_column.categorical else "numeric",
                score=_auc(y, proba),
                missing_rate=float(missing.mean()),
                missing_score=missing_score,
                missing_class=missing_class,
                source=model_column.feature,
            )
        )
    return scores


def find_leaks(
    scores: list[FeatureScore], threshold: float, allow: list[str]
) -> list[FeatureScore]:
    """The features at or above ``threshold`` that ``prepare.allow`` does not list (a
    date's part is allowed with its date)."""
    return [
        s
        for s in scores
        if s.worst() >= threshold
        and s.feature not in allow
        and (s.source or s.feature) not in allow
    ]


def describe_leak(score: FeatureScore, threshold: float) -> str:
    """One line naming the feature, its scores and what they mean."""
    measure = "ROC AUC" if score.kind_of_task == "classification" else "score (R² or |Spearman|)"
    parts = [f"alone it predicts the target with {measure} {score.score:.4f}"]
    if score.missing_score is not None and score.missing_score >= threshold:
        separated = (
            f"class {score.missing_class!r}"
            if score.kind_of_task == "classification"
            else str(score.missing_class)
        )
        parts.append(
            f"whether it is missing alone separates {separated} "
            f"(ROC AUC {score.missing_score:.4f}, {score.missing_rate:.0%} missing)"
        )
    return f"feature {score.feature!r}: " + "; ".join(parts)


def quality_findings(
    frame: pd.DataFrame, schema: FeatureSchema, train: pd.DataFrame, test: pd.DataFrame
) -> dict[str, Any]:
    """What is worth a look but does not stop the stage (see the module doc)."""
    names = schema.feature_names
    target = schema.target.name
    missing = frame[names].isna().mean()
    shares = (
        pd.Series(dtype="float64")
        if schema.target.is_regression
        else frame[target].value_counts(normalize=True)
    )
    features_only = [*names]
    train_keys = set(map(tuple, train[features_only].astype(str).to_numpy()))
    overlap = sum(tuple(row) in train_keys for row in test[features_only].astype(str).to_numpy())
    return {
        "mostly_missing": {
            str(k): round(float(v), 4) for k, v in missing[missing > MOSTLY_MISSING].items()
        },
        "minority_classes": {
            str(k): round(float(v), 4) for k, v in shares[shares < IMBALANCE].items()
        },
        "duplicate_rows": int(frame.duplicated(subset=[*names, target]).sum()),
        "test_rows_in_train": int(overlap),
    }


def quality_warnings(findings: dict[str, Any]) -> list[str]:
    """The findings as lines for the log (empty when there is nothing to say)."""
    lines = []
    for name, share in findings["mostly_missing"].items():
        lines.append(f"column {name!r} is {share:.0%} missing")
    for label, share in findings["minority_classes"].items():
        lines.append(f"class {label!r} is only {share:.1%} of the rows (heavy imbalance)")
    if findings["duplicate_rows"]:
        lines.append(f"{findings['duplicate_rows']} duplicate row(s) (features and label)")
    if findings["test_rows_in_train"]:
        lines.append(
            f"{findings['test_rows_in_train']} test row(s) identical to a training row: "
            "test metrics may be optimistic"
        )
    return lines
