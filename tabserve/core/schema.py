"""The FeatureSchema: the contract between training, serving, the UI and load tests.

It is inferred once from the training data, saved next to the model as JSON, and
read back by every consumer. Nothing downstream hard-codes a feature name.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from tabserve.core.encoding import Encoder
from tabserve.core.rows import SchemaRow, category_text
from tabserve.core.when import iso, parse_when, parts_of

__all__ = ["SchemaRow", "category_text"]  # re-exported: where every consumer finds them

SCHEMA_VERSION = 1

FeatureKind = Literal["numeric", "categorical", "date", "timestamp"]
WHEN_KINDS = ("date", "timestamp")
Label = str | int


def _unset(value: Any) -> bool:
    return value is None


class FeatureSpec(BaseModel):
    """One input feature as observed in the training data.

    A ``date`` or ``timestamp`` feature is given as it is and becomes its parts for the
    model (:mod:`tabserve.core.when`): ``reference`` is its earliest training value (the
    origin of its elapsed days), ``latest`` its latest; ``format``, where
    ``data.formats`` gives one, is how its text was written besides ISO 8601
    (``strftime`` codes), and is taken wherever the feature is read. A categorical whose
    rare values were folded (``prepare.max_categories``) names the level they became in
    ``other``, the last of its categories.
    """

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
    # Written only when set: a schema without dates or folded categories stays readable
    # by releases before them (a rollback of the service keeps serving newer models).
    reference: str | None = Field(default=None, exclude_if=_unset)
    latest: str | None = Field(default=None, exclude_if=_unset)
    other: str | None = Field(default=None, exclude_if=_unset)
    format: str | None = Field(default=None, exclude_if=_unset)

    @property
    def is_when(self) -> bool:
        """Whether the feature is a date or a timestamp."""
        return self.kind in WHEN_KINDS

    @cached_property
    def reference_time(self) -> dt.datetime:
        """``reference`` as a datetime (the epoch when the schema has none)."""
        parsed = parse_when(self.reference) if self.reference else None
        return parsed or dt.datetime(1970, 1, 1)


@dataclass(frozen=True)
class ModelColumn:
    """One column of the model's input: a feature, or a part of a date or timestamp."""

    name: str  # the booster's feature name: the feature's, or "<feature>.<part>"
    feature: str
    part: str | None
    categorical: bool


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

    @cached_property
    def columns(self) -> tuple[ModelColumn, ...]:
        """The model's input columns, in order: one per feature, and one per part of a
        date or timestamp (its name ``<feature>.<part>``)."""
        columns: list[ModelColumn] = []
        for spec in self.features:
            if spec.is_when:
                columns += [
                    ModelColumn(f"{spec.name}.{part}", spec.name, part, False)
                    for part in parts_of(spec.kind)
                ]
            else:
                columns.append(ModelColumn(spec.name, spec.name, None, spec.kind == "categorical"))
        return tuple(columns)

    @property
    def model_feature_names(self) -> list[str]:
        """The booster's feature names: :attr:`feature_names`, with each date or timestamp
        expanded into its parts."""
        return [column.name for column in self.columns]

    @property
    def has_when(self) -> bool:
        """Whether any feature is a date or a timestamp."""
        return any(f.is_when for f in self.features)

    @property
    def feature_types(self) -> list[str]:
        """XGBoost's feature types of the model columns: ``c`` (categorical) or ``float``."""
        return ["c" if column.categorical else "float" for column in self.columns]

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

    # ---- frames: tabserve/core/encoding.py -------------------------------------
    def to_frame(self, rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> pd.DataFrame:
        """The model's input frame (:meth:`tabserve.core.encoding.Encoder.frame`)."""
        return self._encoder.frame(rows)

    def encode(self, rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> np.ndarray:
        """The model's input matrix, the one encoding of every consumer
        (:class:`tabserve.core.encoding.Encoder`)."""
        return self._encoder.encode(rows)

    @cached_property
    def _encoder(self) -> Encoder:
        return Encoder(self)

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
            elif spec.is_when:
                row[spec.name] = spec.latest or spec.reference
            else:
                row[spec.name] = spec.mode or next(iter(spec.categories or []), None)
        return row

    def json_row(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """``row`` with JSON values only: a date or timestamp as ISO text, missing as None."""
        kinds = {spec.name: spec for spec in self.features}
        out: dict[str, Any] = {}
        for name, value in row.items():
            spec = kinds.get(name)
            if spec is not None and spec.is_when:
                try:
                    out[name] = iso(value, spec.format)
                except ValueError:  # unreadable: the model reads it as missing too
                    out[name] = None
            elif (
                value is None
                or value is pd.NaT
                or value is pd.NA
                or (isinstance(value, float) and math.isnan(value))
            ):
                out[name] = None
            else:
                out[name] = value.item() if isinstance(value, np.generic) else value
        return out


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
