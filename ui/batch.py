"""Batch scoring of an uploaded CSV: validate every row like the API, score the rest.

Each row is checked by the service's own :class:`~tabserve.core.validation.RequestValidator`
(so a rejected row gets the reason ``POST /predict`` would give), and the valid rows
are scored in one predictor call. Columns the model does not know (an id, the
label) are kept in the output but not sent to the model.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any, Protocol

import pandas as pd

from tabserve.core.errors import RequestValidationError
from tabserve.core.predictor import answer_columns
from tabserve.core.schema import FeatureSchema, FeatureSpec
from tabserve.core.validation import ROWS_FIELD, RequestValidator
from tabserve.serving.monitor import Monitor, named_answers

LINE_COLUMN = "line"
# Each scored row's id, as POST /feedback takes it back ("answer_id" when the CSV has an
# "id" column of its own).
ID_COLUMN = "id"
REJECTED_COLUMNS = (LINE_COLUMN, "field", "reason")


class RowPredictor(Protocol):
    """What batch scoring needs from :class:`tabserve.core.predictor.Predictor`."""

    schema: FeatureSchema

    def matrix(self, rows: list[dict[str, Any]]) -> Any:
        """The encoded rows (see :meth:`tabserve.core.predictor.Predictor.matrix`)."""

    def answers(self, matrix: Any) -> list[dict[str, Any]]:
        """One answer per encoded row (see :meth:`tabserve.core.predictor.Predictor.answers`)."""


class BatchError(ValueError):
    """The file as a whole cannot be scored; the message says why, for a person."""


@dataclass
class BatchResult:
    """What the batch tab shows: the scored rows, the rejected ones and a summary."""

    scored: pd.DataFrame
    rejected: pd.DataFrame
    total_rows: int
    ignored_columns: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        """One human sentence about the outcome."""
        rejected_rows = self.rejected[LINE_COLUMN].nunique() if len(self.rejected) else 0
        text = f"Scored {len(self.scored)} of {self.total_rows} rows."
        if rejected_rows:
            text += f" {rejected_rows} row(s) failed validation and are listed below."
        if self.ignored_columns:
            names = ", ".join(f"`{c}`" for c in self.ignored_columns)
            text += f" Columns not used by the model (kept in the output): {names}."
        return text


def _cell(spec: FeatureSpec, text: str) -> Any:
    """A CSV cell as the JSON value a client would send; empty means missing.

    Numbers are parsed; text that is not a number is passed on as text so that the
    validator refuses it with the API's own message.
    """
    if text.strip() == "":
        return None
    if spec.kind == "numeric":
        try:
            return float(text)
        except ValueError:
            return text
    return text


def read_csv(data: bytes, max_bytes: int, max_rows: int) -> pd.DataFrame:
    """Parse an uploaded CSV as text columns (nothing guessed, nothing coerced).

    Raises:
        BatchError: over the size or row limit, not UTF-8, not a CSV, or empty.
    """
    if len(data) > max_bytes:
        raise BatchError(
            f"The file is {len(data):,} bytes; the limit is {max_bytes:,} bytes. "
            "Split it, or score large files through the API (POST /predict)."
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BatchError("The file is not UTF-8 text; export the CSV as UTF-8.") from None
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_filter=False)
    except pd.errors.EmptyDataError:
        raise BatchError(
            "The file is empty: a header line and at least one row are needed."
        ) from None
    except (pd.errors.ParserError, csv.Error) as exc:
        first = str(exc).splitlines()[0] if str(exc) else "unreadable"
        raise BatchError(f"The file is not a readable CSV: {first}") from None
    header = next(csv.reader(io.StringIO(text)), [])
    dupes = sorted({name for name in header if header.count(name) > 1})
    if dupes:  # pandas would silently rename them ("a", "a.1")
        raise BatchError(f"Duplicate column names: {', '.join(dupes)}.")
    if len(frame) == 0:
        raise BatchError("The file has a header but no rows.")
    if len(frame) > max_rows:
        raise BatchError(
            f"The file has {len(frame):,} rows; the limit is {max_rows:,} rows per file."
        )
    return frame


def score_frame(
    frame: pd.DataFrame,
    predictor: RowPredictor,
    validator: RequestValidator,
    monitor: Monitor | None = None,
    request_id: str | None = None,
) -> BatchResult:
    """Validate each row of a text frame (see :func:`read_csv`) and score the valid ones;
    the scored rows are recorded by ``monitor`` as the UI's (``source="ui"``).

    Raises:
        BatchError: when a column the model requires is absent.
    """
    schema = predictor.schema
    missing = [s.name for s in schema.features if s.name not in frame.columns and not s.nullable]
    if missing:
        raise BatchError(
            f"The CSV lacks {len(missing)} required column(s): {', '.join(missing)}. "
            "The header must name every feature (see the Predict tab or GET /model)."
        )
    known = set(schema.feature_names)
    ignored = [c for c in frame.columns if c not in known]
    valid_rows: list[dict[str, Any]] = []
    valid_index: list[int] = []
    rejected: list[tuple[int, str, str]] = []
    records = frame.to_dict("records")
    for position, record in enumerate(records):
        row = {
            spec.name: _cell(spec, str(record[spec.name]))
            for spec in schema.features
            if spec.name in frame.columns
        }
        line = position + 2  # the header is line 1
        try:
            clean = validator.validate({ROWS_FIELD: [row]})
        except RequestValidationError as exc:
            for detail in exc.details or [{"message": exc.message}]:
                rejected.append((line, str(detail.get("field", "")), str(detail["message"])))
            continue
        valid_rows.extend(clean)
        valid_index.append(position)
    scored = frame.iloc[valid_index].copy()
    scored.insert(0, LINE_COLUMN, [i + 2 for i in valid_index])
    if valid_rows:
        matrix = predictor.matrix(valid_rows)
        answers = named_answers(predictor.answers(matrix), request_id)
        if monitor is not None:
            monitor.observe("predict", matrix, answers, source="ui")
            monitor.log_rows(
                valid_rows, answers, request_id=request_id, endpoint="predict", source="ui"
            )
            monitor.record(valid_rows, answers, "predict", source="ui", matrix=matrix)
        id_column = ID_COLUMN if ID_COLUMN not in scored.columns else "answer_id"
        scored.insert(1, id_column, [answer["id"] for answer in answers])
        for name, values in answer_columns(answers).items():
            # An uploaded column of the same name (the true label, say) is kept as it is.
            scored[f"predicted_{name}" if name in scored.columns else name] = values
    return BatchResult(
        scored=scored.reset_index(drop=True),
        rejected=pd.DataFrame(rejected, columns=list(REJECTED_COLUMNS)),
        total_rows=len(frame),
        ignored_columns=ignored,
    )
