"""Stage `prepare`: choose columns, infer the FeatureSchema, validate, split, check for leaks.

Outputs ``data/prepared/{train,valid,test}.parquet``, ``schema.json``, ``report.json``
(rows and classes per split, dropped columns, each feature's leakage score, data
quality findings) and ``feature_scores.json`` (a DVC plot of those scores). Bad data
stops the stage with a message naming the column or rows at fault, and nothing is
written; so does a feature that alone predicts the target almost perfectly (a
suspected label leak, see ``training/checks.py``), unless ``prepare.allow`` lists it.
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

import pandas as pd
from sklearn.model_selection import train_test_split

from tabserve.core.schema import WHEN_KINDS, FeatureSchema, category_text
from tabserve.core.schema_inference import (
    InferenceOptions,
    TypeMismatchError,
    decide_task,
    infer_schema,
)
from training.checks import (
    FeatureScore,
    describe_leak,
    feature_scores,
    find_leaks,
    quality_findings,
    quality_warnings,
)
from training.errors import DataError
from training.fitness import choose_columns, validate
from training.params import DataParams, PrepareParams, load_params

log = logging.getLogger("training.prepare")

PREPARED_DIR = Path("data/prepared")
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Prepared:
    """The result of :func:`prepare`: schema, the three splits (features + target), checks."""

    schema: FeatureSchema
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    scores: list[FeatureScore]
    quality: dict[str, object]
    leakage_threshold: float
    allowed: list[str]

    def report(self) -> dict[str, object]:
        """Counts per split and class, dropped columns and the checks, for humans and DVC."""
        target = self.schema.target.name
        if self.schema.target.is_regression:
            distribution: dict[str, object] = {
                "target": {
                    name: {
                        stat: round(float(getattr(getattr(self, name)[target], stat)()), 6)
                        for stat in ("min", "mean", "std", "max")
                    }
                    for name in SPLITS
                }
            }
        else:
            distribution = {
                "classes": {
                    name: {
                        str(k): int(v)
                        for k, v in getattr(self, name)[target].value_counts().sort_index().items()
                    }
                    for name in SPLITS
                }
            }
        return {
            "task": self.schema.target.task,
            "rows": {name: len(getattr(self, name)) for name in SPLITS},
            **distribution,
            "features": {
                kind: sum(f.kind == kind for f in self.schema.features)
                for kind in ("numeric", "categorical", "date", "timestamp")
            },
            "derived": {
                spec.name: [c.name for c in self.schema.columns if c.feature == spec.name]
                for spec in self.schema.features
                if spec.is_when
            },
            "folded": self.folded(),
            "dropped": [d.model_dump() for d in self.schema.dropped],
            "leakage": {
                "threshold": self.leakage_threshold,
                "allowed": self.allowed,
                "max_score": max((s.worst() for s in self.scores), default=None),
                "features": [s.as_dict() for s in self.scores],
            },
            "quality": self.quality,
        }

    def folded(self) -> dict[str, dict[str, object]]:
        """Per categorical whose rare values were folded: the level, how many distinct
        values went into it and how many training rows they cover."""
        report: dict[str, dict[str, object]] = {}
        for spec in self.schema.features:
            if spec.other is None:
                continue
            kept = set(spec.categories or []) - {spec.other}
            values = self.train[spec.name].astype("object").map(category_text).dropna()
            folded = values[~values.isin(kept)]
            report[spec.name] = {
                "level": spec.other,
                "kept": len(kept),
                "values_folded": int(folded.nunique()),
                "training_rows": len(folded),
            }
        return report

    def score_plot(self) -> list[dict[str, object]]:
        """One record per feature for DVC's bar chart (``feature_scores.json``)."""
        return [{"feature": s.feature, "score": round(s.worst(), 4)} for s in self.scores]


def _split_strata(target: pd.Series, schema: FeatureSchema) -> pd.Series | None:
    """What the split keeps in proportion: the classes, or for regression the target's
    deciles (so train, valid and test cover its whole range); None if bins are too thin."""
    if not schema.target.is_regression:
        return target.astype(str)
    bins = pd.qcut(target, q=10, labels=False, duplicates="drop")
    return bins if bins.value_counts().min() >= 5 else None


