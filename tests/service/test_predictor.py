"""The predictor against the model's own output, on both real test models."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb

from tabserve.core.bundle import BundleIntegrityError
from tabserve.core.predictor import Predictor


@pytest.fixture(params=["binary", "multiclass"])
def built(request: pytest.FixtureRequest, models: dict[str, Any]) -> Any:
    return models[request.param]


def _direct_proba(model: Any, rows: list[dict]) -> np.ndarray:
    frame = model.schema.to_frame(rows)
    raw = model.booster.predict(xgb.DMatrix(frame, enable_categorical=True)).astype(np.float64)
    return np.column_stack([1 - raw, raw]) if raw.ndim == 1 else raw


def test_predictions_equal_the_models_own_output(built: Any) -> None:
    predictor = Predictor.from_bundle(built.path, version="v")
    rows = built.rows[:50]
    answers = predictor.predict(rows)
    expected = _direct_proba(built, rows)
    classes = built.schema.target.classes
    got = np.array([[a["probabilities"][str(c)] for c in classes] for a in answers])
    np.testing.assert_array_equal(got, expected)
    assert [a["label"] for a in answers] == [classes[i] for i in expected.argmax(axis=1)]
    # Row by row gives exactly the same numbers as the batch.
    single = [predictor.predict([row])[0] for row in rows[:10]]
    assert single == answers[:10]


def test_explanations_add_up_to_the_margin(built: Any) -> None:
    predictor = Predictor.from_bundle(built.path, version="v")
    rows = built.rows[:20]
    explained = predictor.explain(rows)
    margins = built.booster.predict(
        xgb.DMatrix(built.schema.to_frame(rows), enable_categorical=True), output_margin=True
    )
    classes = built.schema.target.classes
    for answer, margin in zip(explained, margins, strict=True):
        assert set(answer["contributions"]) == set(built.schema.feature_names)
        total = answer["base_value"] + sum(answer["contributions"].values())
        index = classes.index(answer["explained_class"])
        target = margin if np.ndim(margin) == 0 else margin[index]
        assert total == pytest.approx(float(target), abs=1e-4)


def test_global_importance_sums_to_one(built: Any) -> None:
    importance = Predictor.from_bundle(built.path, version="v").global_importance()
    assert list(importance) == built.schema.feature_names
    assert sum(importance.values()) == pytest.approx(1.0)


def test_a_tampered_bundle_is_refused(models: dict[str, Any], tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(models["binary"].path, copy)
    other = models["multiclass"].path / "model.ubj"
    shutil.copy(other, copy / "model.ubj")
    with pytest.raises(BundleIntegrityError, match="sha256"):
        Predictor.from_bundle(copy, version="v")


def test_a_schema_that_does_not_match_the_booster_is_refused(
    models: dict[str, Any],
) -> None:
    good = models["binary"]
    with pytest.raises(BundleIntegrityError, match="features"):
        Predictor(
            good.booster,
            models["multiclass"].schema,
            Predictor.from_bundle(good.path, version="v").lineage,
            version="v",
        )
