"""The one encoding of rows into the model's input, used by training, serving, the UI and
the registered MLflow model alike.

A frame (training, the MLflow model) is encoded through pandas: numeric features as
float64, categoricals as ``category`` with exactly the schema's categories (so the codes
are the same at training and serving time), dates and timestamps as their parts
(:mod:`tabserve.core.when`). Rows (mappings: a request's) are encoded by lookups, about
ten times faster than building a frame.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from tabserve.core.rows import SchemaRow, category_text
from tabserve.core.when import encode_when, frame_parts


class Encoder:
    """The encoding of one schema (made once per schema: ``schema.encode``)."""

    def __init__(self, schema: Any) -> None:  # a FeatureSchema (which builds its Encoder)
        self.schema = schema
        # The schema's own tuple: a validated SchemaRow carries this very object (the fast path).
        self.names: tuple[str, ...] = schema._names

    def frame(self, rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> pd.DataFrame:
        """Build the model's input frame: schema column order and dtypes.

        Numeric features become float64 (missing → NaN); categoricals become
        ``category`` with exactly the schema's categories, so the encoding is
        identical at training and serving time. Values outside the known
        categories become missing: validate first where that matters.
        """
        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
        columns: dict[str, pd.Series] = {}
        for spec in self.schema.features:
            if spec.name in frame.columns:
                col = frame[spec.name]
            else:
                col = pd.Series([None] * len(frame), index=frame.index, dtype="object")
            if spec.kind == "numeric":
                columns[spec.name] = pd.to_numeric(col, errors="coerce").astype("float64")
            elif spec.is_when:
                parts = frame_parts(col, spec.kind, spec.reference_time, spec.format)
                columns.update({f"{spec.name}.{part}": values for part, values in parts.items()})
            elif _has_categories(col, spec.categories or []):
                columns[spec.name] = col  # already coded with the schema's categories
            else:
                if pd.api.types.is_string_dtype(col.dtype) and col.dtype != object:
                    as_text = col  # pandas' text dtype: category_text is the identity on it
                else:
                    as_text = col.astype("object").map(category_text)
                if spec.other is not None:  # a value outside the kept ones is the other level
                    kept = as_text.isna() | as_text.isin(spec.categories or [])
                    as_text = as_text.where(kept, spec.other)
                columns[spec.name] = pd.Series(
                    categorical(as_text, spec.categories or []), index=frame.index
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
        if self.schema.has_when:
            try:
                return self._encode_with_when(records)
            except (TypeError, ValueError, AttributeError):
                return self._encode_frame(pd.DataFrame([dict(r) for r in records]))
        own, getters, coders = self.names, self._getters, self._coders
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
        frame = self.frame(rows)
        matrix = np.empty((len(frame), len(self.schema.columns)), dtype=np.float64)
        for index, model_column in enumerate(self.schema.columns):
            column = frame[model_column.name]
            if model_column.categorical:
                codes = column.cat.codes.to_numpy(dtype=np.float64)
                codes[codes < 0] = np.nan  # pandas' code for missing
                matrix[:, index] = codes
            else:
                matrix[:, index] = column.to_numpy(dtype=np.float64)
        return matrix

    def _encode_with_when(self, records: list[Any]) -> np.ndarray:
        """:meth:`encode` of rows (mappings) when dates or timestamps widen the matrix."""
        encoders = self._cell_encoders
        names = self.names
        values = []
        for row in records:
            cells: list[float] = []
            for name, encoder in zip(names, encoders, strict=True):
                cells.extend(encoder(row.get(name)))
            values.append(cells)
        return np.array(values, dtype=np.float64).reshape(len(records), len(self.schema.columns))

    @cached_property
    def _cell_encoders(self) -> list[Callable[[Any], list[float]]]:
        """Per feature: its value → its model columns' values."""
        return [_cell_encoder(spec) for spec in self.schema.features]

    @cached_property
    def _coders(self) -> list[tuple[int, Callable[[Any], float]]]:
        """``(column, value -> code)`` of each categorical feature."""
        return [
            (index, _coder(spec.categories or [], spec.other))
            for index, spec in enumerate(self.schema.features)
            if spec.kind == "categorical"
        ]

    @cached_property
    def _getters(self) -> list[Callable[[Mapping[str, Any]], Any]]:
        coders = dict(self._coders)
        return [
            _code_getter(spec.name, coders[index]) if index in coders else _value_getter(spec.name)
            for index, spec in enumerate(self.schema.features)
        ]


