"""Real-world columns: dates and timestamps, identifiers, free text, many categories,
CSV dialects, and categories never seen in training."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tabserve.core.encoding import unknown_categories
from tabserve.core.schema import FeatureSchema
from tabserve.core.schema_inference import (
    OTHER,
    InferenceOptions,
    TypeMismatchError,
    infer_schema,
)
from tabserve.core.validation import RequestValidationError, RequestValidator
from tabserve.core.when import DATE_PARTS, TIMESTAMP_PARTS, encode_when, parse_when
from tabserve.http.openapi import public_row
from training.csv_dialect import sniff
from training.errors import DataError
from training.ingest import read_table
from training.params import CsvParams

ROWS = 400


def _frame(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    days = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 700, ROWS), unit="D")
    seconds = pd.to_timedelta(rng.integers(0, 86_400 * 30, ROWS), unit="s")
    words = ["late delivery", "broken lid", "great service", "would buy again", "too small"]
    return pd.DataFrame(
        {
            "visit": [d.date().isoformat() for d in days],
            "signup_ts": [(pd.Timestamp("2025-03-01") + s).isoformat() for s in seconds],
            "order_ref": [f"ORD-{rng.integers(10**9)}-{i}" for i in range(ROWS)],
            "notes": [" ".join(rng.choice(words, 4)) + f" (ticket {i})" for i in range(ROWS)],
            # 120 stations, a few frequent: more levels than max_categories keeps.
            "station": [f"S{int(v)}" for v in np.minimum(rng.zipf(1.6, ROWS), 120)],
            "amount": rng.normal(50, 10, ROWS).round(2),
            "label": rng.choice(["yes", "no"], ROWS),
        }
    )


def test_dates_timestamps_ids_free_text_and_many_categories_are_inferred() -> None:
    frame = _frame()
    schema = infer_schema(frame, "label", options=InferenceOptions(max_categories=10))
    kinds = {spec.name: spec.kind for spec in schema.features}
    assert kinds == {
        "visit": "date",
        "signup_ts": "timestamp",
        "station": "categorical",
        "amount": "numeric",
    }
    reasons = {d.name: d.reason for d in schema.dropped}
    assert reasons["order_ref"].startswith("id-like")
    assert reasons["notes"].startswith("free text") and "prepare.text_length" in reasons["notes"]
    visit = schema.feature("visit")
    assert visit.reference == min(frame["visit"]) and visit.latest == max(frame["visit"])
    # The model reads the parts; the schema keeps the source column.
    assert schema.feature_names == ["visit", "signup_ts", "station", "amount"]
    assert [c.name for c in schema.columns if c.feature == "visit"] == [
        f"visit.{part}" for part in DATE_PARTS
    ]
    assert [c.part for c in schema.columns if c.feature == "signup_ts"] == list(TIMESTAMP_PARTS)
    station = schema.feature("station")
    assert len(station.categories or []) == 10 and station.other == OTHER
    assert station.categories[-1] == OTHER  # type: ignore[index]


def test_a_near_unique_text_column_is_dropped_with_its_share_unless_declared() -> None:
    frame = _frame()
    # A code with a few repeats: not every value unique, yet nearly.
    frame["customer"] = [f"C{i // 1 if i % 50 else i + 1}" for i in range(ROWS)]
    schema = infer_schema(frame, "label")
    reason = {d.name: d.reason for d in schema.dropped}["customer"]
    assert "of its values are distinct" in reason and "prepare.unique_share" in reason
    kept = infer_schema(frame, "label", options=InferenceOptions(types={"customer": "categorical"}))
    assert kept.feature("customer").kind == "categorical"


def test_declared_types_are_checked_against_the_data() -> None:
    frame = _frame()
    frame.loc[[3, 7], "visit"] = ["not a date", "31/02/2024"]
    with pytest.raises(TypeMismatchError, match="'visit' is declared date") as error:
        infer_schema(frame, "label", options=InferenceOptions(types={"visit": "date"}))
    assert error.value.rows == [3, 7]
    declared = infer_schema(
        _frame(), "label", options=InferenceOptions(types={"amount": "categorical"})
    )
    assert declared.feature("amount").kind == "categorical"


def test_a_date_format_is_read_in_training_and_at_serving_time() -> None:
    frame = _frame()
    frame["visit"] = pd.to_datetime(frame["visit"]).dt.strftime("%d/%m/%Y")
    schema = infer_schema(frame, "label", options=InferenceOptions(formats={"visit": "%d/%m/%Y"}))
    visit = schema.feature("visit")
    assert visit.kind == "date" and visit.format == "%d/%m/%Y"
    validator = RequestValidator(schema, max_rows=5)
    row = {**schema.example_row(), "visit": "07/12/2026"}
    same = {**row, "visit": "2026-12-07"}
    assert np.array_equal(schema.encode(validator.validate({"rows": [row]})), schema.encode([same]))
    with pytest.raises(RequestValidationError) as error:
        validator.validate({"rows": [{**row, "visit": "12-07-2026"}]})
    assert "ISO 8601 (e.g. 2026-12-07) or %d/%m/%Y" in str(error.value.details)


def test_date_parts_are_the_same_from_a_frame_and_from_rows() -> None:
    frame = _frame()
    schema = infer_schema(frame, "label")
    features = frame[schema.feature_names]
    rows = features.to_dict("records")
    assert np.allclose(schema.encode(features), schema.encode(rows), equal_nan=True)
    visit = schema.feature("visit")
    cells = encode_when("2026-12-07", "date", visit.reference_time)
    assert cells[:5] == [2026.0, 12.0, 7.0, 0.0, 341.0]  # 7 Dec 2026 is a Monday
    assert cells[5] == (parse_when("2026-12-07") - visit.reference_time).days
    # A time zone is honoured: 01:30 in Paris is 00:30 UTC.
    stamp = encode_when("2026-12-07T01:30:00+01:00", "timestamp", visit.reference_time)
    assert stamp[-1] == 0.0
    assert all(math.isnan(c) for c in encode_when(None, "timestamp", visit.reference_time))


def test_a_value_folded_in_training_and_a_new_one_become_the_other_level() -> None:
    frame = _frame()
    schema = infer_schema(frame, "label", options=InferenceOptions(max_categories=10))
    station = schema.feature("station")
    column = schema.model_feature_names.index("station")
    other_code = float(len(station.categories or []) - 1)
    rare = next(s for s in frame["station"] if s not in (station.categories or []))
    row = schema.example_row()
    for value in (rare, "S-never-seen"):
        assert schema.encode([{**row, "station": value}])[0, column] == other_code
    # Where nothing was folded a new value is missing, and the MLflow model's refusal names it.
    plain = infer_schema(frame, "label")
    encoded = plain.encode([{**row, "station": "S-never-seen"}])
    assert np.isnan(encoded[0, plain.model_feature_names.index("station")])
    probe = pd.DataFrame([{**row, "station": "S-never-seen"}, row])
    assert unknown_categories(plain, probe) == {"station": ["S-never-seen"]}
    assert unknown_categories(schema, probe) == {}  # folded: `other` takes it


def test_new_categories_are_missing_and_counted_or_refused_in_a_short_error() -> None:
    frame = _frame()
    frame["region"] = [f"R{i % 300}" for i in range(ROWS)]  # 300 levels, every one kept
    schema = infer_schema(
        frame, "label", options=InferenceOptions(max_categories=1000, unique_share=0.99)
    )
    seen: list[str] = []
    answering = RequestValidator(schema, 5, "missing", on_unknown=seen.append)
    row = {**schema.example_row(), "region": "R-new", "visit": "2031-01-01"}
    clean = answering.validate({"rows": [row]})
    assert clean[0]["region"] is None and seen == ["region"]
    refusing = RequestValidator(schema, 5, "refuse")
    with pytest.raises(RequestValidationError) as error:
        refusing.validate({"rows": [row]})
    details = error.value.details or []
    assert len(details) == 1 and "(300 in all: GET /model lists them)" in details[0]["message"]
    assert len(str(details)) < 1000 and len(details[0]["allowed"]) == 20
    assert seen == ["region"]  # a refused value is not counted as answered


def test_the_public_openapi_row_gives_dates_their_format() -> None:
    schema = infer_schema(_frame(), "label")
    properties = public_row({"title": "Row"}, schema)["properties"]
    assert properties["visit"]["format"] == "date"
    assert properties["signup_ts"]["format"] == "date-time"
    assert "enum" not in str(properties["station"])  # categories stay behind a token


@pytest.mark.parametrize(
    ("text", "sep", "decimal"),
    [
        ("a;b;label\n1,5;x;0\n2,25;y;1\n3,0;x;0\n", ";", ","),
        ("a\tb\tlabel\n1.5\tx\t0\n2.25\ty\t1\n", "\t", "."),
        ("a|b|label\n1|x|0\n2|y|1\n", "|", "."),
        ("a,b,label\n1.5,x,0\n2.25,y,1\n", ",", "."),
    ],
)
def test_the_csv_dialect_is_sniffed(tmp_path: Path, text: str, sep: str, decimal: str) -> None:
    path = tmp_path / "data.csv"
    path.write_text(text)
    found = sniff(path, None, None, "utf-8")
    assert (found.sep, found.decimal) == (sep, decimal)
    frame = read_table(path)
    assert list(frame.columns) == ["a", "b", "label"]
    assert pd.api.types.is_numeric_dtype(frame["a"])


def test_a_csv_that_reads_as_one_column_names_its_delimiter(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    # A semicolon file the sniffer is told is comma-separated (data.csv.sep: ",").
    path.write_text("a;b;label\n1;x;0\n2;y;1\n")
    with pytest.raises(DataError, match='probably uses ";" as its delimiter'):
        read_table(path, CsvParams(sep=","))


def test_a_schema_without_dates_or_folds_is_written_as_the_release_before_wrote_it() -> None:
    """A release before issue 37 refuses unknown keys: a schema that needs none of the
    new fields must not write them, so a rolled-back service serves newer models."""
    plain = infer_schema(_frame().drop(columns=["visit", "signup_ts"]), "label")
    for feature in json.loads(plain.to_json())["features"]:
        assert not {"reference", "latest", "other", "format"} & set(feature), feature
    dated = infer_schema(_frame(), "label", options=InferenceOptions(max_categories=10))
    assert FeatureSchema.model_validate_json(dated.to_json()) == dated
    assert json.loads(dated.to_json())["features"][0]["reference"] == dated.features[0].reference
