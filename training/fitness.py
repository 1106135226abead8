"""Whether a dataset can train a model at all, and which of its columns the model may use
(part of stage ``prepare``): every problem found is named, with its column and rows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tabserve.core.schema import DroppedColumn, TaskKind
from tabserve.core.schema_inference import decide_task
from training.errors import DataError
from training.params import DataParams


def _rows(index: pd.Index, limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in index[:limit])
    return shown + (f" ... ({len(index)} rows)" if len(index) > limit else "")


MAX_LISTED = 10  # problems of one kind listed before the rest are counted


def validate(
    frame: pd.DataFrame, target: str, min_rows_per_class: int, task: TaskKind = "classification"
) -> None:
    """Refuse data that cannot train a model for ``task``.

    Raises:
        DataError: naming every problem found (column, and rows by 0-based index).
    """
    problems: list[str] = []
    columns = [str(c) for c in frame.columns]
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        raise DataError(
            "duplicate column names", [f"column {c!r} appears more than once" for c in duplicated]
        )
    if target not in frame.columns:
        raise DataError(
            f"target column {target!r} not found (data.target in params.yaml)",
            [f"columns are: {', '.join(columns)}"],
        )
    if len(frame.columns) < 2:
        raise DataError("no feature columns besides the target")
    missing_target = frame.index[frame[target].isna()]
    if len(missing_target):
        problems.append(f"target {target!r} is missing in rows {_rows(missing_target)}")
    if task == "regression":
        problems += _regression_target_problems(frame[target], target)
    else:
        problems += _class_problems(frame[target], target, min_rows_per_class)
    for name in frame.columns:
        col = frame[name]
        if (
            name != target
            and pd.api.types.is_numeric_dtype(col)
            and not pd.api.types.is_bool_dtype(col)
        ):
            bad = frame.index[np.isinf(col.to_numpy(dtype="float64", na_value=np.nan))]
            if len(bad):
                problems.append(f"column {name!r} has infinite values in rows {_rows(bad)}")
    if problems:
        raise DataError(f"{len(problems)} problem(s) in the data", problems)


def _class_problems(labels: pd.Series, target: str, min_rows_per_class: int) -> list[str]:
    counts = labels.dropna().value_counts()
    if len(counts) < 2:
        return [
            f"target {target!r} has {len(counts)} class(es) ({list(counts.index)}); need at least 2"
        ]
    small = counts[counts < min_rows_per_class]
    problems = [
        f"class {label!r} of {target!r} has {count} rows; need at least {min_rows_per_class} "
        "(prepare.min_rows_per_class) to split it"
        for label, count in small.head(MAX_LISTED).items()
    ]
    if len(small) > MAX_LISTED:
        problems.append(f"... and {len(small) - MAX_LISTED} more classes that small")
    if len(small) and decide_task(labels) == "regression":
        problems.append(
            f"{target!r} looks like a quantity ({labels.nunique()} distinct numbers), not a "
            "set of classes: set data.task to auto or regression"
        )
    return problems


def _regression_target_problems(values: pd.Series, target: str) -> list[str]:
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        return [f"target {target!r} is not numeric ({values.dtype}): regression needs numbers"]
    numbers = values.to_numpy(dtype="float64", na_value=np.nan)
    problems = []
    infinite = values.index[np.isinf(numbers)]
    if len(infinite):
        problems.append(f"target {target!r} has infinite values in rows {_rows(infinite)}")
    if values.dropna().nunique() < 2:
        problems.append(f"target {target!r} is constant: there is nothing to predict")
    return problems


def choose_columns(frame: pd.DataFrame, data: DataParams) -> list[DroppedColumn]:
    """The columns ``data.drop`` and ``data.features`` leave out of the model.

    Raises:
        DataError: for a name that is not a column, listing the valid ones.
    """
    columns = [str(c) for c in frame.columns]
    named = [*data.drop, *(data.features or [])]
    unknown = [n for n in named if n not in columns]
    if unknown:
        raise DataError(
            f"data.drop / data.features name column(s) the data does not have: {unknown}",
            [f"columns are: {', '.join(columns)}"],
        )
    left_out = [DroppedColumn(name=n, reason="dropped by data.drop") for n in data.drop]
    if data.features is not None:
        left_out += [
            DroppedColumn(name=c, reason="not in data.features")
            for c in columns
            if c not in data.features and c != data.target and c not in data.drop
        ]
    return left_out