def _value_getter(name: str) -> Callable[[Mapping[str, Any]], Any]:
    def get(row: Mapping[str, Any]) -> Any:
        return row.get(name)  # numpy turns None into NaN

    return get


def _coder(categories: Sequence[str], other: str | None = None) -> Callable[[Any], float]:
    """A categorical value's code (its index in ``categories``): NaN if missing; if unknown,
    the code of the ``other`` level where the schema has one, else NaN."""
    codes = {category: float(i) for i, category in enumerate(categories)}
    unknown = codes[other] if other is not None and other in codes else math.nan

    def code(value: Any) -> float:
        found = codes.get(value) if type(value) is str else None  # validated rows: one lookup
        if found is None:
            text = category_text(value)
            found = math.nan if text is None else codes.get(text, unknown)
        return found

    return code


def _code_getter(name: str, code: Callable[[Any], float]) -> Callable[[Mapping[str, Any]], float]:
    def get(row: Mapping[str, Any]) -> float:
        return code(row.get(name))

    return get


def _cell_encoder(spec: Any) -> Callable[[Any], list[float]]:
    """One feature's value → the values of its model columns."""
    if spec.is_when:
        kind, reference, fmt = spec.kind, spec.reference_time, spec.format

        def when(value: Any) -> list[float]:
            return encode_when(value, kind, reference, fmt)

        return when
    if spec.kind == "categorical":
        code = _coder(spec.categories or [], spec.other)

        def categorical(value: Any) -> list[float]:
            return [code(value)]

        return categorical

    def numeric(value: Any) -> list[float]:
        return [math.nan if value is None else float(value)]

    return numeric


def categorical(text: Any, categories: list[str]) -> pd.Categorical:
    """``text`` (a column of text or None) coded with exactly ``categories``: anything else
    is missing.

    By lookup of the column's distinct values (pandas 3 deprecates building a
    ``Categorical`` from values outside its categories): a hash pass over the column,
    then one lookup per distinct value, four times cheaper than a lookup per row.
    """
    codes, distinct = pd.factorize(pd.Series(text, copy=False), use_na_sentinel=True)
    lookup = pd.Index(categories, dtype="object").get_indexer(pd.Index(distinct, dtype="object"))
    # A missing value's code, -1, picks the appended -1.
    return pd.Categorical.from_codes(np.append(lookup, -1)[codes], categories=categories)


def _has_categories(column: pd.Series, categories: list[str]) -> bool:
    """Whether ``column`` is a ``category`` of exactly ``categories``, in their order (as
    :func:`tabserve.core.frame_checks.check_frame` gives it)."""
    dtype = column.dtype
    return isinstance(dtype, pd.CategoricalDtype) and list(dtype.categories) == categories


def unknown_categories(schema: Any, frame: pd.DataFrame, listed: int = 5) -> dict[str, list[str]]:
    """Per categorical feature of ``frame``: up to ``listed`` of its values never seen in
    training (and not folded into the feature's ``other`` level), for a caller that
    refuses them rather than read them as missing."""
    found: dict[str, list[str]] = {}
    for spec in schema.features:
        if spec.kind != "categorical" or spec.other is not None or spec.name not in frame:
            continue
        if _has_categories(frame[spec.name], spec.categories or []):
            continue  # coded with the schema's categories: nothing else can be in it
        known = set(spec.categories or ())
        texts = frame[spec.name].astype("object").map(category_text).dropna().unique()
        unknown = sorted(str(text) for text in texts if text not in known)
        if unknown:
            found[spec.name] = unknown[:listed]
    return found
