"""The schema's one encoding (a category-code matrix) gives exactly the pandas-frame answers.

The models are trained the way the pipeline trains them (on ``FeatureSchema.to_frame``,
pandas categoricals in schema order); the predictor serves them from
``FeatureSchema.encode``. Both paths must agree bit for bit, for predictions and
explanations, binary and multiclass, with missing values and every category, the last
one included.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from tabserve.core.bundle import Lineage
from tabserve.core.predictor import Predictor
from tabserve.core.schema import FeatureSchema
from tabserve.core.schema_inference import infer_schema

LINEAGE = Lineage(
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


def _frame(n_classes: int, rows: int = 600) -> pd.DataFrame:
    rng = np.random.default_rng(n_classes)
    frame = pd.DataFrame(
        {
            "colour": pd.Series(rng.choice(list("abcdefg"), rows), dtype="str"),
            "size": rng.choice(["S", "M", "L"], rows).astype(object),
            "x": rng.normal(size=rows),
            "code": rng.choice([1, 2, 3, 4], rows),  # integers, as text categories below
            "y z": rng.normal(size=rows),
        }
    )
    frame["code"] = frame["code"].astype(str)
    frame.loc[::9, "size"] = None
    frame.loc[::11, "x"] = np.nan
    score = frame["x"].fillna(0) + (frame["colour"] > "c") + (frame["size"] == "L")
    frame["target"] = pd.qcut(score, n_classes, labels=False).astype(int)
    return frame


def _model(n_classes: int) -> tuple[Predictor, FeatureSchema, pd.DataFrame]:
    frame = _frame(n_classes)
    schema = infer_schema(frame, "target")
    objective = (
        {"objective": "binary:logistic"}
        if n_classes == 2
        else {"objective": "multi:softprob", "num_class": n_classes}
    )
    booster = xgb.train(
        {**objective, "max_depth": 4, "nthread": 1, "seed": 0, "max_cat_to_onehot": 1},
        xgb.DMatrix(
            schema.to_frame(frame),
            label=schema.encode_target(frame["target"]),
            enable_categorical=True,
        ),
        30,
    )
    return Predictor(booster, schema, LINEAGE, version="v1"), schema, frame


def _every_category_rows(schema: FeatureSchema, frame: pd.DataFrame) -> list[dict[str, object]]:
    """Every category of every categorical (the last included) and missing, on real rows."""
    base = frame.drop(columns=["target"]).astype(object).where(frame.notna(), None)
    records = base.head(40).to_dict("records")
    rows = []
    for spec in schema.features:
        if spec.kind != "categorical":
            continue
        for value, record in zip([*spec.categories, None], itertools.cycle(records), strict=False):
            rows.append({**record, spec.name: value})
    rows += [{**records[0], "x": None}, {**records[1], "y z": -1.0}]  # -1.0 is a number
    return rows


@pytest.mark.parametrize("n_classes", [2, 4])
def test_code_matrix_predictions_equal_the_frame_path_bit_for_bit(n_classes: int) -> None:
    predictor, schema, frame = _model(n_classes)
    rows = _every_category_rows(schema, frame)
    assert schema.has_categoricals
    expected = predictor.booster.inplace_predict(schema.to_frame(rows))
    got = predictor.booster.inplace_predict(schema.encode(rows))
    assert np.array_equal(got, expected)
    proba = predictor.predict_proba(rows)
    expected_proba = np.asarray(expected, dtype=np.float64)
    if n_classes == 2:
        expected_proba = np.column_stack([1.0 - expected_proba, expected_proba])
    assert np.array_equal(proba, expected_proba)


@pytest.mark.parametrize("n_classes", [2, 4])
def test_code_matrix_explanations_equal_the_frame_path_bit_for_bit(n_classes: int) -> None:
    predictor, schema, frame = _model(n_classes)
    rows = _every_category_rows(schema, frame)
    contribs = predictor.booster.predict(
        xgb.DMatrix(schema.to_frame(rows), enable_categorical=True), pred_contribs=True
    )
    for row_index, answer in enumerate(predictor.explain(rows)):
        explained = (
            contribs[row_index]
            if n_classes == 2
            else contribs[row_index, schema.target.classes.index(answer["explained_class"])]
        )
        assert answer["base_value"] == float(explained[-1])
        assert list(answer["contributions"].values()) == [float(v) for v in explained[:-1]]


def test_frames_and_rows_encode_alike_whatever_the_text_dtype() -> None:
    _, schema, frame = _model(2)
    features = frame.drop(columns=["target"])
    rows = features.astype(object).where(features.notna(), None).to_dict("records")
    from_rows = schema.encode(rows)
    assert np.array_equal(schema.encode(features), from_rows, equal_nan=True)  # pandas 3 str
    as_object = features.astype({"colour": object})
    assert np.array_equal(schema.encode(as_object), from_rows, equal_nan=True)
    # Codes follow the schema's category order; unknown categories are missing.
    colour = schema.feature_names.index("colour")
    spec = schema.feature("colour")
    coded = schema.encode([{**rows[0], "colour": c} for c in [*spec.categories, "zzz"]])
    assert coded[:-1, colour].tolist() == list(range(len(spec.categories)))
    assert np.isnan(coded[-1, colour])


def test_numbers_for_text_categories_and_odd_values_follow_the_frame_rules() -> None:
    _, schema, frame = _model(2)
    row = frame.drop(columns=["target"]).astype(object).where(frame.notna(), None).iloc[0]
    row = row.to_dict()
    odd = [{**row, "code": 3}, {**row, "code": 3.0}, {**row, "x": "0.5"}, {**row, "x": pd.NA}]
    assert np.array_equal(schema.encode(odd), schema.encode(pd.DataFrame(odd)), equal_nan=True)
    assert schema.encode(odd)[0, schema.feature_names.index("code")] == float(
        schema.feature("code").categories.index("3")
    )
    assert schema.encode(iter(odd[:2])).shape == (2, len(schema.features))


def test_rows_in_schema_order_and_in_any_other_order_encode_alike() -> None:
    """Validated rows (every feature, schema order) take the values-only path; other
    rows the lookups: both must give the same matrix, odd values included."""
    _, schema, frame = _model(3)
    features = frame.drop(columns=["target"])
    rows = features.astype(object).where(features.notna(), None).to_dict("records")[:40]
    rows += [{**rows[0], "code": 3}, {**rows[0], "code": 3.0}, {**rows[0], "colour": "zzz"}]
    rows += [{**rows[0], "colour": None}, {**rows[0], "x": None}]
    assert all(list(row) == schema.feature_names for row in rows)
    shuffled = [dict(reversed(list(row.items()))) for row in rows]
    assert np.array_equal(schema.encode(rows), schema.encode(shuffled), equal_nan=True)
    mixed = [rows[0], shuffled[1], rows[2], {k: v for k, v in rows[3].items() if v is not None}]
    assert np.array_equal(
        schema.encode(mixed), schema.encode([rows[0], rows[1], rows[2], rows[3]]), equal_nan=True
    )
    text_in_numbers = [{**rows[0], "x": "0.5"}, {**rows[1], "x": "n/a"}]
    assert np.array_equal(
        schema.encode(text_in_numbers),
        schema.encode(pd.DataFrame(text_in_numbers)),
        equal_nan=True,
    )


def test_validated_rows_are_mappings_of_their_values_and_encode_like_dicts() -> None:
    from tabserve.core.schema import SchemaRow
    from tabserve.core.validation import RequestValidator

    _, schema, frame = _model(3)
    features = frame.drop(columns=["target"])
    dicts = features.astype(object).where(features.notna(), None).to_dict("records")[:30]
    body = json.dumps({"rows": dicts}).encode()
    rows = RequestValidator(schema, 100).validated_rows(body)
    assert all(type(row) is SchemaRow for row in rows)
    assert rows == dicts and [dict(row) for row in rows] == dicts
    first = rows[0]
    assert list(first) == schema.feature_names and len(first) == len(schema.features)
    assert first["colour"] == dicts[0]["colour"] and first.get("nope") is None
    assert np.array_equal(schema.encode(rows), schema.encode(dicts), equal_nan=True)
    # A row made for another schema object is read through its names, not its positions.
    other = infer_schema(frame[["target", *reversed(features.columns)]], "target")
    foreign = [other.row([row[n] for n in other.feature_names]) for row in dicts]
    assert np.array_equal(schema.encode(foreign), schema.encode(dicts), equal_nan=True)
