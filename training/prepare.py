"""Stage `prepare`: infer the FeatureSchema, validate the data, split it (seeded, stratified).

Outputs ``data/prepared/{train,valid,test}.parquet``, ``schema.json`` and
``report.json``. Bad data stops the stage with a message naming the column or
rows at fault, and nothing is written.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from tabserve.schema import FeatureSchema, infer_schema
from training.errors import DataError
from training.params import PrepareParams, load_params

log = logging.getLogger("training.prepare")

PREPARED_DIR = Path("data/prepared")
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Prepared:
    """The result of :func:`prepare`: schema and the three splits (features + target)."""

    schema: FeatureSchema
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame

    def report(self) -> dict[str, object]:
        """Counts per split and class, and the dropped columns, for humans and DVC."""
        target = self.schema.target.name
        return {
            "rows": {name: len(getattr(self, name)) for name in SPLITS},
            "classes": {
                name: {
                    str(k): int(v)
                    for k, v in getattr(self, name)[target].value_counts().sort_index().items()
                }
                for name in SPLITS
            },
            "features": {
                "numeric": sum(f.kind == "numeric" for f in self.schema.features),
                "categorical": sum(f.kind == "categorical" for f in self.schema.features),
            },
            "dropped": [d.model_dump() for d in self.schema.dropped],
        }


def _rows(index: pd.Index, limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in index[:limit])
    return shown + (f" ... ({len(index)} rows)" if len(index) > limit else "")


def validate(frame: pd.DataFrame, target: str, min_rows_per_class: int) -> None:
    """Refuse data that cannot train a classifier.

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
    counts = frame[target].dropna().value_counts()
    if len(counts) < 2:
        problems.append(
            f"target {target!r} has {len(counts)} class(es) ({list(counts.index)}); need at least 2"
        )
    small = counts[counts < min_rows_per_class]
    for label, count in small.items():
        problems.append(
            f"class {label!r} of {target!r} has {count} rows; need at least {min_rows_per_class} "
            "(prepare.min_rows_per_class) to split it"
        )
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


def prepare(frame: pd.DataFrame, target: str, params: PrepareParams, seed: int) -> Prepared:
    """Validate, infer the schema, and split ``frame`` into train/valid/test.

    ID-like columns (unique per row) are dropped with a warning. The split is
    stratified on the target and fully determined by ``seed``.
    """
    validate(frame, target, params.min_rows_per_class)
    schema = infer_schema(frame, target)
    for dropped in schema.dropped:
        log.warning("dropping column %r: %s", dropped.name, dropped.reason)
    if not schema.features:
        raise DataError(
            "no usable feature columns", [f"{d.name}: {d.reason}" for d in schema.dropped]
        )
    data = frame[[*schema.feature_names, target]].reset_index(drop=True)
    labels = data[target].astype(str)
    rest, test = train_test_split(
        data, test_size=params.test_size, random_state=seed, stratify=labels
    )
    train, valid = train_test_split(
        rest, test_size=params.valid_size, random_state=seed, stratify=labels.loc[rest.index]
    )
    splits = {
        name: part.sort_index()
        for name, part in (("train", train), ("valid", valid), ("test", test))
    }
    for name, part in splits.items():
        classes = part[target].nunique()
        if classes < len(schema.target.classes):
            raise DataError(
                f"the {name} split has {classes} of {len(schema.target.classes)} classes",
                ["add rows or raise prepare.min_rows_per_class"],
            )
    return Prepared(schema=schema, **splits)


def write_prepared(prepared: Prepared, out_dir: Path) -> None:
    """Write every output into a staging folder first, then move the files into place.

    Everything that can fail (validation, splitting, serialisation) happens before
    the first file lands in ``out_dir``: a refused dataset leaves no half-written output.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".prepare-", dir=out_dir.parent))
    try:
        for name in SPLITS:
            getattr(prepared, name).to_parquet(staging / f"{name}.parquet", index=False)
        prepared.schema.save(staging / "schema.json")
        (staging / "report.json").write_text(json.dumps(prepared.report(), indent=2) + "\n")
        for path in staging.iterdir():
            path.replace(out_dir / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """CLI: read params.yaml and ``data/raw/data.parquet``, write ``data/prepared/``."""
    from training.environment import configure_logging

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    parser.add_argument(
        "--raw",
        type=Path,
        default=Path("data/raw/data.parquet"),
        help="input (default: %(default)s)",
    )
    parser.add_argument(
        "--out", type=Path, default=PREPARED_DIR, help="output folder (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    configure_logging()
    params = load_params(args.params)
    try:
        frame = pd.read_parquet(args.raw)
        prepared = prepare(frame, params.data.target, params.prepare, params.seed)
    except DataError as exc:
        log.error("prepare refused the data: %s", exc)
        return 1
    write_prepared(prepared, args.out)
    report = prepared.report()
    log.info(
        "schema: %s features (%s); split rows %s; classes %s",
        len(prepared.schema.features),
        report["features"],
        report["rows"],
        prepared.schema.target.classes,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
