"""The request model, generated from the model's FeatureSchema, and body validation.

Nothing here names a feature: the Pydantic row model is built from the schema
that ships with the model, so a model trained on another dataset is validated
with no code change. Rules:

- numbers must be finite JSON numbers within 32-bit float range, which is what
  XGBoost reads (NaN, Infinity, overflow such as 1e400 and 1e300 are refused;
  strings are not coerced);
- a categorical is one of the schema's categories (numbers are matched by their text,
  so ``1`` matches the category ``"1"``); a category never seen in training is, by the
  policy ``TABSERVE_UNKNOWN_CATEGORY``, read as missing (or as the feature's ``other``
  level, where rare categories were folded in training) and counted (``missing``, the
  default), or refused (``refuse``); an error lists at most :data:`LISTED_CATEGORIES`
  of the allowed values (``GET /model`` has them all);
- a date or timestamp is ISO 8601 text (``2026-12-07``, ``2026-12-07T09:30:00Z``), or
  text in the feature's own format where ``data.formats`` gave one;
- ``null`` (or leaving the field out) is accepted only for a nullable feature;
- unknown fields are refused; a missing required field is named.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
)

from tabserve.core.errors import MalformedRequestError, PayloadTooLargeError, RequestValidationError
from tabserve.core.schema import FeatureSchema, FeatureSpec, category_text
from tabserve.core.when import parse_when

ROWS_FIELD = "rows"
LISTED_CATEGORIES = 20  # allowed values an error lists at most
UnknownPolicy = Literal["missing", "refuse"]
UnknownHook = Callable[[str], None]
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


def _known_or_unknown(spec: FeatureSpec, on_unknown: UnknownHook) -> Any:
    """A validator reading a JSON value as one of ``spec``'s categories, and text never
    seen as missing (or the ``other`` level), reported to ``on_unknown``. A number or
    boolean is taken where it is a category (``1`` for ``"1"``); any other is refused:
    the documented type is text, and a wrong type is a client's error, not a new value."""
    categories = list(spec.categories or ())
    known = frozenset(categories)
    instead = spec.other
    nullable = spec.nullable

    def read(value: Any) -> Any:
        if value is None and not nullable:
            raise ValueError("this feature may not be null")
        text = _json_category_text(value)
        if not isinstance(text, str) or text in known:
            return text  # known, null, or not a category at all (the type refuses it)
        if not isinstance(value, str):  # a number or boolean that is no category: a 422
            raise ValueError(f"{_short(value)} is not a category; allowed: {_listed(categories)}")
        on_unknown(spec.name)
        return instead

    return read


def _when_text(spec: FeatureSpec) -> Any:
    """A validator accepting a date or timestamp as ISO 8601 text, or in the feature's
    own format (kept as given)."""

    fmt = spec.format
    example = "2026-12-07" if spec.kind == "date" else "2026-12-07T09:30:00Z"
    written = f"ISO 8601 (e.g. {example}) or {fmt}" if fmt else f"ISO 8601 (e.g. {example})"

    def check(value: str) -> str:
        try:
            parse_when(value, fmt)
        except ValueError:
            raise ValueError(f"not a {spec.kind} in {written}") from None
        return value

    return check


def _field_type(spec: FeatureSpec, policy: UnknownPolicy, on_unknown: UnknownHook) -> Any:
    """The Pydantic type of one feature."""
    if spec.kind == "numeric":
        base: Any = Annotated[
            float,
            Field(strict=True, allow_inf_nan=False, ge=-FLOAT32_MAX, le=FLOAT32_MAX),
        ]
    elif spec.is_when:
        base = Annotated[str, Field(strict=True, max_length=64), AfterValidator(_when_text(spec))]
    else:
        categories = tuple(spec.categories or ())
        if not categories:
            # A categorical with no observed category can only ever be missing.
            base = Literal[None]
        elif policy == "refuse" and spec.other is None:
            base = Annotated[Literal[categories], BeforeValidator(_json_category_text)]
        else:  # unknown: missing, or the level rare values were folded into (either policy)
            return Annotated[
                str | None,
                BeforeValidator(_known_or_unknown(spec, on_unknown)),
                Field(examples=list(categories)),  # the known ones, for the documentation
            ]
    return base | None if spec.nullable else base


