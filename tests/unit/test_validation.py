"""The request model generated from the FeatureSchema."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tabserve.core.errors import MalformedRequestError, PayloadTooLargeError, RequestValidationError
from tabserve.core.schema import FeatureSchema, FeatureSpec, TargetSpec
from tabserve.core.validation import RequestValidator
from tests.unit.test_validation_fast_path import MIXED as MIXED_SCHEMA

GOOD = {"bill length": 41.5, "mass": 3900, "island": "Dream", "grade": "2"}


@pytest.fixture
def schema() -> FeatureSchema:
    """A small schema with every kind of feature."""
    return MIXED_SCHEMA


def _validator(
    schema: FeatureSchema, max_rows: int = 5, unknown_category: str = "refuse"
) -> RequestValidator:
    """Refusing unknown categories (the tests of the ``missing`` policy say so)."""
    return RequestValidator(schema, max_rows=max_rows, unknown_category=unknown_category)  # type: ignore[arg-type]


def _details(schema: FeatureSchema, row: dict[str, Any]) -> list[dict[str, Any]]:
    with pytest.raises(RequestValidationError) as info:
        _validator(schema).validate({"rows": [row]})
    assert info.value.status == 422
    return info.value.details


def test_valid_rows_come_back_keyed_by_feature_name(schema: FeatureSchema) -> None:
    rows = _validator(schema).validate({"rows": [GOOD, {"bill length": 50, "island": "Biscoe"}]})
    assert rows[0] == {"bill length": 41.5, "mass": 3900.0, "island": "Dream", "grade": "2"}
    # Nullable features may be left out: they come back as None (missing for the model).
    assert rows[1] == {"bill length": 50.0, "mass": None, "island": "Biscoe", "grade": None}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 1e400])
def test_non_finite_numbers_are_refused(schema: FeatureSchema, value: float) -> None:
    (detail,) = _details(schema, {**GOOD, "bill length": value})
    assert detail["field"] == "bill length" and detail["row"] == 0
    assert "finite" in detail["message"]


@pytest.mark.parametrize("value", [1e300, -1e300, 3.5e38, -3.5e38])
def test_numbers_beyond_float32_are_refused(schema: FeatureSchema, value: float) -> None:
    """XGBoost reads float32: a larger finite float64 would reach the model as infinity."""
    (detail,) = _details(schema, {**GOOD, "bill length": value})
    assert detail["field"] == "bill length"
    assert "out of range" in detail["message"] and "32-bit" in detail["message"]
    body = json.dumps({"rows": [{**GOOD, "bill length": value}]}).encode()
    with pytest.raises(RequestValidationError):
        _validator(schema).validated_rows(body)
    assert _validator(schema).validate({"rows": [{**GOOD, "bill length": 3.4e38}]})


def test_nan_literal_in_json_is_refused(schema: FeatureSchema) -> None:
    body = b'{"rows": [{"bill length": NaN, "island": "Dream"}]}'
    with pytest.raises(RequestValidationError, match="invalid"):
        _validator(schema).validate_body(body)


@pytest.mark.parametrize("value", ["41.5", True, [1], {"a": 1}])
def test_numbers_must_be_json_numbers(schema: FeatureSchema, value: Any) -> None:
    (detail,) = _details(schema, {**GOOD, "bill length": value})
    assert detail["field"] == "bill length"


def test_null_only_for_nullable_features(schema: FeatureSchema) -> None:
    assert _validator(schema).validate({"rows": [{**GOOD, "mass": None, "grade": None}]})
    details = _details(schema, {**GOOD, "bill length": None, "island": None})
    assert {d["field"] for d in details} == {"bill length", "island"}


def test_unknown_category_names_field_and_allowed_values(schema: FeatureSchema) -> None:
    (detail,) = _details(schema, {**GOOD, "island": "Atlantis"})
    assert detail["field"] == "island"
    assert detail["allowed"] == ["Biscoe", "Dream"]
    assert "Atlantis" in detail["message"] and "Biscoe" in detail["message"]


def test_numeric_values_match_text_categories(schema: FeatureSchema) -> None:
    rows = _validator(schema).validate({"rows": [{**GOOD, "grade": 1}]})
    assert rows[0]["grade"] == "1"
    (detail,) = _details(schema, {**GOOD, "grade": 3})
    assert detail["allowed"] == ["1", "2"]


def test_unknown_fields_are_refused(schema: FeatureSchema) -> None:
    (detail,) = _details(schema, {**GOOD, "colour": "red"})
    assert detail["field"] == "colour"
    assert "unknown field" in detail["message"]


def test_missing_required_field_is_named(schema: FeatureSchema) -> None:
    row = {k: v for k, v in GOOD.items() if k != "island"}
    (detail,) = _details(schema, row)
    assert detail["field"] == "island"
    assert "missing" in detail["message"]


def test_errors_name_the_row(schema: FeatureSchema) -> None:
    with pytest.raises(RequestValidationError) as info:
        _validator(schema).validate({"rows": [GOOD, GOOD, {**GOOD, "island": "x"}]})
    assert [d["row"] for d in info.value.details] == [2]


@pytest.mark.parametrize(
    "payload", [{"rows": []}, {}, {"rows": GOOD}, [GOOD], {"rows": [GOOD], "extra": 1}]
)
def test_body_shape_is_checked(schema: FeatureSchema, payload: Any) -> None:
    with pytest.raises(RequestValidationError):
        _validator(schema).validate(payload)


def test_too_many_rows_is_413(schema: FeatureSchema) -> None:
    with pytest.raises(PayloadTooLargeError, match="maximum is 5"):
        _validator(schema, max_rows=5).validate({"rows": [GOOD] * 6})
    assert len(_validator(schema, max_rows=5).validate({"rows": [GOOD] * 5})) == 5


def test_integers_beyond_float_range_are_refused(schema: FeatureSchema) -> None:
    (detail,) = _details(schema, {**GOOD, "bill length": 10**400})
    assert "finite" in detail["message"]


@pytest.mark.parametrize(
    "body",
    [
        b"{bad json",
        b"",
        b"\xff\xfe",
        b'{"rows": [1,]}',
        b'{"rows": [{"bill length": 1' + b"0" * 5000 + b"}]}",
        b"[" * 100_000 + b"]" * 100_000,
        json.dumps({"rows": [GOOD]}).encode("utf-16"),
        json.dumps({"rows": [GOOD]}).encode("utf-32"),
        b"\xef\xbb\xbf" + json.dumps({"rows": [GOOD]}).encode(),
    ],
    ids=[
        "syntax",
        "empty",
        "not-utf8",
        "trailing-comma",
        "huge-integer",
        "deep-nesting",
        "utf-16",
        "utf-32",
        "utf-8-bom",
    ],
)
def test_malformed_json_is_400(schema: FeatureSchema, body: bytes) -> None:
    with pytest.raises(MalformedRequestError) as info:
        _validator(schema).validate_body(body)
    assert info.value.status == 400


def test_json_values_as_category_text() -> None:
    """Unlike in a frame, a JSON NaN is not "missing" and a list is not its text."""
    tricky = FeatureSchema(
        features=[
            FeatureSpec(
                name="c",
                kind="categorical",
                categories=["1", "2.5", "True", "[1]", "nan", "inf"],
                nullable=True,
            )
        ],
        target=TargetSpec(name="y", classes=[0, 1]),
    )
    validator = _validator(tricky, max_rows=10)
    good = [1, 1.0, 2.5, True, "[1]", "nan", None]
    rows = validator.validate({"rows": [{"c": v} for v in good]})
    assert [r["c"] for r in rows] == ["1", "1", "2.5", "True", "[1]", "nan", None]
    for bad in (float("nan"), float("inf"), [1], {"a": 1}):
        with pytest.raises(RequestValidationError) as info:
            validator.validate({"rows": [{"c": bad}]})
        assert info.value.details[0]["field"] == "c"


def test_an_unknown_category_is_missing_and_reported_by_default(schema: FeatureSchema) -> None:
    seen: list[str] = []
    validator = RequestValidator(schema, max_rows=5, on_unknown=seen.append)
    (row,) = validator.validate({"rows": [{**GOOD, "island": "Atlantis"}]})
    assert row["island"] is None and seen == ["island"]
    (fast,) = validator.validated_rows(
        json.dumps({"rows": [{**GOOD, "island": "Atlantis"}]}).encode()
    )
    assert fast["island"] is None and seen == ["island", "island"]
    assert validator.validate({"rows": [GOOD]})[0]["island"] == GOOD["island"]
    with pytest.raises(RequestValidationError):  # null stays refused where it was
        validator.validate({"rows": [{**GOOD, "island": None}]})
    with pytest.raises(RequestValidationError):  # and what is no category at all
        validator.validate({"rows": [{**GOOD, "island": ["Atlantis"]}]})


def test_an_error_lists_at_most_20_allowed_categories() -> None:
    import pandas as pd

    from tabserve.core.schema_inference import InferenceOptions, infer_schema

    frame = pd.DataFrame({"code": [f"c{i:03d}" for i in range(300)] * 2, "y": ["a", "b"] * 300})
    folded = infer_schema(frame, "y")
    assert len(folded.feature("code").categories or []) == 50  # 49 kept + the other level
    # A feature with an `other` level takes any value, even under `refuse`.
    kept = RequestValidator(folded, max_rows=5, unknown_category="refuse")
    assert kept.validate({"rows": [{"code": "never seen"}]})[0]["code"] == "(other)"
    options = InferenceOptions(max_categories=1000)
    many = infer_schema(frame, "y", options=options)
    validator = RequestValidator(many, max_rows=5, unknown_category="refuse")
    with pytest.raises(RequestValidationError) as info:
        validator.validate({"rows": [{"code": "never seen " * 1000}]})
    (detail,) = info.value.details
    assert len(detail["allowed"]) == 20 and detail["allowed_count"] == 300
    assert len(json.dumps(info.value.details)) < 2000
    assert "GET /model" in detail["message"]
