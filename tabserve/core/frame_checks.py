"""The rules of request validation, applied to a whole frame at once (batch scoring).

``POST /predict`` refuses a request with a bad row; a file is scored row by row, so
:func:`check_frame` sorts each row of a frame into *scored* or *rejected*, with the
column and the reason, by the rules of :mod:`tabserve.core.validation`:

- a number must read as a finite number within 32-bit float range (text such as
  ``"3.5"`` is read, since a CSV holds nothing else);
- a date or timestamp must read as ISO 8601, or in the feature's own format;
- a category never seen in training is read as missing (or as the feature's ``other``
  level) under the policy ``missing``, and rejected under ``refuse``;
- a missing value is rejected where the feature is not nullable.

Vectorized (one pass per column): the local engine and the Spark engine of ``tabserve
score`` both check with it, so a row is rejected for the same reason on either.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from tabserve.core.encoding import categorical
from tabserve.core.rows import category_text
from tabserve.core.schema import FeatureSchema, FeatureSpec
from tabserve.core.when import as_datetimes

Policy = Literal["missing", "refuse"]
FLOAT32_MAX = float(np.finfo(np.float32).max)
# Text a CSV reader takes for a missing value (pandas' and Arrow's defaults agree).
NULL_TOKENS = frozenset(
    [
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    ]
)
REJECT_COLUMNS = ("column", "reason")


@dataclass
class CheckedFrame:
    """A frame sorted by :func:`check_frame`.

    Attributes:
        clean: every row, its features as the model reads them (numbers as float64;
            categories as text, unknown ones as missing or the ``other`` level under
            ``missing``); only the rows of ``good`` may be scored.
        good: per row, whether it passed every check.
        rejects: one row per (row position, column) at fault: ``position``, ``column``,
            ``reason``.
        unknown: per categorical feature, how many values never seen in training were read
            as missing or as its ``other`` level (policy ``missing``).
    """

    clean: pd.DataFrame
    good: np.ndarray
    rejects: pd.DataFrame
    unknown: dict[str, int] = field(default_factory=dict)


def absent_required(schema: FeatureSchema, columns: Iterable[str]) -> list[str]:
    """The features no row can have: required by the model, absent from ``columns``."""
    present = set(columns)
    return [s.name for s in schema.features if s.name not in present and not s.nullable]


def _short(value: Any, limit: int = 60) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _missing(column: pd.Series) -> np.ndarray:
    """Missing values: null, NaN, or empty text (a CSV reader has already read its null
    tokens, :data:`NULL_TOKENS`, as null)."""
    missing = column.isna().to_numpy(dtype=bool, copy=True)
    if column.dtype == object or pd.api.types.is_string_dtype(column.dtype):
        missing |= (column == "").to_numpy(dtype=bool, na_value=False)
    return missing


def _numeric(
    spec: FeatureSpec, column: pd.Series, missing: np.ndarray, whole: bool
) -> tuple[Any, list]:
    if pd.api.types.is_bool_dtype(column.dtype) or pd.api.types.is_numeric_dtype(column.dtype):
        values = column.astype("float64")
    else:
        values = pd.to_numeric(column.where(~missing, None), errors="coerce").astype("float64")
    array = values.to_numpy(dtype=np.float64, copy=True)
    array[missing] = np.nan
    unreadable = ~missing & np.isnan(array)
    out_of_range = ~missing & ~unreadable & ~(np.abs(array) <= FLOAT32_MAX)
    bad = []
    for position in np.flatnonzero(unreadable):
        bad.append((position, f"{_short(column.iloc[position])} is not a number"))
    for position in np.flatnonzero(out_of_range):
        bad.append(
            # The number as read (text "1e39" and a parsed 1e39 alike): the same reason
            # whichever way a batch was read.
            (position, f"{float(array[position])!r} is not a finite number within float32 range")
        )
    fraction = np.zeros_like(unreadable)
    if whole:
        fraction = ~missing & ~unreadable & ~out_of_range & (np.floor(array) != array)
        for position in np.flatnonzero(fraction):
            bad.append((position, f"{_short(array[position])} is not a whole number"))
    array[unreadable | out_of_range | fraction] = np.nan
    return pd.Series(array, index=column.index), bad


def _when(spec: FeatureSpec, column: pd.Series, missing: np.ndarray) -> tuple[Any, list]:
    parsed = as_datetimes(column.where(~missing, None), spec.format)
    unreadable = ~missing & parsed.isna().to_numpy(dtype=bool)
    written = f"ISO 8601 or {spec.format}" if spec.format else "ISO 8601"
    bad = [
        (p, f"{_short(column.iloc[p])} is not a {spec.kind} in {written}")
        for p in np.flatnonzero(unreadable)
    ]
    return parsed, bad  # naive UTC datetimes (NaT where missing): the encoder reads them as is


def _categorical(
    spec: FeatureSpec, column: pd.Series, missing: np.ndarray, policy: Policy
) -> tuple[Any, list, int]:
    """The column as a ``category`` with exactly the schema's categories (which the encoder
    takes as it is), unknown values missing or the ``other`` level."""
    if pd.api.types.is_string_dtype(column.dtype) and column.dtype != object:
        text = column  # already text: category_text is the identity on it
    else:
        text = column.astype("object").map(category_text)
    categories = spec.categories or []
    coded = categorical(text.where(~missing, None), categories)
    codes = np.asarray(coded.codes)
    unknown = ~missing & (codes < 0)
    if not unknown.any():
        return pd.Series(coded), [], 0
    if policy == "refuse" and spec.other is None:
        shown = ", ".join(categories[:10]) + (" …" if len(categories) > 10 else "")
        bad = [
            (p, f"{_short(text.iloc[p])} is a category never seen in training (known: {shown})")
            for p in np.flatnonzero(unknown)
        ]
        return pd.Series(coded), bad, 0
    if spec.other is not None:
        codes = codes.copy()
        codes[unknown] = categories.index(spec.other)
        coded = pd.Categorical.from_codes(codes, categories=categories)
    return pd.Series(coded), [], int(unknown.sum())


def check_frame(
    schema: FeatureSchema,
    frame: pd.DataFrame,
    policy: Policy = "missing",
    whole: Iterable[str] = (),
) -> CheckedFrame:
    """Sort the rows of ``frame`` (any column types) by the validation rules.

    ``whole`` names numeric features that must be whole numbers (those an MLflow model's
    signature types as integers: MLflow refuses a fraction there).

    A feature absent from ``frame`` is missing in every row (see :func:`absent_required`
    for the check that stops a run before it starts). Columns the model does not know
    are left out of ``clean``.
    """
    rows = len(frame)
    good = np.ones(rows, dtype=bool)
    clean: dict[str, Any] = {}
    found: list[tuple[int, str, str]] = []
    unknown: dict[str, int] = {}
    whole = set(whole)
    for spec in schema.features:
        if spec.name in frame.columns:
            column = frame[spec.name].reset_index(drop=True)
        else:
            column = pd.Series([None] * rows, dtype="object")
        missing = _missing(column)
        if spec.kind == "numeric":
            values, bad = _numeric(spec, column, missing, spec.name in whole)
        elif spec.is_when:
            values, bad = _when(spec, column, missing)
        else:
            values, bad, count = _categorical(spec, column, missing, policy)
            if count:
                unknown[spec.name] = count
        if not spec.nullable:
            bad += [(p, "a value is required") for p in np.flatnonzero(missing)]
        for position, reason in bad:
            good[position] = False
            found.append((int(position), spec.name, reason))
        clean[spec.name] = values
    rejects = pd.DataFrame(found, columns=["position", *REJECT_COLUMNS])
    rejects = rejects.sort_values("position", kind="stable", ignore_index=True)
    return CheckedFrame(
        clean=pd.DataFrame(clean, index=pd.RangeIndex(rows)),
        good=good,
        rejects=rejects,
        unknown=unknown,
    )
