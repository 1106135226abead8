"""Drift: the training reference profile, and a rolling window of served rows against it.

At ``train`` time, :func:`build_reference` profiles the data the model learnt from
(``reference.json`` in the bundle, sha256-checked like the model):

- each numeric feature: the edges of its deciles on the training split, and the share
  of training rows in each of the ten bins they make;
- each categorical feature: the share of each category;
- each feature's missing rate;
- the predictions, on the validation split (unseen by the trees, so closer to what
  served rows get than the over-confident training predictions): the predicted class
  of a multiclass model, the probability of the positive class of a binary one, the
  value of a regression model, binned like a numeric feature (plus the class shares).

In the service, :class:`DriftWindow` keeps the bins of the last served rows (size
and, optionally, age bounded) and computes, at most once a second, each feature's
population stability index (PSI) against the reference, the change of its missing
rate, and the PSI of the predictions. PSI is ``sum((a - e) * ln(a / e))`` over the
bins of the served (``a``) and reference (``e``) shares: under 0.1 the distributions
agree, 0.1 to 0.2 is a moderate shift, over 0.2 a significant one.

Each worker process keeps its own window of the rows it served (the kernel spreads
connections over the workers, so each window samples the same traffic); Prometheus'
multiprocess mode then exports the largest PSI among live workers and the sum of
their window sizes (see ``tabserve/serving/metrics.py``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from itertools import pairwise
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from tabserve.core.schema import FeatureSchema

QUANTILE_BINS = 10
EPSILON = 1e-4  # a share never observed counts as this, so the PSI stays finite


class FeatureProfile(BaseModel):
    """One feature of the reference: its bins and the training shares in them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: Literal["numeric", "categorical"]
    # numeric: interior bin edges (bin i holds edges[i-1] < x <= edges[i]);
    # categorical: none, the bins are the categories in schema order.
    edges: list[float] | None = None
    labels: list[str]  # one per bin, for reports
    shares: list[float]  # of the non-missing training rows, per bin
    missing_rate: float


