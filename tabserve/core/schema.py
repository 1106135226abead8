"""The FeatureSchema: the contract between training, serving, the UI and load tests.

It is inferred once from the training data, saved next to the model as JSON, and
read back by every consumer. Nothing downstream hard-codes a feature name.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

FeatureKind = Literal["numeric", "categorical"]
Label = str | int


class SchemaRow(Mapping[str, Any]):
    """One validated row: its values in schema order, read as a mapping of feature names.

    What the request validator gives (:meth:`FeatureSchema.row`): encoding takes the
    values as they are, with no lookup per feature, and whatever wants names reads the
    row as any mapping (``row["age"]``, ``dict(row)``; equal to the dict of the same
    items).
    """

    __slots__ = ("_index", "names", "values_in_order")

    def __init__(self, values: list[Any], names: tuple[str, ...], index: dict[str, int]) -> None:
        self.values_in_order = values
        self.names = names
        self._index = index

    def __getitem__(self, name: str) -> Any:
        return self.values_in_order[self._index[name]]

    def __iter__(self) -> Any:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"SchemaRow({dict(self)!r})"


class FeatureSpec(BaseModel):
    """One input feature as observed in the training data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: FeatureKind
    integer: bool = False
    categories: list[str] | None = None
    min: float | None = None
    max: float | None = None
    median: float | None = None
    mode: str | None = None
    nullable: bool = False


TaskKind = Literal["classification", "regression"]
Task = Literal["binary", "multiclass", "regression"]
# A numeric target with more distinct values than this (or any non-integral one) is a
# quantity to predict, not a set of classes: the rule of `data.task: auto`.
MAX_CLASSES_FOR_AUTO = 20
TARGET_QUANTILES = 10  # the regression target's distribution: deciles


class TargetSpec(BaseModel):
    """The label column: its task and, for classification, the classes in model output
    order; for regression, the observed range and distribution of the target."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: TaskKind = "classification"
    classes: list[Label] = Field(default_factory=list)
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    # Quantiles 0, 0.1, ..., 1 of the training target (regression only): the Prometheus
    # buckets of predicted values, the UI's chart and the drift reference of answers.
    quantiles: list[float] = Field(default_factory=list)

    @property
    def task(self) -> Task:
        """``binary``, ``multiclass`` or ``regression``: what the model is trained for."""
        if self.kind == "regression":
            return "regression"
        return "binary" if len(self.classes) == 2 else "multiclass"

    @property
    def is_regression(self) -> bool:
        """Whether the model predicts a number (rather than a class)."""
        return self.kind == "regression"


class DroppedColumn(BaseModel):
    """A column present in the raw data that the model does not use, and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    reason: str