def prepare(frame: pd.DataFrame, data: DataParams, params: PrepareParams, seed: int) -> Prepared:
    """Choose columns, validate, infer the schema, split ``frame``, check for leaks.

    Columns named by ``data.drop`` (or absent from ``data.features``), ID-like, empty and
    constant columns are dropped (with a warning for the last three). The split is
    stratified on the target and fully determined by ``seed``.

    Raises:
        DataError: for data that cannot train a model, an unknown column name, or a
            suspected leak (a feature at or above ``prepare.leakage_threshold``).
    """
    target = data.target
    chosen = choose_columns(frame, data)
    frame = frame.drop(columns=[d.name for d in chosen])
    if target not in frame.columns:
        validate(frame, target, params.min_rows_per_class)  # names the missing column
    task = decide_task(frame[target], data.task)
    log.info(
        "task: %s (data.task: %s; %d distinct target values)",
        task,
        data.task,
        frame[target].nunique(),
    )
    validate(frame, target, params.min_rows_per_class, task)
    for key, named in (("data.types", data.types), ("data.formats", data.formats)):
        unknown_names = sorted(set(named) - set(frame.columns))
        if unknown_names:
            raise DataError(
                f"{key} names column(s) that are not in the data: {unknown_names}",
                [f"columns are: {', '.join(map(str, frame.columns))}"],
            )
    not_dates = sorted(c for c in data.formats if data.types.get(c, "date") not in WHEN_KINDS)
    if not_dates:
        raise DataError(
            f"data.formats gives a date format to column(s) data.types declares otherwise: "
            f"{not_dates}",
            ["a format is for a date or timestamp column only"],
        )
    options = InferenceOptions(
        formats=data.formats,
        types=data.types,
        max_categories=params.max_categories,
        unique_share=params.unique_share,
        text_length=params.text_length,
    )
    try:
        schema = infer_schema(frame, target, dropped=chosen, task=task, options=options)
    except TypeMismatchError as exc:
        hint = f"fix the column, or its entry in data.types: {exc.column}"
        raise DataError(str(exc), [hint]) from None
    unknown_allowed = sorted(set(params.allow) - set(schema.feature_names))
    if unknown_allowed:
        raise DataError(
            f"prepare.allow names column(s) that are not features: {unknown_allowed}",
            [f"features are: {', '.join(schema.feature_names)}"],
        )
    for dropped in schema.dropped[len(chosen) :]:
        log.warning("dropping column %r: %s", dropped.name, dropped.reason)
    for spec in schema.features:
        if spec.is_when:
            parts = [c.part for c in schema.columns if c.feature == spec.name]
            log.info(
                "%s %r (%s to %s): the model reads its parts %s",
                spec.kind,
                spec.name,
                spec.reference,
                spec.latest,
                parts,
            )
        elif spec.other is not None:
            log.warning(
                "categorical %r keeps its %d most frequent values; the rest fold into %r "
                "(prepare.max_categories: %d)",
                spec.name,
                len(spec.categories or []) - 1,
                spec.other,
                params.max_categories,
            )
    if not schema.features:
        raise DataError(
            "no usable feature columns", [f"{d.name}: {d.reason}" for d in schema.dropped]
        )
    kept = frame[[*schema.feature_names, target]].reset_index(drop=True)
    strata = _split_strata(kept[target], schema)
    rest, test = train_test_split(
        kept, test_size=params.test_size, random_state=seed, stratify=strata
    )
    rest_strata = None if strata is None else _split_strata(rest[target], schema)
    train, valid = train_test_split(
        rest, test_size=params.valid_size, random_state=seed, stratify=rest_strata
    )
    splits = {
        name: part.sort_index()
        for name, part in (("train", train), ("valid", valid), ("test", test))
    }
    for name, part in splits.items():
        classes = part[target].nunique()
        if not schema.target.is_regression and classes < len(schema.target.classes):
            raise DataError(
                f"the {name} split has {classes} of {len(schema.target.classes)} classes",
                ["add rows or raise prepare.min_rows_per_class"],
            )
    scores = feature_scores(splits["train"], schema, seed)
    leaks = find_leaks(scores, params.leakage_threshold, params.allow)
    if leaks:
        raise DataError(
            f"{len(leaks)} feature(s) predict {target!r} almost perfectly on their own "
            f"(at or above prepare.leakage_threshold = {params.leakage_threshold}): "
            "suspected label leakage, information the model would not have when used",
            [describe_leak(s, params.leakage_threshold) for s in leaks]
            + [
                "if the column is known before the prediction is made, keep it knowingly: "
                f"prepare.allow: {[s.feature for s in leaks]}",
                f"otherwise drop it: data.drop: {[s.feature for s in leaks]}",
            ],
        )
    for score in scores:
        if score.feature in params.allow and score.worst() >= params.leakage_threshold:
            log.warning(
                "allowed by prepare.allow: %s", describe_leak(score, params.leakage_threshold)
            )
    quality = quality_findings(frame, schema, splits["train"], splits["test"])
    for line in quality_warnings(quality):
        log.warning("data quality: %s", line)
    return Prepared(
        schema=schema,
        **splits,
        scores=scores,
        quality=quality,
        leakage_threshold=params.leakage_threshold,
        allowed=list(params.allow),
    )


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
        (staging / "feature_scores.json").write_text(json.dumps(prepared.score_plot()) + "\n")
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
        prepared = prepare(frame, params.data, params.prepare, params.seed)
    except DataError as exc:
        log.error("prepare refused the data: %s", exc)
        return 1
    write_prepared(prepared, args.out)
    report = prepared.report()
    target = prepared.schema.target
    log.info(
        "schema: %s features (%s); split rows %s; %s; highest single-feature "
        "score %.3f (leakage threshold %s)",
        len(prepared.schema.features),
        report["features"],
        report["rows"],
        f"target range [{target.min:g}, {target.max:g}]"
        if target.is_regression
        else f"classes {target.classes}",
        max(s.worst() for s in prepared.scores),
        prepared.leakage_threshold,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
