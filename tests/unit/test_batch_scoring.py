"""Batch scoring's pure parts: the row checks agree with ``POST /predict``'s validation, the
checked frame encodes to the same matrix, inputs are found and read in order, and the
run's files and progress lines are named and written as the docs say."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tabserve.batch.progress import Progress, Summary, rejects_path
from tabserve.batch.sources import InputError, arrow_to_frame, open_source
from tabserve.core.errors import RequestValidationError
from tabserve.core.frame_checks import absent_required, check_frame
from tabserve.core.schema import FeatureSchema
from tabserve.core.schema_inference import InferenceOptions, infer_schema
from tabserve.core.validation import ROWS_FIELD, RequestValidator

ROWS = 300


@pytest.fixture(scope="module")
def schema() -> FeatureSchema:
    rng = np.random.default_rng(3)
    days = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 400, ROWS), unit="D")
    frame = pd.DataFrame(
        {
            "size": rng.normal(10, 2, ROWS),
            "weight": np.where(rng.random(ROWS) < 0.1, np.nan, rng.normal(50, 5, ROWS)),
            "colour": rng.choice(["red", "green", "blue"], ROWS),
            "shop": [f"S{v:02d}" for v in rng.integers(0, 30, ROWS)],
            "visit": [d.date().isoformat() for d in days],
            "label": rng.choice(["yes", "no"], ROWS),
        }
    )
    return infer_schema(frame, "label", options=InferenceOptions(max_categories=10))


# One CSV cell per case: (column, text); None leaves the row as it is.
CASES: list[tuple[str, str] | None] = [
    None,
    ("size", "abc"),
    ("size", "1e400"),
    ("size", ""),
    ("weight", ""),
    ("weight", "nope"),
    ("colour", "purple"),
    ("colour", ""),
    ("shop", "S99-new"),
    ("visit", "2031-05-01"),
    ("visit", "31/02/2024"),
    ("visit", ""),
]
GOOD_ROW = {"size": "10.5", "weight": "48", "colour": "red", "shop": "S01", "visit": "2024-03-01"}


def _rows() -> pd.DataFrame:
    rows = []
    for case in CASES:
        row = dict(GOOD_ROW)
        if case is not None:
            row[case[0]] = case[1]
        rows.append(row)
    return pd.DataFrame(rows, dtype="str")


def _api_refuses(validator: RequestValidator, schema: FeatureSchema, row: dict[str, Any]) -> bool:
    """Whether ``POST /predict`` refuses the row as a client would send a CSV's line:
    numbers as numbers, empty cells left out."""
    body: dict[str, Any] = {}
    for name, text in row.items():
        if text == "":
            continue
        if schema.feature(name).kind == "numeric":
            try:
                body[name] = float(text)
            except ValueError:
                body[name] = text
        else:
            body[name] = text
    try:
        validator.validate({ROWS_FIELD: [body]})
    except RequestValidationError:
        return True
    return False


@pytest.mark.parametrize("policy", ["missing", "refuse"])
def test_a_row_is_rejected_exactly_when_the_api_refuses_it(schema, policy) -> None:
    frame = _rows()
    text = pd.read_csv(io.StringIO(frame.to_csv(index=False)), dtype=str, keep_default_na=False)
    checked = check_frame(schema, arrow_to_frame(_as_csv_batch(text), schema), policy)
    validator = RequestValidator(schema, max_rows=10, unknown_category=policy)
    expected = [_api_refuses(validator, schema, row) for row in text.to_dict("records")]
    assert (~checked.good).tolist() == expected
    reasons = dict(zip(checked.rejects["position"], checked.rejects["reason"], strict=False))
    assert reasons[1] == "'abc' is not a number"
    assert "not a finite number" in reasons[2]
    assert reasons[3] == "a value is required"
    assert reasons[10].startswith("'31/02/2024' is not a date in ISO 8601")
    if policy == "refuse":
        assert "'purple' is a category never seen in training (known: " in reasons[6]
        assert "colour" not in checked.unknown  # rejected, not read as missing
    else:
        # Read as missing; shop's rare values fold into its `other` level, counted too.
        assert checked.unknown["colour"] == 1 and set(checked.unknown) <= {"colour", "shop"}


def _as_csv_batch(text: pd.DataFrame) -> pa.RecordBatch:
    """The frame as the local engine's CSV reader gives it: text, empty cells null."""
    arrays = [pa.array(text[c].where(text[c] != "", None), pa.string()) for c in text]
    return pa.RecordBatch.from_arrays(arrays, names=list(text.columns))


def test_the_checked_frame_encodes_like_the_raw_rows(schema) -> None:
    frame = _rows()
    checked = check_frame(schema, arrow_to_frame(_as_csv_batch(frame), schema))
    good = checked.good
    raw = frame[good].replace("", None).astype(object)
    raw["size"] = raw["size"].astype(float)
    raw["weight"] = pd.to_numeric(raw["weight"])
    expected = schema.encode(raw.reset_index(drop=True))
    actual = schema.encode(checked.clean[good].reset_index(drop=True))
    np.testing.assert_array_equal(actual, expected)


