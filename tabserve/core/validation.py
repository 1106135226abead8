"""The request model, generated from the model's FeatureSchema, and body validation.

Nothing here names a feature: the Pydantic row model is built from the schema
that ships with the model, so a model trained on another dataset is validated
with no code change. Rules:

- numbers must be finite JSON numbers within 32-bit float range, which is what
  XGBoost reads (NaN, Infinity, overflow such as 1e400 and 1e300 are refused;
  strings are not coerced);
- a categorical must be one of the schema's categories (numbers are matched by
  their text, so ``1`` matches the category ``"1"``);
- ``null`` (or leaving the field out) is accepted only for a nullable feature;
- unknown fields are refused; a missing required field is named.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
)

from tabserve.core.errors import MalformedRequestError, PayloadTooLargeError, RequestValidationError
from tabserve.core.schema import FeatureSchema, FeatureSpec, category_text

ROWS_FIELD = "rows"
# XGBoost reads 32-bit floats: a larger (finite, float64) number would become infinite.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _json_category_text(value: Any) -> Any:
    """A JSON number, bool or string as category text, the way training frames hold it.

    Anything else is left for the field to accept or refuse: ``null`` (missing, where
    the feature is nullable), and NaN, Infinity, lists and objects, which are never a
    category (:func:`~tabserve.core.schema.category_text` would read NaN as missing and
    ``[1]`` as the text ``"[1]"``).
    """
    if isinstance(value, str):  # already text (the common case, on the hot path)
        return value
    if isinstance(value, bool | int) or (isinstance(value, float) and math.isfinite(value)):
        return category_text(value)
    return value


def _field_type(spec: FeatureSpec) -> Any:
    """The Pydantic type of one feature."""
    if spec.kind == "numeric":
        base: Any = Annotated[
            float,
            Field(strict=True, allow_inf_nan=False, ge=-FLOAT32_MAX, le=FLOAT32_MAX),
        ]
    else:
        categories = tuple(spec.categories or ())
        if not categories:
            # A categorical with no observed category can only ever be missing.
            base = Literal[None]
        else:
            base = Annotated[Literal[categories], BeforeValidator(_json_category_text)]
    return base | None if spec.nullable else base


def build_row_model(schema: FeatureSchema) -> type[BaseModel]:
    """A Pydantic model for one input row of ``schema``.

    Feature names are used as aliases (they may contain spaces or start with a
    digit); Python field names are positional (``f0``, ``f1``...).
    """
    fields: dict[str, Any] = {}
    for index, spec in enumerate(schema.features):
        default = None if spec.nullable else ...
        description = (
            f"numeric{' (integer)' if spec.integer else ''}, observed [{spec.min}, {spec.max}]"
            if spec.kind == "numeric"
            else f"one of {spec.categories}"
        ) + ("; may be null" if spec.nullable else "; required")
        fields[f"f{index}"] = (
            _field_type(spec),
            Field(default=default, alias=spec.name, description=description),
        )
    return create_model(
        "Row",
        __config__=ConfigDict(extra="forbid", populate_by_name=False),
        **fields,
    )


def build_request_model(schema: FeatureSchema, max_rows: int) -> type[BaseModel]:
    """The request body model: ``{"rows": [Row, ...]}`` with 1 to ``max_rows`` rows."""
    row_model = build_row_model(schema)
    return create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="forbid"),
        rows=(list[row_model], Field(min_length=1, max_length=max_rows)),  # type: ignore[valid-type]
    )


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters (error messages never echo a whole body)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def _short_message(message: str, limit: int = 300) -> str:
    return message if len(message) <= limit else f"{message[: limit - 1]}…"


def _detail(error: dict[str, Any], schema: FeatureSchema) -> dict[str, Any]:
    """One client-facing detail entry for a Pydantic error."""
    loc = list(error["loc"])
    detail: dict[str, Any] = {"message": _short_message(error["msg"]), "type": error["type"]}
    if len(loc) >= 2 and loc[0] == ROWS_FIELD and isinstance(loc[1], int):
        detail["row"] = loc[1]
        if len(loc) >= 3:
            field = str(loc[2])
            detail["field"] = _short_message(field, 200)
            if error["type"] == "extra_forbidden":
                detail["message"] = f"unknown field {_short(field)}"
            elif error["type"] == "missing":
                detail["message"] = f"required field {field!r} is missing"
            try:
                spec = schema.feature(field)
            except KeyError:
                spec = None
            if spec is not None and spec.kind == "categorical":
                detail["allowed"] = list(spec.categories or [])
                if error["type"] == "literal_error":
                    detail["message"] = (
                        f"{field!r}: unknown category {_short(error.get('input'))}; "
                        f"allowed: {spec.categories}"
                    )
            elif spec is not None and error["type"] in ("greater_than_equal", "less_than_equal"):
                detail["message"] = (
                    f"{field!r} is out of range: the model reads 32-bit floats "
                    f"(|value| ≤ {FLOAT32_MAX:.4g})"
                )
            elif spec is not None and error["type"].startswith("finite_number"):
                detail["message"] = f"{field!r} must be a finite number"
            elif spec is not None and type(error.get("input")) is int:
                detail["message"] = f"{field!r} is out of range: it must be a finite number"
            elif spec is not None and error["type"] in ("float_type", "float_parsing"):
                detail["message"] = f"{field!r} must be a number"
    else:
        detail["field"] = ".".join(str(p) for p in loc)
    return detail


class RequestValidator:
    """Validates prediction request bodies against one model's schema.

    Args:
        schema: the served model's FeatureSchema.
        max_rows: most rows accepted in one request (more is a 413).
    """

    def __init__(self, schema: FeatureSchema, max_rows: int) -> None:
        self.schema = schema
        self.max_rows = max_rows
        self.row_model = build_row_model(schema)
        self.request_model = build_request_model(schema, max_rows)

    def parse_json(self, body: bytes) -> Any:
        """Decode a JSON body: UTF-8 only (RFC 8259, and what the fast path reads), no
        byte-order mark; ``json.loads`` alone would also take UTF-16 and UTF-32.

        Raises:
            MalformedRequestError: for a body that is not UTF-8, or invalid JSON (naming
                line and column).
        """
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedRequestError("the request body is not UTF-8 JSON") from None
        if text.startswith("\ufeff"):
            raise MalformedRequestError("the request body starts with a byte-order mark")
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise MalformedRequestError(
                f"the request body is not valid JSON: {exc.msg} "
                f"(line {exc.lineno}, column {exc.colno})"
            ) from None
        except RecursionError:
            raise MalformedRequestError("the request body is nested too deeply") from None
        except ValueError as exc:  # e.g. an integer literal longer than Python accepts
            raise MalformedRequestError(f"the request body cannot be decoded: {exc}") from None

    def validate(self, payload: Any) -> list[dict[str, Any]]:
        """Validate a decoded body; return its rows keyed by feature name.

        Missing nullable features come back as ``None``.

        Raises:
            PayloadTooLargeError: for more than ``max_rows`` rows.
            RequestValidationError: naming every field at fault.
        """
        if not isinstance(payload, dict):
            raise RequestValidationError(
                'the body must be a JSON object: {"rows": [{feature: value, ...}, ...]}',
                details=[{"field": "", "message": "expected an object"}],
            )
        rows = payload.get(ROWS_FIELD)
        if isinstance(rows, list) and len(rows) > self.max_rows:
            raise PayloadTooLargeError(
                f"{len(rows)} rows in one request; the maximum is {self.max_rows}",
                details=[{"field": ROWS_FIELD, "max_rows": self.max_rows, "rows": len(rows)}],
            )
        try:
            model = self.request_model.model_validate(payload)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            details = [_detail(dict(e), self.schema) for e in errors[:50]]
            raise RequestValidationError(
                f"{exc.error_count()} invalid value(s) in the request", details=details
            ) from None
        return [row.model_dump(by_alias=True) for row in getattr(model, ROWS_FIELD)]

    def validate_body(self, body: bytes) -> list[dict[str, Any]]:
        """Decode and validate a raw JSON body (see :meth:`validate`)."""
        return self.validate(self.parse_json(body))

    def validated_rows(self, body: bytes) -> Sequence[Mapping[str, Any]]:
        """Validate a raw JSON body in one pass; return the rows :meth:`validate_body` gives.

        Every feature present (missing nullable ones as ``None``), numbers as floats,
        categories as text; each row a :class:`~tabserve.core.schema.SchemaRow` (equal to the
        dict :meth:`validate_body` gives). A valid body is parsed and validated by
        pydantic-core, without ``json.loads`` or a second parse. Anything
        pydantic-core refuses goes through :meth:`validate_body`, so errors (and their
        statuses) are exactly that method's.

        Raises:
            MalformedRequestError: invalid JSON (400).
            PayloadTooLargeError: more than ``max_rows`` rows (413).
            RequestValidationError: naming every field at fault (422).
        """
        try:
            model = self.request_model.model_validate_json(body)
        except (ValidationError, ValueError):
            return self.validate_body(body)  # raises the precise error
        # The values straight from each row model (its fields are the features, in schema
        # order): eight times cheaper than model_dump into dicts.
        row = self.schema.row
        return [row(list(r.__dict__.values())) for r in getattr(model, ROWS_FIELD)]
