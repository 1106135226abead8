"""FeatureSchema inference, persistence and frame building."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tabserve.core.schema import FeatureSchema, category_text
from tabserve.core.schema_inference import infer_schema, is_id_like


@pytest.fixture
def mixed() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Unnamed: 0": range(8),
            "colour": pd.Series(
                ["red", "blue", None, "red", "green", "blue", "red", "blue"], dtype="str"
            ),
            "size": [1.5, 2.0, np.nan, 3.25, 1.0, 2.5, 4.0, 0.5],
            "count": [3, 1, 4, 1, 5, 9, 2, 6],
            "flag": [True, False, True, True, False, False, True, False],
            "label": ["yes", "no", "yes", "no", "yes", "no", "yes", "no"],
        }
    )


def test_infers_kinds_categories_ranges_and_nullability(mixed: pd.DataFrame) -> None:
    schema = infer_schema(mixed, "label")
    assert schema.feature_names == ["colour", "size", "count", "flag"]
    colour = schema.feature("colour")
    assert colour.kind == "categorical"
    assert colour.categories == ["blue", "green", "red"]
    assert colour.nullable
    assert colour.mode in {"red", "blue"}
    size = schema.feature("size")
    assert (size.kind, size.min, size.max, size.nullable) == ("numeric", 0.5, 4.0, True)
    assert size.median == 2.0
    count = schema.feature("count")
    assert count.integer and not count.nullable
    assert schema.feature("flag").categories == ["False", "True"]
    assert schema.target.classes == ["no", "yes"]
    assert schema.target.task == "binary"


def test_id_like_column_is_dropped_with_reason(mixed: pd.DataFrame) -> None:
    schema = infer_schema(mixed, "label")
    assert [d.name for d in schema.dropped] == ["Unnamed: 0"]
    assert "unique" in schema.dropped[0].reason


@pytest.mark.parametrize(
    ("values", "name", "expected"),
    [
        (list(range(100, 110)), "anything", True),  # consecutive integer counter
        ([f"cust-{i}" for i in range(10)], "customer", True),  # unique text per row
        ([5, 1, 9, 3, 7, 2, 8, 4, 6, 0], "customer_id", True),  # named like an id
        ([0.1 * i + 0.013 for i in range(10)], "measure", False),  # continuous feature
        ([1, 5, 9, 13, 2, 6, 10, 14, 3, 7], "score", False),  # unique but not a counter
        ([1, 2, 3, 4, 5, 6, 7, 8, 9, 9], "id", False),  # not unique
    ],
)
def test_is_id_like(values: list[object], name: str, expected: bool) -> None:
    assert is_id_like(pd.Series(values, name=name)) is expected


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1, "1"),
        (1.0, "1"),
        (np.int64(1), "1"),
        (np.float64(1.0), "1"),
        ("1", "1"),
        (2.5, "2.5"),
        (True, "True"),
        (np.bool_(False), "False"),
        ("red", "red"),
        (None, None),
        (float("nan"), None),
        (np.nan, None),
        (pd.NA, None),
    ],
)
def test_category_text_of_frame_values(value: object, text: str | None) -> None:
    """Frames (parquet, CSV, records): numbers match by text, NaN and NA are missing."""
    assert category_text(value) == text


def test_integer_string_and_multiclass_targets() -> None:
    ints = infer_schema(pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [2, 0, 1, 0]}), "y")
    assert ints.target.classes == [0, 1, 2]
    assert ints.target.task == "multiclass"
    text = infer_schema(pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": ["b", "a", "c"]}), "y")
    assert text.target.classes == ["a", "b", "c"]
    assert list(text.encode_target(pd.Series(["c", "a"]))) == [2, 0]
    # Labels read back from CSV or JSON as floats or strings map to the same class.
    assert list(ints.encode_target(pd.Series([2.0, 0.0]))) == [2, 0]
    assert list(ints.encode_target(pd.Series(["1"]))) == [1]
    with pytest.raises(ValueError, match="unknown target label"):
        ints.encode_target(pd.Series([7]))


def test_round_trip_and_to_frame_uses_schema_categories(mixed: pd.DataFrame, tmp_path) -> None:
    schema = infer_schema(mixed, "label")
    schema.save(tmp_path / "schema.json")
    loaded = FeatureSchema.load(tmp_path / "schema.json")
    assert loaded == schema
    frame = loaded.to_frame(
        [{"colour": "green", "size": 1, "count": 2, "flag": True}, {"colour": None}]
    )
    assert list(frame.columns) == schema.feature_names
    assert list(frame["colour"].cat.categories) == ["blue", "green", "red"]
    assert frame["colour"].tolist()[0] == "green"
    assert pd.isna(frame["colour"].tolist()[1])
    assert frame["size"].dtype == np.float64
    assert np.isnan(frame.loc[1, "size"])
    assert frame["flag"].tolist()[0] == "True"


def test_to_frame_is_identical_for_pandas3_str_columns_and_python_rows(mixed: pd.DataFrame) -> None:
    """Training reads parquet (pandas `str` dtype), serving gets JSON rows: same codes."""
    schema = infer_schema(mixed, "label")
    from_frame = schema.to_frame(mixed)
    from_rows = schema.to_frame(mixed.astype(object).where(mixed.notna(), None).to_dict("records"))
    pd.testing.assert_frame_equal(
        from_frame.reset_index(drop=True), from_rows.reset_index(drop=True)
    )
    assert from_frame["colour"].cat.codes.tolist() == from_rows["colour"].cat.codes.tolist()


def test_example_row_is_valid(mixed: pd.DataFrame) -> None:
    schema = infer_schema(mixed, "label")
    row = schema.example_row()
    assert set(row) == set(schema.feature_names)
    assert row["colour"] in schema.feature("colour").categories
    assert isinstance(row["count"], int)
