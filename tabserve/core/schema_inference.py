"""How a :class:`~tabserve.core.schema.FeatureSchema` is inferred from training data.

``prepare`` calls :func:`infer_schema` once; everything downstream reads the saved
schema. Each column becomes a numeric or categorical feature, or is dropped (id-like,
empty, constant) with its reason; the target's task is decided by :func:`decide_task`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

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

# Column names that, together with all-unique values, mark a row identifier.
_ID_NAME = re.compile(r"^(unnamed: ?\d+|index|id|row_?id|.*[_ ]id)$", re.IGNORECASE)


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


def infer_feature(series: pd.Series) -> FeatureSpec:
    """Infer one feature's spec from its training values."""
    name = str(series.name)
    nullable = bool(series.isna().any())
    if _is_categorical(series):
        text = series.astype("object").map(category_text).dropna()
        categories = sorted(set(text))
        mode = str(text.value_counts().idxmax()) if len(text) else None
        return FeatureSpec(
            name=name, kind="categorical", categories=categories, mode=mode, nullable=nullable
        )
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


def infer_schema(
    frame: pd.DataFrame,
    target: str,
    dropped: Sequence[DroppedColumn] = (),
    task: Literal["auto"] | TaskKind = "auto",
) -> FeatureSchema:
    """Infer the FeatureSchema of ``frame`` with label column ``target``.

    ID-like, empty and constant columns are listed in ``dropped`` (the caller warns),
    after the ones the caller already left out (``dropped``); everything else becomes a
    numeric or categorical feature in frame order.
    """
    features: list[FeatureSpec] = []
    dropped = list(dropped)
    for name in frame.columns:
        if name == target:
            continue
        series = frame[name]
        if is_id_like(series):
            dropped.append(DroppedColumn(name=str(name), reason="id-like: unique value per row"))
        elif series.isna().all():
            dropped.append(DroppedColumn(name=str(name), reason="empty: every value is missing"))
        elif series.nunique(dropna=False) == 1:
            dropped.append(DroppedColumn(name=str(name), reason="constant: one value in every row"))
        else:
            features.append(infer_feature(series))
    return FeatureSchema(
        features=features, target=infer_target(frame[target], task), dropped=dropped
    )


def describe(schema: FeatureSchema) -> Sequence[str]:
    """Human-readable one-liners, for logs and CLIs."""
    lines = []
    for f in schema.features:
        if f.kind == "numeric":
            lines.append(f"{f.name}: numeric [{f.min}, {f.max}]{' nullable' if f.nullable else ''}")
        else:
            lines.append(f"{f.name}: categorical {f.categories}{' nullable' if f.nullable else ''}")
    return lines
