"""How a :class:`~tabserve.core.schema.FeatureSchema` is inferred from training data.

``prepare`` calls :func:`infer_schema` once; everything downstream reads the saved
schema. Each column becomes a feature (numeric, categorical, date or timestamp) or is
dropped with its reason, in this order:

1. a type declared for it (``data.types``: ``numeric``, ``categorical``, ``date``,
   ``timestamp``, or ``id`` and ``text``, which drop it) is taken, checked against the
   data (:class:`TypeMismatchError` names the first values that cannot be read so);
   a column with a date format (``data.formats``) is a date, or a timestamp when the
   format has a time of day, read in that format as well as in ISO 8601;
2. empty and constant columns are dropped;
3. a date or timestamp column (a Parquet date type, or text that is ISO 8601 dates in
   at least :data:`WHEN_SHARE` of its rows) is a date, or a timestamp when any value
   has a time of day;
4. text whose median value is at least ``text_length`` characters long is free text,
   and dropped (a tree model cannot learn from it as categories);
5. an id-like column is dropped: every value unique and a name that says so or an
   integer counter, or text with at least ``unique_share`` of distinct values;
6. other text, booleans and categories are categorical, with at most
   ``max_categories`` levels: the most frequent are kept and the rest fold into one
   :data:`OTHER` level;
7. the rest is numeric.

The target's task is decided by :func:`decide_task`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from tabserve.core.schema import (
    MAX_CLASSES_FOR_AUTO,
    TARGET_QUANTILES,
    DroppedColumn,
    FeatureSchema,
    FeatureSpec,
    Label,
    TargetSpec,
    TaskKind,
    category_text,
    label_key,
)
from tabserve.core.when import as_datetimes, iso

# Column names that, together with all-unique values, mark a row identifier.
_ID_NAME = re.compile(r"^(unnamed: ?\d+|index|id|row_?id|.*[_ ]id)$", re.IGNORECASE)
# An ISO 8601 date, or date and time (with seconds, fractions and a zone optional).
_ISO_WHEN = re.compile(
    r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$"
)
WHEN_SHARE = 0.95  # of the non-missing text values that must be ISO dates
OTHER = "(other)"
DeclaredType = Literal["numeric", "categorical", "date", "timestamp", "id", "text"]


@dataclass(frozen=True)
class InferenceOptions:
    """What ``prepare`` lets the user set about inference (``params.yaml``)."""

    types: Mapping[str, DeclaredType] = field(default_factory=dict)
    max_categories: int = 50
    unique_share: float = 0.95
    text_length: int = 40
    formats: Mapping[str, str] = field(default_factory=dict)  # strftime, per date column


def format_kind(fmt: str) -> Literal["date", "timestamp"]:
    """``timestamp`` for a ``strftime`` format with a time of day in it, else ``date``."""
    return "timestamp" if re.search(r"%[HIMSfpXcT]", fmt) else "date"


class TypeMismatchError(ValueError):
    """A column that cannot be read as the type ``data.types`` declares for it."""

    def __init__(self, column: str, declared: str, rows: list[Any], values: list[Any]) -> None:
        shown = ", ".join(f"row {r}: {v!r}" for r, v in zip(rows, values, strict=True))
        super().__init__(f"column {column!r} is declared {declared} (data.types) but {shown}")
        self.column = column
        self.rows = rows


def is_id_like(series: pd.Series) -> bool:
    """Whether a column looks like a row identifier rather than a feature.

    A column is ID-like when every value is present and unique and either its name
    says so (``Unnamed: 0``, ``id``, ``customer_id``...), or it is an integer
    counter (consecutive values), or it is text (a unique string per row carries
    no pattern a tree model can learn).
    """
    n = len(series)
    if n < 2 or series.isna().any() or series.nunique(dropna=False) != n:
        return False
    if _ID_NAME.match(str(series.name)):
        return True
    if pd.api.types.is_integer_dtype(series):
        ordered = np.sort(series.to_numpy())
        return bool(np.all(np.diff(ordered) == 1))
    return bool(pd.api.types.is_string_dtype(series) or series.dtype == object)


def _is_categorical(series: pd.Series) -> bool:
    return bool(
        isinstance(series.dtype, pd.CategoricalDtype)
        or pd.api.types.is_bool_dtype(series)
        or pd.api.types.is_string_dtype(series)
        or series.dtype == object
    )


def when_kind(series: pd.Series) -> Literal["date", "timestamp"] | None:
    """``date`` or ``timestamp`` if ``series`` holds dates (see the module doc), else None."""
    if pd.api.types.is_datetime64_any_dtype(series):
        when = as_datetimes(series).dropna()
        return "date" if (when == when.dt.normalize()).all() else "timestamp"
    if not (pd.api.types.is_string_dtype(series) or series.dtype == object):
        return None
    text = series.dropna()
    text = text[text.map(lambda v: isinstance(v, str))].str.strip()
    if len(text) == 0 or text.str.fullmatch(_ISO_WHEN.pattern).mean() < WHEN_SHARE:
        return None
    when = as_datetimes(text).dropna()
    if len(when) < WHEN_SHARE * len(text):
        return None
    return "date" if (when == when.dt.normalize()).all() else "timestamp"


def when_feature(
    series: pd.Series, kind: Literal["date", "timestamp"], fmt: str | None = None
) -> FeatureSpec:
    """The spec of a date or timestamp feature: its earliest and latest values (and the
    format its text is in, besides ISO 8601)."""
    when = as_datetimes(series, fmt).dropna()
    return FeatureSpec(
        name=str(series.name),
        kind=kind,
        nullable=bool(series.isna().any() or len(when) < series.notna().sum()),
        reference=iso(when.min()) if len(when) else None,
        latest=iso(when.max()) if len(when) else None,
        format=fmt,
    )


def _text_column(series: pd.Series) -> bool:
    return bool(pd.api.types.is_string_dtype(series) or series.dtype == object)


def free_text_length(series: pd.Series) -> float:
    """The median length of a text column's values (0 for another column)."""
    if not _text_column(series):
        return 0.0
    lengths = series.dropna().map(lambda v: len(v) if isinstance(v, str) else 0)
    return float(lengths.median()) if len(lengths) else 0.0