def _describe(spec: FeatureSpec, policy: UnknownPolicy = "refuse") -> str:
    if spec.kind == "numeric":
        text = f"numeric{' (integer)' if spec.integer else ''}, observed [{spec.min}, {spec.max}]"
    elif spec.is_when:
        written = f"ISO 8601 or {spec.format}" if spec.format else "ISO 8601"
        text = f"{spec.kind} ({written}), observed {spec.reference} to {spec.latest}"
    else:
        text = f"one of {_listed(spec.categories or [])}"
        if spec.other is not None:
            text += f" (any other value is read as {spec.other!r})"
        elif policy == "missing" and spec.categories:
            text += " (any other value is read as missing)"
    return text + ("; may be null" if spec.nullable else "; required")


def _listed(categories: Sequence[str]) -> str:
    """At most :data:`LISTED_CATEGORIES` of ``categories``, saying how many there are."""
    if len(categories) <= LISTED_CATEGORIES:
        return str(list(categories))
    shown = ", ".join(repr(c) for c in categories[:LISTED_CATEGORIES])
    return f"[{shown}, …] ({len(categories)} in all: GET /model lists them)"


def build_row_model(
    schema: FeatureSchema,
    policy: UnknownPolicy = "refuse",
    on_unknown: UnknownHook | None = None,
) -> type[BaseModel]:
    """A Pydantic model for one input row of ``schema``.

    Feature names are used as aliases (they may contain spaces or start with a
    digit); Python field names are positional (``f0``, ``f1``...).
    """
    hook: UnknownHook = on_unknown or (lambda _: None)
    fields: dict[str, Any] = {}
    for index, spec in enumerate(schema.features):
        default = None if spec.nullable else ...
        fields[f"f{index}"] = (
            _field_type(spec, policy, hook),
            Field(default=default, alias=spec.name, description=_describe(spec, policy)),
        )
    return create_model(
        "Row",
        __config__=ConfigDict(extra="forbid", populate_by_name=False),
        **fields,
    )


def build_request_model(
    schema: FeatureSchema,
    max_rows: int,
    policy: UnknownPolicy = "refuse",
    on_unknown: UnknownHook | None = None,
) -> type[BaseModel]:
    """The request body model: ``{"rows": [Row, ...]}`` with 1 to ``max_rows`` rows."""
    row_model = build_row_model(schema, policy, on_unknown)
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
            elif error["type"] == "value_error":  # our own validators' words, without Pydantic's
                said = str(error["msg"]).removeprefix("Value error, ")
                detail["message"] = _short_message(f"{field!r}: {said}")
            try:
                spec = schema.feature(field)
            except KeyError:
                spec = None
            if spec is not None and spec.kind == "categorical":
                categories = spec.categories or []
                detail["allowed"] = list(categories[:LISTED_CATEGORIES])
                if len(categories) > LISTED_CATEGORIES:
                    detail["allowed_count"] = len(categories)
                if error["type"] == "literal_error":
                    detail["message"] = (
                        f"{field!r}: unknown category {_short(error.get('input'))}; "
                        f"allowed: {_listed(categories)}"
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
        unknown_category: ``missing`` (a category never seen in training is read as
            missing, or as the feature's ``other`` level, and reported) or ``refuse``.
        on_unknown: told the feature's name of every unknown category read so.
    """

    def __init__(
        self,
        schema: FeatureSchema,
        max_rows: int,
        unknown_category: UnknownPolicy = "missing",
        on_unknown: UnknownHook | None = None,
    ) -> None:
        self.schema = schema
        self.max_rows = max_rows
        self.unknown_category = unknown_category
        self.on_unknown = on_unknown
        self.row_model = build_row_model(schema, unknown_category, self._unknown)
        self.request_model = build_request_model(schema, max_rows, unknown_category, self._unknown)

    def _unknown(self, feature: str) -> None:
        if self.on_unknown is not None:
            self.on_unknown(feature)

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
            # Raises the precise error; rows it accepts become SchemaRows all the same.
            row = self.schema.row
            names = self.schema.feature_names
            return [row([r[name] for name in names]) for r in self.validate_body(body)]
        # The values straight from each row model (its fields are the features, in schema
        # order): eight times cheaper than model_dump into dicts.
        row = self.schema.row
        return [row(list(r.__dict__.values())) for r in getattr(model, ROWS_FIELD)]
