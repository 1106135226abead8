"""The prediction form, derived from the FeatureSchema (no Gradio here: plain data).

One input per feature: a number box for a numeric feature (observed range shown,
training median as default), a dropdown of the known categories for a categorical
one, a date (or date and time) picker for a date or timestamp (the latest value in
training as default). Values read back from the form become a request row exactly like a JSON body
of ``POST /predict``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tabserve.core.schema import FeatureSchema, FeatureSpec, category_text
from tabserve.core.when import iso

# Dropdowns cannot hold None; this choice stands for "missing" (nullable features only).
MISSING_CHOICE = ""
MISSING_LABEL = "(missing)"


@dataclass(frozen=True)
class FormField:
    """How one feature is shown in the form."""

    name: str
    kind: Literal["number", "dropdown", "date", "timestamp"]
    label: str
    info: str
    default: Any
    integer: bool = False
    step: float = 1.0
    choices: tuple[tuple[str, str], ...] = ()  # (label, value) of a dropdown


def _number_text(value: float | None, integer: bool) -> str:
    if value is None:
        return "?"
    return str(int(value)) if integer else f"{value:.6g}"


def _step(spec: FeatureSpec) -> float:
    """A step that suits the feature's scale (the browser's spin buttons use it)."""
    if spec.integer:
        return 1.0
    span = (spec.max or 0.0) - (spec.min or 0.0)
    if span <= 0 or not math.isfinite(span):
        return 0.01
    return float(10 ** math.floor(math.log10(span / 100)))


def form_field(spec: FeatureSpec) -> FormField:
    """The form field of one feature."""
    missing = "; may be left empty (missing)" if spec.nullable else ""
    if spec.kind == "numeric":
        default = spec.median
        if default is not None and spec.integer:
            default = int(default)
        info = (
            f"observed {_number_text(spec.min, spec.integer)} to "
            f"{_number_text(spec.max, spec.integer)}, median "
            f"{_number_text(spec.median, spec.integer)}{missing}"
        )
        return FormField(
            spec.name,
            "number",
            spec.name,
            info,
            default,
            integer=spec.integer,
            step=_step(spec),
        )
    if spec.is_when:
        info = f"observed {spec.reference} to {spec.latest}{missing}"
        latest = (spec.latest or "").replace("T", " ")  # as the picker writes it
        kind: Literal["date", "timestamp"] = "date" if spec.kind == "date" else "timestamp"
        return FormField(spec.name, kind, spec.name, info, latest or None)
    categories = list(spec.categories or [])
    choices = [(c, c) for c in categories]
    if spec.nullable:
        choices.append((MISSING_LABEL, MISSING_CHOICE))
    choice = spec.mode or (categories[0] if categories else MISSING_CHOICE)
    info = f"{len(categories)} known categories{missing}"
    return FormField(spec.name, "dropdown", spec.name, info, choice, choices=tuple(choices))


def form_fields(schema: FeatureSchema) -> list[FormField]:
    """One field per feature, in model input order."""
    return [form_field(spec) for spec in schema.features]


def row_from_values(schema: FeatureSchema, values: Sequence[Any]) -> dict[str, Any]:
    """The request row for the form's values (in :func:`form_fields` order).

    Empty inputs become ``None`` (missing), as ``null`` would in a JSON body.
    """
    row: dict[str, Any] = {}
    for spec, value in zip(schema.features, values, strict=True):
        if value is None or (isinstance(value, str) and value == MISSING_CHOICE):
            row[spec.name] = None
        elif spec.kind == "numeric" and isinstance(value, int | float):
            row[spec.name] = int(value) if spec.integer and float(value).is_integer() else value
        else:
            row[spec.name] = value
    return row


def values_from_row(schema: FeatureSchema, row: Mapping[str, Any]) -> list[Any]:
    """The form's values for a row (e.g. a test example); missing becomes empty."""
    values: list[Any] = []
    for spec in schema.features:
        value = row.get(spec.name)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            values.append(MISSING_CHOICE if spec.kind == "categorical" else None)
        elif spec.kind == "categorical":
            values.append(category_text(value))
        elif spec.is_when:  # as the picker writes it: a space between date and time
            text = iso(value)
            values.append(text.replace("T", " ") if text else None)
        else:
            values.append(value)
    return values


def example_rows(schema: FeatureSchema, examples: Sequence[Mapping[str, Any]]) -> list[dict]:
    """The bundle's test examples as (features only) rows, with their true label apart.

    Returns:
        Rows ``{"row": {feature: value}, "label": true label or None}``.
    """
    target = schema.target.name
    names = schema.feature_names
    return [
        {"row": {n: example.get(n) for n in names}, "label": example.get(target)}
        for example in examples
    ]
