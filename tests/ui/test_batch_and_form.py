"""The UI's pure parts: the form from the schema and CSV batch scoring (no browser)."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

import pytest

from tabserve.core.errors import RequestValidationError
from tabserve.core.predictor import Predictor
from tabserve.core.validation import RequestValidator
from tests.support import REPO, TestModel, import_test_model
from ui.batch import BatchError, read_csv, score_frame
from ui.form import MISSING_CHOICE, form_fields, row_from_values, values_from_row


@pytest.fixture(scope="module")
def penguins(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestModel, Predictor]:
    import palmerpenguins

    home = tmp_path_factory.mktemp("bentoml")
    model = import_test_model(
        home,
        palmerpenguins.load_penguins(),
        "species",
        {"objective": "multi:softprob", "num_class": 3},
        tag="tabserve:v2",
    )
    return model, Predictor.from_bundle(home / "models" / "tabserve" / "v2", version="v2")


def _csv(header: list[str], rows: list[list[Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


def test_one_form_field_per_feature_from_the_schema(penguins: Any) -> None:
    model, _ = penguins
    fields = {f.name: f for f in form_fields(model.schema)}
    assert list(fields) == model.schema.feature_names
    for spec in model.schema.features:
        field = fields[spec.name]
        if spec.kind == "numeric":
            assert field.kind == "number" and field.default == spec.median
            assert field.integer == spec.integer
            assert f"median {field.default}" in field.info.replace(".0,", ",")
        else:
            assert field.kind == "dropdown"
            values = [v for _, v in field.choices]
            assert values[: len(spec.categories or [])] == spec.categories
            assert (MISSING_CHOICE in values) == spec.nullable
            assert field.default == spec.mode


def test_form_values_and_rows_round_trip(penguins: Any) -> None:
    model, _ = penguins
    for row in model.rows[:50]:  # includes rows with missing values
        values = values_from_row(model.schema, row)
        assert row_from_values(model.schema, values) == row


def test_a_csv_is_validated_like_the_api_and_the_rest_is_scored(penguins: Any) -> None:
    model, predictor = penguins
    # Under TABSERVE_UNKNOWN_CATEGORY=refuse: a new island is refused like a bad number.
    validator = RequestValidator(model.schema, max_rows=1000, unknown_category="refuse")
    names = model.schema.feature_names
    good = [r for r in model.rows[:12] if r["sex"] is not None][:6]
    bad = [
        {**good[0], "island": "Atlantis"},
        {**good[0], "bill_length_mm": "long"},
        {**good[0], "body_mass_g": float("inf")},
        {**good[0], "year": None},  # not nullable
    ]
    rows = [good[0], bad[0], good[1], bad[1], bad[2], *good[2:], bad[3]]
    cells = [
        ["" if r[n] is None else r[n] for n in names] + [f"id-{i}"] for i, r in enumerate(rows)
    ]
    frame = read_csv(_csv([*names, "id"], cells), max_bytes=1 << 20, max_rows=100)
    result = score_frame(frame, predictor, validator)

    assert result.total_rows == len(rows) and result.ignored_columns == ["id"]
    assert list(result.scored["line"]) == [2, 4, 7, 8, 9, 10]
    assert list(result.scored["id"]) == ["id-0", "id-2", "id-5", "id-6", "id-7", "id-8"]
    answers = predictor.predict(good)
    assert list(result.scored["label"]) == [a["label"] for a in answers]
    for cls in model.schema.target.classes:
        assert list(result.scored[f"proba_{cls}"]) == [a["probabilities"][cls] for a in answers]

    expected = []
    for line, row in zip((3, 5, 6, 11), bad, strict=True):
        with pytest.raises(RequestValidationError) as caught:
            validator.validate({"rows": [row]})
        expected += [(line, d["field"], d["message"]) for d in caught.value.details]
    assert list(result.rejected.itertuples(index=False, name=None)) == expected
    assert "Scored 6 of 10 rows. 4 row(s) failed validation" in result.summary


def test_missing_nullable_columns_are_missing_values(penguins: Any) -> None:
    model, predictor = penguins
    validator = RequestValidator(model.schema, max_rows=1000)
    names = [n for n in model.schema.feature_names if n != "sex"]
    row = model.rows[0]
    frame = read_csv(_csv(names, [[row[n] for n in names]]), 1 << 20, 10)
    result = score_frame(frame, predictor, validator)
    expected = predictor.predict([{**row, "sex": None}])[0]
    assert result.scored.loc[0, "label"] == expected["label"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"a,b\n" + b"1,2\n" * 11, "11 rows; the limit is 10 rows"),
        (b"x" * 2000, "2,000 bytes; the limit is 1,024 bytes"),
        (b"\xff\xfe,\x00", "not UTF-8"),
        (b"", "empty"),
        (b"island,year\n", "no rows"),
        (b"a,a\n1,2\n", "Duplicate column names"),
        (b"island\nDream\n", "lacks 1 required column(s): year"),
        (b'a,b\n"1,2\n', "not a readable CSV"),
    ],
)
def test_files_that_cannot_be_scored_get_a_clear_message(
    penguins: Any, data: bytes, message: str
) -> None:
    model, predictor = penguins

    def score() -> None:
        frame = read_csv(data, max_bytes=1024, max_rows=10)
        score_frame(frame, predictor, RequestValidator(model.schema, max_rows=10))

    with pytest.raises(BatchError, match=re.escape(message)):
        score()


def test_the_ui_names_no_feature_of_a_particular_dataset() -> None:
    import palmerpenguins
    from sklearn.datasets import load_breast_cancer

    names = {*palmerpenguins.load_penguins().columns, *load_breast_cancer().feature_names}
    names.discard("year")  # a common word, also used in prose
    for source in sorted(Path(REPO, "ui").glob("*.py")):
        text = source.read_text()
        found = sorted(n for n in names if n in text)
        assert not found, f"{source.name} names dataset features {found}"


def test_gradio_queue_polls_slowly_where_gradio_lets_it(caplog: pytest.LogCaptureFixture) -> None:
    """The attributes ``slow_queue_polling`` sets are this Gradio release's own (if this
    fails after a Gradio upgrade, find where its queue's polling interval went); a
    release without them is left as it is, with a warning."""
    import gradio as gr

    from ui.mount import PROGRESS_POLL_S, QUEUE_POLL_S, slow_queue_polling

    with gr.Blocks() as blocks:
        gr.Markdown("probe")
    blocks.queue(default_concurrency_limit=2)
    assert blocks._queue.sleep_when_free < QUEUE_POLL_S  # what Gradio polls at on Linux
    assert slow_queue_polling(blocks) is True
    assert blocks._queue.sleep_when_free == QUEUE_POLL_S
    assert blocks._queue.progress_update_sleep_when_free == PROGRESS_POLL_S

    class Renamed:
        _queue = object()

    assert slow_queue_polling(Renamed()) is False
    assert "polling interval is Gradio's" in caplog.text


def test_a_new_category_in_a_csv_is_scored_as_missing_by_default(penguins: Any) -> None:
    model, predictor = penguins
    seen: list[str] = []
    validator = RequestValidator(model.schema, max_rows=1000, on_unknown=seen.append)
    names = model.schema.feature_names
    row = next(r for r in model.rows if r["sex"] is not None)
    cells = [["Atlantis" if n == "island" else row[n] for n in names]]
    result = score_frame(read_csv(_csv(names, cells), 1 << 20, 100), predictor, validator)
    assert result.rejected.empty and seen == ["island"]
    (answer,) = predictor.predict([{**row, "island": None}])
    assert list(result.scored["label"]) == [answer["label"]]
    assert list(result.scored["island"]) == ["Atlantis"]  # the file's own cell, as sent
