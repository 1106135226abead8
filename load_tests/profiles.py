"""Model profiles for the benchmark, built from data that ships with installed packages.

``make bench`` measures every contender on each profile, because what batching and
encoding buy depends on the model's shape:

``default``
    the pipeline's champion (``make model``: scikit-learn's breast-cancer data, 30
    numeric features, binary, tuned): a model call costs a fraction of a millisecond.
``categorical``
    the same breast-cancer rows reshaped into a typical business table: 20 features, 6
    of them text (quantile bands with 3 to 12 labels each), about 8 % missing values in
    the 6 text columns and in 3 numeric ones (seeded); binary target with text labels;
    200 trees of depth up to 6.
``heavy``
    scikit-learn's handwritten digits (64 pixel features, 10 classes) with copies shifted
    by one pixel and 20 % of the labels replaced at random (seeded), so that the trees
    grow to their full depth as they would on a large, hard dataset: 150 rounds × 10
    classes = 1,500 trees of depth 8 (about 220 nodes each), like the multiclass model of
    issue 16. A model call costs about 2 ms for one row and 8 to 10 ms for 256 rows.

Each built profile is a BentoML home holding the model as ``bench-<name>:v1``, written
exactly as the pipeline's ``import`` stage writes it (``profile_models.import_booster``, also used
by ``tests/support.py``), the same model logged to a private MLflow store as the
pipeline's pyfunc (for the ``mlflow models serve`` contender), and the request rows the
load generator sends. Building takes seconds (the heavy model about 10 s)
and is cached under the results folder, keyed by this file's source and the library
versions. ::

    python -m load_tests.profiles --out load_tests/results/profiles   # build all, print
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from load_tests.payloads import api_rows, write_rows
from load_tests.profile_models import (
    SEED,
    categorical_frame,
    git_commit,
    heavy_frame,
    import_booster,
    train_booster,
)
from tabserve.core.bundle import MODEL_FILE, SCHEMA_FILE, Lineage
from tabserve.core.schema import FeatureSchema
from tabserve.core.schema_inference import infer_schema

REPO = Path(__file__).resolve().parents[1]

PROFILE_NAMES = ("default", "categorical", "heavy")
BUILT_PROFILES = ("categorical", "heavy")


@dataclass(frozen=True)
class ProfileSpec:
    """How a profile's model is built."""

    name: str
    title: str
    frame: Callable[[], pd.DataFrame]
    target: str
    params: dict[str, Any]
    rounds: int


SPECS = {
    "categorical": ProfileSpec(
        "categorical",
        "20 features, 6 of them text, missing values; binary; 200 trees of depth ≤ 6",
        categorical_frame,
        "diagnosis",
        {"objective": "binary:logistic", "max_depth": 6, "eta": 0.1},
        200,
    ),
    "heavy": ProfileSpec(
        "heavy",
        "64 numeric pixel features, 10 classes; 1,500 trees of depth 8",
        heavy_frame,
        "digit",
        {
            "objective": "multi:softprob",
            "num_class": 10,
            "max_depth": 8,
            "eta": 0.1,
            "min_child_weight": 0,
            "colsample_bynode": 0.5,
        },
        150,
    ),
}


@dataclass(frozen=True)
class BuiltProfile:
    """A profile ready to serve: where its model is and what it is like."""

    name: str
    title: str
    bentoml_home: str
    model_tag: str
    mlflow_model: str  # what `mlflow models serve -m` takes
    mlflow_tracking_uri: str
    rows_file: str
    rows: int
    features: int
    text_features: int
    nullable_features: int
    classes: int
    trees: int
    max_depth: int
    mean_depth: float
    ms_per_call_1_row: float
    ms_per_call_256_rows: float

    def describe(self) -> str:
        """One line for reports."""
        return (
            f"`{self.name}` ({self.model_tag}): {self.features} features "
            f"({self.text_features} text, {self.nullable_features} with missing values), "
            f"{self.classes} classes, {self.trees:,} trees (depth ≤ {self.max_depth}, mean "
            f"{self.mean_depth:.1f}); one model call {self.ms_per_call_1_row:.2f} ms for "
            f"1 row, {self.ms_per_call_256_rows:.2f} ms for 256 rows"
        )


def model_shape(booster: Any) -> tuple[int, int, float]:
    """``(trees, deepest tree, mean depth)`` of a booster."""

    def depth(node: dict[str, Any]) -> int:
        children = node.get("children")
        return 0 if not children else 1 + max(depth(c) for c in children)

    depths = [depth(json.loads(tree)) for tree in booster.get_dump(dump_format="json")]
    return len(depths), max(depths), float(np.mean(depths))


