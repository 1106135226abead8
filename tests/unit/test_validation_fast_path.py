"""``RequestValidator.validated_rows`` (the gateway's fast path) agrees with ``validate_body``.

The fast path parses, validates and builds the rows with pydantic-core in one pass (the
body's only parse: the gateway hands the rows to the API) and falls back to
``validate_body`` on any refusal; these tests pin that both accept the same bodies,
give the same rows, and raise the same errors.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tabserve.core.errors import ServiceError
from tabserve.core.schema import FeatureSchema, FeatureSpec, TargetSpec
from tabserve.core.validation import RequestValidator

MIXED = FeatureSchema(
    features=[
        FeatureSpec(name="bill length", kind="numeric", min=30, max=60, median=44),
        FeatureSpec(name="mass", kind="numeric", integer=True, nullable=True, median=4000),
        FeatureSpec(
            name="island", kind="categorical", categories=["Biscoe", "Dream"], mode="Biscoe"
        ),
        FeatureSpec(name="grade", kind="categorical", categories=["1", "2"], nullable=True),
    ],
    target=TargetSpec(name="species", classes=["a", "b", "c"]),
)
NUMERIC = FeatureSchema(
    features=[
        FeatureSpec(name="mean radius", kind="numeric", min=5, max=30, median=13),
        FeatureSpec(name="mean area", kind="numeric", integer=True, min=100, max=2500),
    ],
    target=TargetSpec(name="target", classes=[0, 1]),
)

BODIES: list[bytes] = [
    b'{"rows": [{"bill length": 41.5, "mass": 3900, "island": "Dream", "grade": 2}]}',
    b'{"rows": [{"bill length": 41, "island": "Biscoe"}]}',
    b'{"rows": [{"bill length": 41.5, "mass": null, "island": "Dream", "grade": null}]}',
    b'{"rows": [{"mean radius": 12.5, "mean area": 500}, {"mean radius": 7, "mean area": 1e2}]}',
    b'{"rows": [{"mean radius": "12.5", "mean area": 500}]}',
    b'{"rows": [{"mean radius": NaN, "mean area": 500}]}',
    b'{"rows": [{"mean radius": 1e400, "mean area": 500}]}',
    b'{"rows": [{"mean radius": true, "mean area": 500}]}',
    b'{"rows": [{"mean radius": 12.5}]}',
    b'{"rows": [{"mean radius": 12.5, "mean area": 500, "extra": 1}]}',
    b'{"rows": [{"bill length": 41.5, "island": "Torgersen"}]}',
    b'{"rows": []}',
    b'{"rows": ' + json.dumps([{"mean radius": 1.0, "mean area": 2.0}] * 6).encode() + b"}",
    b'{"rows": [], "other": 1}',
    b"[1, 2]",
    b"{",
    b"\xff\xfe",
    b"",
    '{"rows": [{"mean radius": 12.5, "mean area": 500}]}'.encode("utf-16"),
    b'\xef\xbb\xbf{"rows": [{"mean radius": 12.5, "mean area": 500}]}',
]


def _outcome(call: Any) -> tuple[str, Any]:
    try:
        return "ok", call()
    except ServiceError as error:
        return "error", (type(error).__name__, error.status, error.message, error.details)


@pytest.mark.parametrize("schema", [MIXED, NUMERIC], ids=["mixed", "numeric"])
@pytest.mark.parametrize("body", BODIES)
def test_fast_path_agrees_with_validate_body(schema: FeatureSchema, body: bytes) -> None:
    validator = RequestValidator(schema, max_rows=5)
    slow = _outcome(lambda: validator.validate_body(body))
    fast = _outcome(lambda: validator.validated_rows(body))
    assert fast == slow
    if fast[0] == "ok":  # the same types too: numbers as floats, categories as text
        assert [[type(v) for v in r.values()] for r in fast[1]] == [
            [type(v) for v in r.values()] for r in slow[1]
        ]


def test_rows_fill_missing_and_render_categories() -> None:
    validator = RequestValidator(MIXED, max_rows=5)
    body = b'{"rows": [{"bill length": 41, "island": "Biscoe", "grade": 1}]}'
    assert validator.validated_rows(body) == [
        {"bill length": 41.0, "mass": None, "island": "Biscoe", "grade": "1"}
    ]