def test_absent_columns_only_matter_when_required(schema) -> None:
    assert absent_required(schema, ["size", "colour", "shop", "visit"]) == []
    assert absent_required(schema, ["weight", "colour"]) == ["size", "shop", "visit"]


def test_whole_numbers_where_the_signature_says_integer(schema) -> None:
    frame = pd.DataFrame([GOOD_ROW, GOOD_ROW | {"size": "2.5"}, GOOD_ROW | {"size": "3"}])
    checked = check_frame(schema, frame, whole=["size"])
    assert checked.good.tolist() == [False, False, True]  # 10.5 and 2.5 are not whole
    assert checked.rejects["reason"].tolist() == [
        "10.5 is not a whole number",
        "2.5 is not a whole number",
    ]


def test_a_folder_of_parts_is_read_in_name_order(tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    for index in (2, 0, 1):
        pq.write_table(
            pa.table({"a": [index * 10 + i for i in range(3)]}), folder / f"part-{index}.parquet"
        )
    (folder / "_SUCCESS").write_text("")
    source = open_source(folder)
    assert source.rows == 9 and source.files[0].name == "part-0.parquet"
    values = [v for b in source.batches(["a"], 2) for v in b.column(0).to_pylist()]
    assert values == [0, 1, 2, 10, 11, 12, 20, 21, 22]


def test_a_semicolon_csv_is_sniffed_and_its_numbers_converted(tmp_path: Path, schema) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("size;colour;note\n1.5;red;x\nNA;blue;y\n 2 ;green;z\n")
    source = open_source(path)
    assert source.delimiter == ";" and source.columns == ("size", "colour", "note")
    (batch,) = list(source.batches(["size", "colour"], 100))
    frame = arrow_to_frame(batch, schema)
    assert frame["size"].dtype == np.float64 and frame["size"].isna().tolist() == [
        False,
        True,
        False,
    ]


def _file(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "nothing.csv", "no such file or folder"),
        (lambda d: _file(d / "x.txt", b"a\n"), "not a .csv or .parquet"),
        (lambda d: _file(d / "e.csv", b""), "empty (a header line"),
        (
            lambda d: (d / "b.parquet").write_bytes(b"PAR1 junk") and d / "b.parquet",
            "not a readable Parquet",
        ),
        (
            lambda d: (d / "d.csv").write_text("a,a\n1,2\n") and d / "d.csv",
            "duplicate column names: a",
        ),
    ],
)
def test_an_unusable_input_is_named_before_any_work(tmp_path: Path, make, message) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        open_source(make(tmp_path))


def test_parts_with_other_columns_and_bare_cr_lines_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(pa.table({"a": [1], "b": [2]}), folder / "part-0.parquet")
    pq.write_table(pa.table({"a": [1]}), folder / "part-1.parquet")
    with pytest.raises(InputError, match="do not all have the same columns"):
        open_source(folder)
    old_mac = _file(tmp_path / "mac.csv", b"a,b\r1,2\r3,4\r")
    with pytest.raises(InputError, match="no line break"):
        open_source(old_mac)


def test_a_malformed_csv_line_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("a,b\n1,2\n3\n")
    with pytest.raises(
        InputError,
        match=re.escape(
            "rows.csv: not a readable CSV (after byte 4): "
            "CSV parse error: Expected 2 columns, got 1: 3"
        ),
    ):
        list(open_source(path).batches(["a", "b"], 10))


def test_rejects_sit_beside_the_output_with_reject_in_the_name() -> None:
    assert rejects_path("out/scores.parquet") == "out/scores.rejects.parquet"
    assert rejects_path("s3://bucket/scores/") == "s3://bucket/scores.rejects"


def test_plain_progress_lines_and_the_summary() -> None:
    stream = io.StringIO()
    progress = Progress(1000, estimated=True, stream=stream, every_s=0.0)
    progress.update(250)
    line = stream.getvalue().strip()
    assert line.startswith("scored 250 rows (~25% of ~1,000)") and "rows/s, ETA 0:00:" in line
    summary = Summary("out.parquet", "tabserve/3", "local engine, 2 workers", rows=10, scored=8)
    summary.rejected_rows, summary.rejects, summary.seconds = 2, "out.rejects.parquet", 2.0
    text = summary.text()
    assert "Scored 8 of 10 rows with tabserve/3 (local engine, 2 workers)" in text
    assert "Rejected 2 rows (the row, the column, the reason): out.rejects.parquet" in text


def test_the_command_builds_without_the_scoring_dependencies() -> None:
    """The service's image runs `tabserve` (its entrypoint) without MLflow, pyarrow or
    pyspark: building the parser, `score` included, must not import them."""
    import subprocess
    import sys

    code = (
        "import builtins, sys\n"
        "real = builtins.__import__\n"
        "def guard(name, *args, **kwargs):\n"
        "    if name.split('.')[0] in ('pyarrow', 'mlflow', 'pyspark'):\n"
        "        raise ModuleNotFoundError(name)\n"
        "    return real(name, *args, **kwargs)\n"
        "builtins.__import__ = guard\n"
        "from tabserve.cli.main import build_parser\n"
        "args = build_parser().parse_args(['score', 'in.csv', 'out.parquet'])\n"
        "print(args.model)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "models:/tabserve@champion"