class FeatureSchema(BaseModel):
    """Features, target and dropped columns of one trained model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = SCHEMA_VERSION
    features: list[FeatureSpec]
    target: TargetSpec
    dropped: list[DroppedColumn] = Field(default_factory=list)

    @property
    def feature_names(self) -> list[str]:
        """Feature names in model input order."""
        return list(self._names)

    @cached_property
    def _names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @cached_property
    def _name_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self._names)}

    def row(self, values: list[Any]) -> SchemaRow:
        """A row of this schema from its values, one per feature in schema order (what
        the request validator gives: :class:`SchemaRow`)."""
        return SchemaRow(values, self._names, self._name_index)

    @property
    def feature_types(self) -> list[str]:
        """XGBoost's feature types in input order: ``c`` (categorical) or ``float``."""
        return ["c" if f.kind == "categorical" else "float" for f in self.features]

    @property
    def has_categoricals(self) -> bool:
        """Whether any feature is categorical."""
        return any(f.kind == "categorical" for f in self.features)

    def feature(self, name: str) -> FeatureSpec:
        """The spec of feature ``name``.

        Raises:
            KeyError: if the schema has no such feature.
        """
        for spec in self.features:
            if spec.name == name:
                return spec
        raise KeyError(name)

    # ---- persistence -------------------------------------------------------
    def to_json(self) -> str:
        """Serialise to indented, key-stable JSON."""
        return self.model_dump_json(indent=2)

    def save(self, path: str | Path) -> None:
        """Write the schema as JSON to ``path``."""
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> FeatureSchema:
        """Read a schema written by :meth:`save`."""
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))

    # ---- frames ------------------------------------------------------------
    def to_frame(self, rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> pd.DataFrame:
        """Build the model's input frame: schema column order and dtypes.

        Numeric features become float64 (missing → NaN); categoricals become
        ``category`` with exactly the schema's categories, so the encoding is
        identical at training and serving time. Values outside the known
        categories become missing: validate first where that matters.
        """
        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
        columns: dict[str, pd.Series] = {}
        for spec in self.features:
            if spec.name in frame.columns:
                col = frame[spec.name]
            else:
                col = pd.Series([None] * len(frame), index=frame.index, dtype="object")
            if spec.kind == "numeric":
                columns[spec.name] = pd.to_numeric(col, errors="coerce").astype("float64")
            else:
                as_text = col.astype("object").map(category_text)
                columns[spec.name] = pd.Series(
                    pd.Categorical(as_text, categories=spec.categories or []),
                    index=frame.index,
                )
        return pd.DataFrame(columns, index=frame.index)

    def encode(self, rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> np.ndarray:
        """The model's input matrix: the one encoding of every consumer.

        Float64, one column per feature in schema order: numbers as they are, a category
        as its code (its index in the schema's categories, so the codes are the ones
        :meth:`to_frame` gives the model at training time), missing or unknown as NaN.
        XGBoost reads it with the schema's :attr:`feature_types`. Rows (mappings) are
        encoded by dict lookups, about ten times faster than building the frame, and a
        row that holds every feature in schema order (a dict of a whole row, or a
        validated request's :class:`SchemaRow`) straight from its values, about 2.5
        times faster again; a value no lookup takes (text in a numeric column) falls
        back to the frame's rules.
        """
        if isinstance(rows, pd.DataFrame):
            return self._encode_frame(rows)
        records = rows if isinstance(rows, list) else list(rows)
        own, getters, coders = self._names, self._getters, self._coders
        values = []
        try:
            for row in records:
                if type(row) is SchemaRow and row.names is own:  # validated: values as they are
                    cells = list(row.values_in_order)
                elif tuple(row) == own:  # every feature, in schema order
                    cells = list(row.values())
                else:
                    values.append([get(row) for get in getters])
                    continue
                for index, code in coders:
                    cells[index] = code(cells[index])
                values.append(cells)
            matrix = np.array(values, dtype=np.float64)
        except (TypeError, ValueError, AttributeError):
            return self._encode_frame(pd.DataFrame(records))
        return matrix.reshape(len(records), len(getters))

    def _encode_frame(self, rows: pd.DataFrame) -> np.ndarray:
        frame = self.to_frame(rows)
        matrix = np.empty((len(frame), len(self.features)), dtype=np.float64)
        for index, spec in enumerate(self.features):
            column = frame[spec.name]
            if spec.kind == "categorical":
                codes = column.cat.codes.to_numpy(dtype=np.float64)
                codes[codes < 0] = np.nan  # pandas' code for missing
                matrix[:, index] = codes
            else:
                matrix[:, index] = column.to_numpy(dtype=np.float64)
        return matrix

    @cached_property
    def _coders(self) -> list[tuple[int, Callable[[Any], float]]]:
        """``(column, value -> code)`` of each categorical feature."""
        return [
            (index, _coder(spec.categories or []))
            for index, spec in enumerate(self.features)
            if spec.kind == "categorical"
        ]

    @cached_property
    def _getters(self) -> list[Callable[[Mapping[str, Any]], Any]]:
        coders = dict(self._coders)
        return [
            _code_getter(spec.name, coders[index]) if index in coders else _value_getter(spec.name)
            for index, spec in enumerate(self.features)
        ]

    def encode_target(self, values: pd.Series) -> np.ndarray:
        """The training label: class indices (the model's output order), or for regression
        the target as float64.

        Raises:
            ValueError: if a label is not one of the schema's classes, or a regression
                target is not a finite number.
        """
        if self.target.is_regression:
            numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
            if not np.all(np.isfinite(numbers)):
                raise ValueError(f"the target {self.target.name!r} has non-numeric values")
            return numbers
        lookup = {label_key(c): i for i, c in enumerate(self.target.classes)}
        keys = values.map(label_key)
        unknown = sorted({str(k) for k in keys if k not in lookup})
        if unknown:
            raise ValueError(f"unknown target label(s) {unknown}; known: {self.target.classes}")
        return keys.map(lookup).to_numpy(dtype=np.int64)

    def example_row(self) -> dict[str, Any]:
        """A valid row built from the schema: medians and most frequent categories."""
        row: dict[str, Any] = {}
        for spec in self.features:
            if spec.kind == "numeric":
                value = spec.median if spec.median is not None else 0.0
                row[spec.name] = int(value) if spec.integer else value
            else:
                row[spec.name] = spec.mode or next(iter(spec.categories or []), None)
        return row


def _value_getter(name: str) -> Callable[[Mapping[str, Any]], Any]:
    def get(row: Mapping[str, Any]) -> Any:
        return row.get(name)  # numpy turns None into NaN

    return get


def _coder(categories: Sequence[str]) -> Callable[[Any], float]:
    """A categorical value's code (its index in ``categories``), NaN if missing or unknown."""
    codes = {category: float(i) for i, category in enumerate(categories)}

    def code(value: Any) -> float:
        found = codes.get(value) if type(value) is str else None  # validated rows: one lookup
        if found is None:
            text = category_text(value)
            found = codes.get(text, math.nan) if text is not None else math.nan
        return found

    return code


def _code_getter(name: str, code: Callable[[Any], float]) -> Callable[[Mapping[str, Any]], float]:
    def get(row: Mapping[str, Any]) -> float:
        return code(row.get(name))

    return get


def category_text(value: Any) -> str | None:
    """A categorical value as the schema stores it: its text, or None when missing.

    Numbers are matched by their text, an integral float without its ``.0``: ``1``,
    ``1.0``, ``np.int64(1)`` and ``"1"`` are all the category ``"1"``; ``True`` is
    ``"True"``. ``None``, NaN and ``pd.NA`` are missing. This is what training and
    serving frames hold (:meth:`FeatureSchema.to_frame`); request validation reads
    JSON values with it too, but only numbers, bools and strings
    (``tabserve.core.validation``).
    """
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def label_key(value: Any) -> Label:
    """Normalise a label so that 1, 1.0, np.int64(1) and "1" compare as the class 1."""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return int(value)
    text = str(value)
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return text


def schema_from_json(text: str | bytes | Mapping[str, Any]) -> FeatureSchema:
    """Parse a schema from JSON text or an already-decoded mapping."""
    if isinstance(text, Mapping):
        return FeatureSchema.model_validate(dict(text))
    return FeatureSchema.model_validate(json.loads(text))
