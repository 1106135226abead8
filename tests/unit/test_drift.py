"""Drift in the pure code: the reference profile, PSI, and the rolling window."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from tabserve.core.drift import (
    DriftWindow,
    FeatureBinner,
    FeatureProfile,
    PredictionProfile,
    Reference,
    bin_numbers,
    build_reference,
    compare,
    feature_bins,
    psi,
)
from tabserve.core.predictor import Predictor
from tabserve.core.schema_inference import infer_schema


def _model() -> tuple[Predictor, pd.DataFrame]:
    rng = np.random.default_rng(0)
    n = 2000
    frame = pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "z": rng.uniform(0, 10, n),
            "c": rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1]),
        }
    )
    frame.loc[::20, "z"] = np.nan
    frame["y"] = (frame["x"] + (frame["c"] == "b") > 0.3).astype(int)
    schema = infer_schema(frame, "y")
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
        xgb.DMatrix(schema.to_frame(frame), label=frame["y"], enable_categorical=True),
        20,
    )
    return Predictor(booster, schema, None, version="t"), frame


def test_psi_is_zero_for_equal_shares_and_grows_with_the_shift() -> None:
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert 0 < psi([0.5, 0.5], [0.55, 0.45]) < 0.1 < psi([0.5, 0.5], [0.8, 0.2])
    assert np.isfinite(psi([0.5, 0.5, 0.0], [0.4, 0.4, 0.2]))  # an empty reference bin


def test_reference_profile_of_the_training_data() -> None:
    predictor, frame = _model()
    schema = predictor.schema
    reference = build_reference(schema, schema.encode(frame), predictor.predict(frame))
    x, z, c = reference.features
    assert len(x.edges or []) == 9 and sum(x.shares) == pytest.approx(1)
    assert all(s == pytest.approx(0.1, abs=0.01) for s in x.shares)  # deciles
    assert z.missing_rate == pytest.approx(0.05)
    assert c.labels == ["a", "b", "c"] and c.shares == pytest.approx([0.6, 0.3, 0.1], abs=0.03)
    assert reference.prediction.statistic == "positive_probability"
    assert set(reference.prediction.class_shares or {}) == {"0", "1"}


def test_the_window_sees_a_shifted_feature_and_forgets_old_rows() -> None:
    predictor, frame = _model()
    schema = predictor.schema
    features = frame.drop(columns=["y"])
    reference = build_reference(schema, schema.encode(frame), predictor.predict(frame))
    now = [0.0]
    window = DriftWindow(reference, schema, max_rows=500, max_age_s=60, clock=lambda: now[0])
    same = features.iloc[:500]
    window.add(schema.encode(same), predictor.predict(same))
    calm = window.report()
    assert calm.rows == 500 and max(calm.feature_psi.values()) < 0.1
    assert calm.prediction_psi is not None and calm.prediction_psi < 0.1

    shifted = features.iloc[500:1000].assign(x=lambda f: f["x"] + 3)  # three std devs
    now[0] = 10
    window.add(schema.encode(shifted), predictor.predict(shifted))  # replaces the 500 above
    drifted = window.report()
    assert drifted.rows == 500
    assert (
        drifted.feature_psi["x"] > 1 > 0.1 > max(drifted.feature_psi["z"], drifted.feature_psi["c"])
    )
    assert drifted.prediction_psi is not None and drifted.prediction_psi > 0.2

    missing = features.iloc[:200].assign(z=np.nan)
    now[0] = 80  # the shifted rows are now older than 60 s
    window.add(schema.encode(missing))
    recent = window.report()
    assert recent.rows == 200 and recent.missing_delta["z"] == pytest.approx(0.95)
    assert recent.prediction_psi is None  # rows without answers (explanations)


def test_compare_matches_the_window() -> None:
    predictor, frame = _model()
    schema = predictor.schema
    reference = build_reference(schema, schema.encode(frame), predictor.predict(frame))
    bins = feature_bins(reference, schema.encode(frame.iloc[:300]))
    assert compare(reference, bins).rows == 300


def _one_column_at_a_time(reference: Reference, matrix: np.ndarray) -> np.ndarray:
    """The bins as the window computed them before the binner: a NumPy call per column."""
    bins = np.empty(matrix.shape, dtype=np.int64)
    for index, profile in enumerate(reference.features):
        column = matrix[:, index]
        if profile.kind == "numeric":
            bins[:, index] = bin_numbers(column, profile.edges or [])
        else:
            bins[:, index] = np.where(np.isnan(column), -1, column)
    return bins


def test_the_binner_bins_every_column_as_bin_numbers_does_one_column() -> None:
    predictor, frame = _model()
    schema = predictor.schema
    reference = build_reference(schema, schema.encode(frame), predictor.predict(frame))
    matrix = schema.encode(frame.iloc[:400]).copy()
    x, z = (schema.feature_names.index(name) for name in ("x", "z"))
    edges = reference.features[x].edges or []
    # values on the edges, just either side of them, infinite and missing
    matrix[: len(edges), x] = edges
    matrix[len(edges) : 2 * len(edges), x] = np.nextafter(edges, np.inf)
    matrix[2 * len(edges) : 2 * len(edges) + 3, x] = [np.inf, -np.inf, np.nan]
    bins = FeatureBinner(reference)(matrix)
    assert bins.tolist() == _one_column_at_a_time(reference, matrix).tolist()
    assert (bins[:, z] == -1).sum() == np.isnan(matrix[:, z]).sum() > 0
    assert bins.dtype == np.int64


def _profile(name: str, kind: str, edges: list[float] | None) -> FeatureProfile:
    bins = len(edges) + 1 if edges is not None else 3
    return FeatureProfile(
        name=name,
        kind=kind,  # type: ignore[arg-type]
        edges=edges,
        labels=[str(i) for i in range(bins)],
        shares=[1 / bins] * bins,
        missing_rate=0.0,
    )


@pytest.mark.parametrize(
    "profiles",
    [
        [_profile("a", "categorical", None), _profile("b", "categorical", None)],  # no numbers
        [_profile("a", "numeric", []), _profile("b", "numeric", [])],  # constant columns
        [_profile("a", "numeric", [0.5]), _profile("b", "numeric", [-1.0, 0.0, 2.0])],
    ],
    ids=["all-categorical", "no-edges", "uneven-edges"],
)
def test_the_binner_handles_tables_without_numbers_and_features_without_edges(
    profiles: list[FeatureProfile],
) -> None:
    prediction = PredictionProfile(statistic="class", labels=["0", "1"], shares=[0.5, 0.5])
    reference = Reference(rows=10, features=profiles, prediction=prediction)
    matrix = np.array([[0.0, 2.0], [1.0, np.nan], [2.0, -1.0], [np.nan, 0.1]])
    bins = FeatureBinner(reference)(matrix)
    assert bins.tolist() == _one_column_at_a_time(reference, matrix).tolist()