def distinct_share(series: pd.Series) -> float:
    """The share of distinct values among the present ones."""
    present = series.dropna()
    return float(present.nunique() / len(present)) if len(present) else 0.0


def categorical_feature(series: pd.Series, max_categories: int) -> FeatureSpec:
    """The spec of a categorical feature: at most ``max_categories`` levels, the most
    frequent kept and the rest folded into :data:`OTHER`."""
    text = series.astype("object").map(category_text).dropna()
    counts = text.value_counts()
    other = None
    if len(counts) > max_categories:
        kept = sorted(counts.index[: max_categories - 1])
        other = OTHER if OTHER not in counts.index else f"{OTHER} "
        categories = [*kept, other]
    else:
        categories = sorted(counts.index)
    mode = str(counts.idxmax()) if len(counts) else None
    return FeatureSpec(
        name=str(series.name),
        kind="categorical",
        categories=[str(c) for c in categories],
        mode=mode,
        nullable=bool(series.isna().any()),
        other=other,
    )


def infer_feature(series: pd.Series, max_categories: int = 50) -> FeatureSpec:
    """Infer one feature's spec from its training values."""
    name = str(series.name)
    nullable = bool(series.isna().any())
    kind = when_kind(series)
    if kind is not None:
        return when_feature(series, kind)
    if _is_categorical(series):
        return categorical_feature(series, max_categories)
    values = pd.to_numeric(series, errors="coerce").astype("float64")
    finite = values[np.isfinite(values)]
    integer = bool(pd.api.types.is_integer_dtype(series)) or bool(
        len(finite) and np.all(np.equal(np.mod(finite, 1), 0))
    )
    if len(finite) == 0:
        return FeatureSpec(name=name, kind="numeric", integer=integer, nullable=True)
    return FeatureSpec(
        name=name,
        kind="numeric",
        integer=integer,
        min=float(finite.min()),
        max=float(finite.max()),
        median=float(finite.median()),
        nullable=nullable,
    )


def decide_task(series: pd.Series, task: Literal["auto"] | TaskKind = "auto") -> TaskKind:
    """The task for a target column: ``task`` itself, or the rule of ``auto``.

    ``auto``: a numeric (not boolean) target with more than ``MAX_CLASSES_FOR_AUTO``
    distinct values, or with any non-integral value, is regression; anything else
    (text, booleans, a few integer codes) is classification.
    """
    if task != "auto":
        return task
    if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
        return "classification"
    values = series.dropna().astype("float64")
    if values.nunique() > MAX_CLASSES_FOR_AUTO or not np.all(np.mod(values, 1) == 0):
        return "regression"
    return "classification"


