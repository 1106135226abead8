"""A validated row, and a categorical value as the schema holds it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd


class SchemaRow(Mapping[str, Any]):
    """One validated row: its values in schema order, read as a mapping of feature names.

    What the request validator gives (:meth:`FeatureSchema.row`): encoding takes the
    values as they are, with no lookup per feature, and whatever wants names reads the
    row as any mapping (``row["age"]``, ``dict(row)``; equal to the dict of the same
    items).

    ``id`` is the row's id once the service has given it one (``<request id>-<index>``,
    :mod:`tabserve.http.body`): it travels with the row through adaptive batching, into
    the row's answer and the served-rows record.
    """

    __slots__ = ("_index", "id", "names", "values_in_order")

    def __init__(self, values: list[Any], names: tuple[str, ...], index: dict[str, int]) -> None:
        self.values_in_order = values
        self.names = names
        self._index = index
        self.id: str | None = None

    def __getitem__(self, name: str) -> Any:
        return self.values_in_order[self._index[name]]

    def __iter__(self) -> Any:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"SchemaRow({dict(self)!r})"


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
