"""The predictor's numeric fast path (a float64 matrix) gives exactly the frame path's answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xgboost as xgb

from tabserve.bundle import Lineage
from tabserve.predictor import Predictor
from tabserve.schema import infer_schema


def _predictor() -> tuple[Predictor, list[dict[str, object]]]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(200, 4)), columns=["a", "b c", "d", "e"])
    frame.loc[::7, "d"] = np.nan
    frame["y"] = (frame["a"] + frame["b c"] > 0).astype(int)
    schema = infer_schema(frame, "y")
    x = schema.to_frame(frame.drop(columns=["y"]))
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "nthread": 1, "seed": 0},
        xgb.DMatrix(x, label=frame["y"]),
        10,
    )
    lineage = Lineage(
        model_name="t",
        registry_version="1",
        mlflow_run_id="r",
        data_md5={},
        git_commit="c",
        params={},
        metrics={},
        model_sha256="0" * 64,
        created_at="2026-01-01T00:00:00+00:00",
    )
    rows = [
        {k: (None if pd.isna(v) else v) for k, v in r.items()}
        for r in frame.drop(columns=["y"]).head(30).to_dict("records")
    ]
    return Predictor(booster, schema, lineage, version="v1"), rows


def test_matrix_and_frame_give_the_same_answers() -> None:
    predictor, rows = _predictor()
    assert predictor._numeric_only
    frame = predictor.frame(rows)
    expected = predictor.booster.predict(xgb.DMatrix(frame)).astype(np.float64)
    assert np.array_equal(predictor.predict_proba(rows)[:, 1], expected)
    contribs = predictor.booster.predict(xgb.DMatrix(frame), pred_contribs=True)
    explained = predictor.explain(rows)
    assert [e["base_value"] for e in explained] == [float(c[-1]) for c in contribs]
    assert [list(e["contributions"].values()) for e in explained] == [
        [float(v) for v in c[:-1]] for c in contribs
    ]


def test_values_float_cannot_take_fall_back_to_the_frame() -> None:
    predictor, rows = _predictor()
    odd = [{**rows[0], "a": "0.5"}, {**rows[1], "d": pd.NA}]
    expected = predictor.booster.predict(xgb.DMatrix(predictor.frame(odd))).astype(np.float64)
    assert np.array_equal(predictor.predict_proba(odd)[:, 1], expected)
    assert np.array_equal(
        predictor.predict_proba(iter(rows[:3])), predictor.predict_proba(rows[:3])
    )