class PredictionProfile(BaseModel):
    """The reference distribution of the model's predictions (validation split)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    statistic: Literal["class", "positive_probability", "value"]
    edges: list[float] | None = None
    labels: list[str]
    shares: list[float]
    class_shares: dict[str, float] | None = None  # classifiers: predicted classes


class Reference(BaseModel):
    """The reference profile of one model (``reference.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rows: int
    features: list[FeatureProfile]
    prediction: PredictionProfile


def psi(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray) -> float:
    """The population stability index of ``actual`` shares against ``expected`` ones."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), EPSILON)
    a = np.maximum(np.asarray(actual, dtype=np.float64), EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def _edges(values: np.ndarray) -> list[float]:
    """Interior decile edges of ``values`` (distinct, so no bin is empty by construction)."""
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return []
    quantiles = np.quantile(finite, np.linspace(0, 1, QUANTILE_BINS + 1)[1:-1])
    return sorted({float(q) for q in quantiles})


def _edge_labels(edges: list[float]) -> list[str]:
    if not edges:
        return ["all"]
    labels = [f"≤ {edges[0]:.4g}"]
    labels += [f"({a:.4g}, {b:.4g}]" for a, b in pairwise(edges)]
    return [*labels, f"> {edges[-1]:.4g}"]


def bin_numbers(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """Bin index of each value (``len(edges) + 1`` bins); NaN gets -1."""
    bins = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="left")
    bins[np.isnan(values)] = -1
    return bins


def shares(bins: np.ndarray, size: int) -> list[float]:
    """The share of non-missing values (bins ``>= 0``) in each of ``size`` bins."""
    present = bins[bins >= 0]
    if len(present) == 0:
        return [0.0] * size
    counts = np.bincount(present, minlength=size)[:size]
    return [float(c) for c in counts / counts.sum()]


def prediction_statistic(schema: FeatureSchema, answers: Sequence[dict[str, Any]]) -> np.ndarray:
    """The one number per answer the prediction profile bins (see :class:`Reference`)."""
    if schema.target.is_regression:
        return np.array([a["value"] for a in answers], dtype=np.float64)
    classes = list(schema.target.classes)
    if len(classes) == 2:
        positive = str(classes[1])
        return np.array([a["probabilities"][positive] for a in answers], dtype=np.float64)
    index = {str(c): i for i, c in enumerate(classes)}
    return np.array([index[str(a["label"])] for a in answers], dtype=np.float64)


def build_reference(
    schema: FeatureSchema, train: np.ndarray, valid_answers: Sequence[dict[str, Any]]
) -> Reference:
    """The reference profile from the encoded training split and the model's answers on
    the validation split (see the module doc)."""
    features = []
    specs = {spec.name: spec for spec in schema.features}
    # One profile per model column: a date's or timestamp's parts each drift on their own.
    for index, model_column in enumerate(schema.columns):
        column = train[:, index]
        if model_column.categorical:
            categories = specs[model_column.feature].categories or []
            codes = np.where(np.isnan(column), -1, column).astype(np.int64)
            features.append(
                FeatureProfile(
                    name=model_column.name,
                    kind="categorical",
                    labels=list(categories),
                    shares=shares(codes, len(categories)),
                    missing_rate=float(np.isnan(column).mean()),
                )
            )
            continue
        edges = _edges(column)
        features.append(
            FeatureProfile(
                name=model_column.name,
                kind="numeric",
                edges=edges,
                labels=_edge_labels(edges),
                shares=shares(bin_numbers(column, edges), len(edges) + 1),
                missing_rate=float(np.isnan(column).mean()),
            )
        )
    statistic = prediction_statistic(schema, valid_answers)
    class_shares = None
    if not schema.target.is_regression:
        labels = pd.Series([str(a["label"]) for a in valid_answers])
        class_shares = {str(c): float((labels == str(c)).mean()) for c in schema.target.classes}
    if schema.target.is_regression or len(schema.target.classes) == 2:
        edges = _edges(statistic)
        prediction = PredictionProfile(
            statistic="value" if schema.target.is_regression else "positive_probability",
            edges=edges,
            labels=_edge_labels(edges),
            shares=shares(bin_numbers(statistic, edges), len(edges) + 1),
            class_shares=class_shares,
        )
    else:
        prediction = PredictionProfile(
            statistic="class",
            labels=[str(c) for c in schema.target.classes],
            shares=shares(statistic.astype(np.int64), len(schema.target.classes)),
            class_shares=class_shares,
        )
    return Reference(rows=len(train), features=features, prediction=prediction)


class FeatureBinner:
    """Bins encoded matrices against one reference, every column at once.

    A numeric value's bin is the number of its feature's edges below it (what
    :func:`bin_numbers` gives: ``searchsorted`` on the left), counted for every numeric
    feature in one comparison against the edges padded with +inf; a categorical's bin is
    its code. A NumPy call per column cost the service about 4 % of its CPU on a
    30-feature model; this is 170 against 30 us for a batch of 168 rows.
    """

    def __init__(self, reference: Reference) -> None:
        kinds = [profile.kind for profile in reference.features]
        self.numeric = [i for i, kind in enumerate(kinds) if kind == "numeric"]
        self.categorical = [i for i, kind in enumerate(kinds) if kind == "categorical"]
        edges = [reference.features[i].edges or [] for i in self.numeric]
        # (edge rank, feature): the comparison is summed over the ranks
        self.edges = np.full((max(map(len, edges), default=0), len(edges)), np.inf)
        for column, feature_edges in enumerate(edges):
            self.edges[: len(feature_edges), column] = feature_edges

    def __call__(self, matrix: np.ndarray) -> np.ndarray:
        """The bin of every cell of an encoded matrix, ``(rows, features)``; missing is -1."""
        bins = np.empty(matrix.shape, dtype=np.int64)
        above = matrix[None, :, self.numeric] > self.edges[:, None, :]
        # summed as bytes into 16-bit counts: 5 times faster than summing bools
        bins[:, self.numeric] = np.add.reduce(above.view(np.uint8), axis=0, dtype=np.uint16)
        bins[:, self.categorical] = np.nan_to_num(matrix[:, self.categorical], nan=-1)
        bins[np.isnan(matrix)] = -1
        return bins


def feature_bins(reference: Reference, matrix: np.ndarray) -> np.ndarray:
    """The bin of every cell of an encoded matrix, ``(rows, features)``; missing is -1."""
    return FeatureBinner(reference)(matrix)


def prediction_bins(reference: Reference, statistic: np.ndarray) -> np.ndarray:
    """The prediction profile's bin of each prediction statistic."""
    profile = reference.prediction
    if profile.statistic == "class":
        return statistic.astype(np.int64)
    return bin_numbers(statistic, profile.edges or [])


class DriftReport(BaseModel):
    """What a window says against the reference (also what the gauges publish)."""

    rows: int
    feature_psi: dict[str, float]
    missing_delta: dict[str, float]
    prediction_psi: float | None


def compare(
    reference: Reference, bins: np.ndarray, predicted: np.ndarray | None = None
) -> DriftReport:
    """PSI and missing-rate change of binned rows (and their predictions) against the
    reference."""
    feature_psi, missing_delta = {}, {}
    for index, profile in enumerate(reference.features):
        column = bins[:, index]
        feature_psi[profile.name] = psi(profile.shares, shares(column, len(profile.shares)))
        missing = float((column < 0).mean()) if len(column) else 0.0
        missing_delta[profile.name] = missing - profile.missing_rate
    prediction_psi = None
    if predicted is not None and len(predicted):
        served = shares(predicted, len(reference.prediction.shares))
        prediction_psi = psi(reference.prediction.shares, served)
    return DriftReport(
        rows=len(bins),
        feature_psi=feature_psi,
        missing_delta=missing_delta,
        prediction_psi=prediction_psi,
    )


class DriftWindow:
    """The bins of the last served rows of one worker, compared with the reference.

    Args:
        reference: the model's reference profile.
        schema: the model's schema (for the prediction statistic).
        max_rows: the most rows the window holds (the oldest leave first).
        max_age_s: rows older than this leave too; None: only ``max_rows`` bounds it.
        clock: time source (seconds).
    """

    def __init__(
        self,
        reference: Reference,
        schema: FeatureSchema,
        max_rows: int,
        max_age_s: float | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        self.reference = reference
        self.schema = schema
        self.max_rows = max_rows
        self.max_age_s = max_age_s
        self._clock = clock
        width = len(reference.features)
        self._bins = np.full((max_rows, width), -2, dtype=np.int32)  # -2: empty slot
        self._predicted = np.full(max_rows, -2, dtype=np.int32)
        self._stamps = np.full(max_rows, -math.inf)
        self._next = 0
        self._lock = threading.Lock()
        self._binner = FeatureBinner(reference)

    def add(self, matrix: np.ndarray, answers: Sequence[dict[str, Any]] | None = None) -> None:
        """Add encoded rows (and the model's answers to them, for prediction drift)."""
        rows = len(matrix)
        if rows == 0:
            return
        if answers is not None:
            predicted = prediction_bins(self.reference, prediction_statistic(self.schema, answers))
        else:
            predicted = np.full(rows, -2)
        if rows > self.max_rows:  # only the last rows stay: bin only those
            matrix, predicted = matrix[-self.max_rows :], predicted[-self.max_rows :]
            rows = self.max_rows
        bins = self._binner(matrix)
        slots = (self._next + np.arange(rows)) % self.max_rows
        now = self._clock()
        with self._lock:
            self._bins[slots] = bins
            self._predicted[slots] = predicted
            self._stamps[slots] = now
            self._next = int((self._next + rows) % self.max_rows)

    def report(self) -> DriftReport:
        """The window's drift against the reference, now."""
        with self._lock:
            filled = self._stamps > -math.inf
            if self.max_age_s is not None:
                filled &= self._stamps >= self._clock() - self.max_age_s
            bins = self._bins[filled]
            predicted = self._predicted[filled]
        predicted = predicted[predicted != -2]
        return compare(self.reference, bins.astype(np.int64), predicted.astype(np.int64))
