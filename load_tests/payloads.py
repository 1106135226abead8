"""Realistic request rows for the load tests, built through the model's FeatureSchema.

Rows come from the prepared test split (``data/prepared/test.parquet``) and/or the
sample test rows that travel in the model bundle (``examples.json``); the target and
any column the schema does not list are dropped, and every value is rendered the way
the API expects it (finite numbers, text categories, ``null`` for missing). Nothing
here names a feature, so any dataset the pipeline accepts works.

This module is plain Python (no gevent): the benchmark and the tests call it to
write a rows file, which the locustfile reads (``TABSERVE_LOAD_ROWS``)::

    python -m load_tests.payloads --bundle .bentoml/models/tabserve/v1 \
        --test-split data/prepared/test.parquet --out load_tests/results/rows.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tabserve.core.bundle import read_examples, read_schema
from tabserve.core.schema import FeatureSchema, FeatureSpec
from tabserve.core.when import iso


def _json_value(spec: FeatureSpec, value: Any) -> Any:
    """One feature value as the API takes it (None for missing)."""
    if value is None:
        return None
    try:
        import pandas as pd

        if value is pd.NA or value is pd.NaT:
            return None
    except ImportError:  # pragma: no cover - pandas ships with tabserve
        pass
    if spec.is_when:
        try:
            return iso(value)
        except ValueError:
            return None
    if spec.kind == "numeric":
        number = float(value)
        if not math.isfinite(number):
            return None
        return int(number) if spec.integer and number.is_integer() else number
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return str(int(value)) if value.is_integer() else str(value)
    return str(value)


def api_rows(schema: FeatureSchema, records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Schema features only, JSON-ready; rows the API would refuse are skipped.

    A row is skipped when a non-nullable feature is missing or a categorical value is
    not one of the schema's categories (possible in a held-out split).
    """
    rows = []
    for record in records:
        row: dict[str, Any] = {}
        for spec in schema.features:
            value = _json_value(spec, record.get(spec.name))
            if value is None and not spec.nullable:
                break
            if spec.kind == "categorical" and value not in (None, *(spec.categories or [])):
                break
            row[spec.name] = value
        else:
            rows.append(row)
    return rows


def load_rows(
    bundle: str | Path | None = None,
    test_split: str | Path | None = None,
    limit: int = 2000,
) -> list[dict[str, Any]]:
    """Request rows from a bundle's ``examples.json`` and/or a prepared test split.

    Args:
        bundle: a BentoML model directory (schema and examples are read from it).
        test_split: a Parquet or CSV file with the schema's feature columns.
        limit: most rows kept.

    Raises:
        ValueError: when no schema is available or no valid row was found.
    """
    if bundle is None:
        raise ValueError("a model bundle (for its schema) is required")
    schema = read_schema(bundle)
    records: list[Mapping[str, Any]] = []
    if test_split is not None and Path(test_split).exists():
        import pandas as pd

        path = Path(test_split)
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        records.extend(frame.astype("object").to_dict("records"))
    records.extend(read_examples(bundle))
    rows = api_rows(schema, records)[:limit]
    if not rows:
        raise ValueError(f"no valid request row found in {bundle} / {test_split}")
    return rows


def write_rows(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Write rows as a JSON list (the locustfile reads it)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, allow_nan=False))
    return out


def bundle_dir(bentoml_home: str | Path, tag: str) -> Path:
    """The directory of BentoML model ``tag`` (``name:version`` or ``name:latest``)."""
    name, _, version = tag.partition(":")
    models = Path(bentoml_home) / "models" / name
    if version in ("", "latest"):
        latest = models / "latest"
        if not latest.is_file():
            raise FileNotFoundError(
                f"no model {name!r} in {bentoml_home}: train one with `make model`"
            )
        version = latest.read_text().strip()
    if not (models / version).is_dir():
        raise FileNotFoundError(f"no model {name}:{version} in {bentoml_home}")
    return models / version


def main(argv: list[str] | None = None) -> int:
    """CLI: write a rows file for the locustfile."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, help="BentoML model directory")
    parser.add_argument(
        "--bentoml-home",
        type=Path,
        default=Path(os.environ.get("BENTOML_HOME", ".bentoml")),
        help="BentoML home (default: $BENTOML_HOME or .bentoml)",
    )
    parser.add_argument("--model-tag", default="tabserve:latest")
    parser.add_argument("--test-split", type=Path, default=Path("data/prepared/test.parquet"))
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    bundle = args.bundle or bundle_dir(args.bentoml_home, args.model_tag)
    rows = load_rows(bundle, args.test_split, args.limit)
    write_rows(rows, args.out)
    print(f"wrote {len(rows)} rows from {bundle} to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