def time_model_call(booster: Any, schema: FeatureSchema, rows: list[dict[str, Any]]) -> list[float]:
    """Milliseconds per ``inplace_predict`` on the encoded matrix, for 1 and 256 rows."""
    out = []
    for n in (1, 256):
        matrix = schema.encode((rows * (256 // len(rows) + 1))[:n])
        booster.inplace_predict(matrix)
        repeats = 50 if n == 1 else 10
        started = time.perf_counter()
        for _ in range(repeats):
            booster.inplace_predict(matrix)
        out.append(1000 * (time.perf_counter() - started) / repeats)
    return out


def _log_mlflow_model(
    directory: Path, name: str, booster: Any, schema: FeatureSchema, train: pd.DataFrame
) -> tuple[str, str, str]:
    """Log the model as the pipeline's pyfunc to a private MLflow store.

    Returns ``(model uri, tracking uri, run id)``.
    """
    import mlflow

    from tabserve.mlflow_model.model import log_model

    tracking = f"sqlite:///{directory / 'mlflow.db'}"
    # The registered model's artifact is a bundle folder, as `train` writes it.
    bundle = directory / "bundle"
    bundle.mkdir(exist_ok=True)
    booster.save_model(str(bundle / MODEL_FILE))
    schema.save(bundle / SCHEMA_FILE)
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking)
    try:
        experiment = mlflow.set_experiment(f"bench-{name}")
        with mlflow.start_run(experiment_id=experiment.experiment_id) as run:
            info = log_model(bundle, schema, train)
        return str(info.model_uri), tracking, run.info.run_id
    finally:
        mlflow.set_tracking_uri(previous or "")


def cache_key(spec: ProfileSpec) -> str:
    """A digest of what the built profile depends on."""
    import sklearn
    import xgboost

    sources = [Path(__file__), Path(__file__).with_name("profile_models.py")]
    for layer in ("core", "mlflow_model"):  # what the bundle and the logged model are made of
        sources += sorted((REPO / "tabserve" / layer).glob("*.py"))
    parts = [
        *(path.read_text() for path in sources),
        xgboost.__version__,
        sklearn.__version__,
        pd.__version__,
        repr(asdict(spec) | {"frame": spec.frame.__name__}),
    ]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class FittedProfile:
    """A profile's model, trained, with what importing and describing it needs."""

    spec: ProfileSpec
    booster: Any
    schema: FeatureSchema
    frame: pd.DataFrame
    train: pd.DataFrame
    params: dict[str, Any]
    accuracy: float  # on the held-out quarter of the rows
    rows: list[dict[str, Any]]  # every row as a request row (no target)
    examples: list[dict[str, Any]]  # held-out rows with their labels, for the bundle


def fit_profile(name: str) -> FittedProfile:
    """Train profile ``name``'s model (seeded) on three quarters of its rows.

    Raises:
        KeyError: for a profile that is not built here (``default`` is the pipeline's).
    """
    spec = SPECS[name]
    frame = spec.frame()
    is_test = np.random.default_rng(SEED).random(len(frame)) < 0.25
    train, test = frame[~is_test], frame[is_test]
    schema = infer_schema(frame, spec.target)
    params = {"nthread": os.cpu_count() or 1, "seed": SEED, "tree_method": "hist", **spec.params}
    booster, _ = train_booster(train, spec.target, params, spec.rounds, schema)
    booster.set_param({"nthread": 1})
    truth = schema.encode_target(test[spec.target])
    proba = np.asarray(booster.inplace_predict(schema.encode(test.drop(columns=[spec.target]))))
    predicted = (proba > 0.5).astype(int) if proba.ndim == 1 else proba.argmax(axis=1)
    examples = [
        {**row, spec.target: record[spec.target]}
        for record in test.head(20).astype("object").to_dict("records")
        for row in api_rows(schema, [record])
    ]
    return FittedProfile(
        spec=spec,
        booster=booster,
        schema=schema,
        frame=frame,
        train=train,
        params={**params, "num_boost_round": spec.rounds},
        accuracy=float(np.mean(predicted == truth)),
        rows=api_rows(
            schema, frame.drop(columns=[spec.target]).astype("object").to_dict("records")
        ),
        examples=examples,
    )


def import_profile(
    name: str,
    home: Path,
    *,
    tag: str | None = None,
    fitted: FittedProfile | None = None,
    mlflow_run_id: str = "not logged",
) -> tuple[str, FittedProfile]:
    """Import profile ``name``'s model (trained now unless ``fitted`` is given) into the
    BentoML home ``home``, as the pipeline's ``import`` stage does: with the drift
    reference of its rows, so that the service keeps its drift window, as in production.

    Returns the model's tag (``bench-<name>:v1`` unless given) and the fitted profile.
    """
    fitted = fitted or fit_profile(name)
    tag = tag or f"bench-{name}:v1"
    csv_bytes = fitted.frame.to_csv(index=False).encode()
    lineage = Lineage(
        model_name=tag.split(":")[0],
        registry_version="1",
        mlflow_run_id=mlflow_run_id,
        data_md5={"all": hashlib.md5(csv_bytes, usedforsecurity=False).hexdigest()},
        git_commit=git_commit(REPO),
        params=fitted.params,
        metrics={"accuracy": fitted.accuracy},
        model_sha256="",  # filled in by import_booster
        created_at=dt.datetime.now(dt.UTC).isoformat(),
    )
    features = fitted.frame.drop(columns=[fitted.spec.target])  # the drift reference's rows
    import_booster(
        home, tag, fitted.booster, fitted.schema, lineage, fitted.examples, features=features
    )
    return tag, fitted


def measured(booster: Any, schema: FeatureSchema, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What a profile's report line says of its model and rows (the fields of
    :class:`BuiltProfile` after where it lives)."""
    trees, deepest, mean_depth = model_shape(booster)
    one, many = time_model_call(booster, schema, rows)
    return {
        "rows": len(rows),
        "features": len(schema.features),
        "text_features": sum(f.kind == "categorical" for f in schema.features),
        "nullable_features": sum(f.nullable for f in schema.features),
        "classes": len(schema.target.classes),
        "trees": trees,
        "max_depth": deepest,
        "mean_depth": mean_depth,
        "ms_per_call_1_row": one,
        "ms_per_call_256_rows": many,
    }


def build_profile(name: str, out: Path, *, log: Callable[[str], None] = print) -> BuiltProfile:
    """Build profile ``name`` under ``out`` (or reuse the cached build); see the module doc.

    Raises:
        KeyError: for a profile that is not built here (``default`` is the pipeline's).
    """
    spec = SPECS[name]
    directory = out / f"{name}-{cache_key(spec)}"
    summary = directory / "profile.json"
    if summary.exists():
        return BuiltProfile(**json.loads(summary.read_text()))
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    started = time.monotonic()
    log(f">> building the {name} profile's model: {spec.title}")
    fitted = fit_profile(name)
    model_uri, tracking_uri, run_id = _log_mlflow_model(
        directory, name, fitted.booster, fitted.schema, fitted.train
    )
    tag, _ = import_profile(name, directory / "bentoml", fitted=fitted, mlflow_run_id=run_id)
    schema = fitted.schema
    built = BuiltProfile(
        name=name,
        title=spec.title,
        bentoml_home=str(directory / "bentoml"),
        model_tag=tag,
        mlflow_model=model_uri,
        mlflow_tracking_uri=tracking_uri,
        rows_file=str(write_rows(fitted.rows, directory / "rows.json")),
        **measured(fitted.booster, schema, fitted.rows),
    )
    summary.write_text(json.dumps(asdict(built), indent=2))
    log(f"   built in {time.monotonic() - started:.0f} s: {built.describe()}")
    return built


def default_profile(
    bentoml_home: Path, model_tag: str, rows_file: Path, mlflow_model: str, tracking_uri: str
) -> BuiltProfile:
    """The pipeline's champion as a profile (trained by ``make model``, not here)."""
    import xgboost as xgb

    from load_tests.payloads import bundle_dir
    from tabserve.core.bundle import read_schema

    directory = bundle_dir(bentoml_home, model_tag)
    schema = read_schema(directory)
    booster = xgb.Booster(model_file=str(directory / "model.ubj"))
    booster.set_param({"nthread": 1})
    rows = json.loads(rows_file.read_text())
    return BuiltProfile(
        name="default",
        title="the pipeline's champion (make model): breast cancer, 30 numeric features",
        bentoml_home=str(bentoml_home),
        model_tag=f"{model_tag.split(':')[0]}:{directory.name}",
        mlflow_model=mlflow_model,
        mlflow_tracking_uri=tracking_uri,
        rows_file=str(rows_file),
        **measured(booster, schema, rows),
    )


def main(argv: list[str] | None = None) -> int:
    """CLI: build (or find in the cache) the built profiles and describe them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "load_tests" / "results" / "profiles")
    parser.add_argument("--only", default=",".join(BUILT_PROFILES))
    args = parser.parse_args(argv)
    for name in args.only.split(","):
        print(build_profile(name, args.out).describe())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