def infer_target(series: pd.Series, task: Literal["auto"] | TaskKind = "auto") -> TargetSpec:
    """Infer the target's spec: its classes (sorted, ints where every label is integral)
    or, for regression, its range, mean, spread and deciles."""
    name = str(series.name)
    if decide_task(series, task) == "regression":
        values = pd.to_numeric(series, errors="coerce").dropna().astype("float64")
        quantiles = np.quantile(values, np.linspace(0, 1, TARGET_QUANTILES + 1))
        return TargetSpec(
            name=name,
            kind="regression",
            min=float(values.min()),
            max=float(values.max()),
            mean=float(values.mean()),
            std=float(values.std(ddof=0)),
            quantiles=[float(q) for q in quantiles],
        )
    keys = series.dropna().map(label_key)
    classes: list[Label]
    if all(isinstance(k, int) for k in keys):
        classes = sorted({int(k) for k in keys})
    else:
        classes = sorted({str(k) for k in keys})
    return TargetSpec(name=name, classes=classes)


def declared_feature(
    series: pd.Series, declared: DeclaredType, options: InferenceOptions
) -> FeatureSpec:
    """The spec of a column whose type ``data.types`` declares (``id`` and ``text`` are
    the caller's to drop).

    Raises:
        TypeMismatchError: naming the first values that cannot be read as ``declared``.
    """
    present = series.dropna()
    fmt = options.formats.get(str(series.name))
    if declared == "numeric":
        numbers = pd.to_numeric(present, errors="coerce")
        bad = present[numbers.isna()]
    elif declared in ("date", "timestamp"):
        bad = present[as_datetimes(present, fmt).isna()]
    else:
        bad = present.iloc[:0]
    if len(bad):
        raise TypeMismatchError(str(series.name), declared, list(bad.index[:5]), list(bad.iloc[:5]))
    if declared == "numeric":
        return infer_feature(pd.to_numeric(series, errors="coerce").rename(series.name))
    if declared in ("date", "timestamp"):
        return when_feature(series, declared, fmt)
    return categorical_feature(series, options.max_categories)


def _drop_reason(series: pd.Series, options: InferenceOptions) -> str | None:
    """Why an undeclared column is left out, or None (see the module doc)."""
    if series.isna().all():
        return "empty: every value is missing"
    if series.nunique(dropna=False) == 1:
        return "constant: one value in every row"
    if when_kind(series) is not None:
        return None
    length = free_text_length(series)
    if length >= options.text_length:
        return (
            f"free text: its values are {length:.0f} characters long (median), too long to "
            f"be categories (prepare.text_length: {options.text_length})"
        )
    if is_id_like(series):
        return "id-like: a unique value per row (100% of its values are distinct)"
    share = distinct_share(series)
    if _text_column(series) and share >= options.unique_share:
        return (
            f"id-like: {share:.0%} of its values are distinct (prepare.unique_share: "
            f"{options.unique_share:.0%}); declare it in data.types to keep it"
        )
    return None


def infer_schema(
    frame: pd.DataFrame,
    target: str,
    dropped: Sequence[DroppedColumn] = (),
    task: Literal["auto"] | TaskKind = "auto",
    options: InferenceOptions | None = None,
) -> FeatureSchema:
    """Infer the FeatureSchema of ``frame`` with label column ``target``.

    Columns left out (see the module doc) are listed in ``dropped`` (the caller warns),
    after the ones the caller already left out (``dropped``); everything else becomes a
    feature in frame order.

    Raises:
        TypeMismatchError: for a column that cannot be read as its declared type.
    """
    options = options or InferenceOptions()
    features: list[FeatureSpec] = []
    dropped = list(dropped)
    for name in frame.columns:
        if name == target:
            continue
        series = frame[name]
        declared = options.types.get(str(name))
        if declared is None and str(name) in options.formats:
            declared = format_kind(options.formats[str(name)])
        if declared in ("id", "text"):
            dropped.append(
                DroppedColumn(name=str(name), reason=f"declared {declared} (data.types)")
            )
        elif declared is not None:
            features.append(declared_feature(series, declared, options))
        elif (reason := _drop_reason(series, options)) is not None:
            dropped.append(DroppedColumn(name=str(name), reason=reason))
        else:
            features.append(infer_feature(series, options.max_categories))
    return FeatureSchema(
        features=features, target=infer_target(frame[target], task), dropped=dropped
    )


def describe(schema: FeatureSchema) -> Sequence[str]:
    """Human-readable one-liners, for logs and CLIs."""
    lines = []
    for f in schema.features:
        if f.kind == "numeric":
            lines.append(f"{f.name}: numeric [{f.min}, {f.max}]{' nullable' if f.nullable else ''}")
        elif f.is_when:
            lines.append(f"{f.name}: {f.kind} [{f.reference}, {f.latest}]")
        else:
            lines.append(f"{f.name}: categorical {f.categories}{' nullable' if f.nullable else ''}")
    return lines
