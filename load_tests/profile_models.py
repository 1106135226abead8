"""The benchmark profiles' data and models: the frames they are built from, and a booster
trained and imported the way the pipeline does it (also used by ``tests/support.py``)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tabserve.core.bundle import Lineage, sha256_file, write_bundle
from tabserve.core.schema import FeatureSchema
from tabserve.core.schema_inference import infer_schema

SEED = 0
MISSING_SHARE = 0.08
LABEL_NOISE = 0.2


# ---- importing a model the way the pipeline's import stage does ----------------------
def train_booster(
    frame: pd.DataFrame,
    target: str,
    params: dict[str, Any],
    rounds: int,
    schema: FeatureSchema | None = None,
) -> tuple[Any, FeatureSchema]:
    """Train an XGBoost booster on ``frame`` through its inferred FeatureSchema.

    The training frame is :meth:`FeatureSchema.to_frame` (categoricals with exactly the
    schema's categories), as the pipeline's ``train`` stage builds it.
    """
    import xgboost as xgb

    schema = schema or infer_schema(frame, target)
    booster = xgb.train(
        params,
        xgb.DMatrix(
            schema.to_frame(frame.drop(columns=[target])),
            label=schema.encode_target(frame[target]),
            enable_categorical=True,
        ),
        rounds,
    )
    return booster, schema


def import_booster(
    home: Path,
    tag: str,
    booster: Any,
    schema: FeatureSchema,
    lineage: Lineage,
    examples: list[dict[str, Any]],
    *,
    features: pd.DataFrame | None = None,
    interval: tuple[Any, Any] | None = None,
) -> Path:
    """Write ``booster`` as a model bundle into the BentoML store of ``home``.

    The same files, through the same BentoML API, as the pipeline's ``import`` stage,
    without touching the BentoML home of the calling process: the booster, the schema,
    a regression model's ``interval`` (its quantile booster and calibration), and the
    drift reference of ``features`` (the training rows; they stand in for the
    validation split too). ``lineage``'s sha256 fields are filled in here. Returns the
    model's directory.
    """
    import tempfile

    import bentoml
    from bentoml import Tag
    from bentoml._internal.models.model import ModelStore

    from tabserve.core.bundle import INTERVAL_FILE, QUANTILES_FILE, REFERENCE_FILE
    from tabserve.core.drift import build_reference
    from tabserve.core.predictor import Predictor

    name, version = tag.split(":")
    home.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{name}-{version}-", dir=home))
    model_file = folder / "model.ubj"
    booster.save_model(str(model_file))
    extra: dict[str, Path] = {}
    if interval is not None:
        interval[0].save_model(str(folder / QUANTILES_FILE))
        (folder / INTERVAL_FILE).write_text(interval[1].model_dump_json())
        extra |= {QUANTILES_FILE: folder / QUANTILES_FILE, INTERVAL_FILE: folder / INTERVAL_FILE}
    if features is not None:
        predictor = Predictor(booster, schema, None, version=version, interval=interval)
        reference = build_reference(schema, schema.encode(features), predictor.predict(features))
        (folder / REFERENCE_FILE).write_text(reference.model_dump_json())
        extra[REFERENCE_FILE] = folder / REFERENCE_FILE
    lineage = lineage.model_copy(
        update={
            "model_sha256": sha256_file(model_file),
            "files_sha256": {n: sha256_file(f) for n, f in extra.items()},
        }
    )
    store = ModelStore(str(home / "models"))
    with bentoml.models.create(Tag(name, version), _model_store=store) as model:
        write_bundle(
            model.path,
            model_file=model_file,
            schema=schema,
            lineage=lineage,
            examples=examples,
            extra_files=extra,
        )
    shutil.rmtree(folder)
    return home / "models" / name / version


# ---- the profiles' data ----------------------------------------------------------------
def _bands(values: pd.Series, labels: list[str]) -> pd.Series:
    """Quantile bands of a numeric column, as text labels."""
    return pd.qcut(values, q=len(labels), labels=labels, duplicates="drop").astype("object")


def categorical_frame(seed: int = SEED) -> pd.DataFrame:
    """Breast-cancer rows as a mixed table: 14 numeric and 6 text features, missing values.

    Target ``diagnosis`` (``malignant`` / ``benign``).
    """
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    source = data.frame
    numeric = [c for c in source.columns if c.startswith("mean ") or c.endswith(" error")]
    frame = source[numeric].copy()
    text_columns = {
        "mean radius": ["XS", "S", "M", "L", "XL"],
        "mean texture": ["smooth", "fine", "medium", "coarse"],
        "mean concavity": [f"grade {g}" for g in "ABCDEFGH"],
        "mean symmetry": ["low", "mid", "high"],
        "radius error": [f"r{i:02d}" for i in range(1, 13)],
        "fractal dimension error": ["f1", "f2", "f3", "f4", "f5", "f6"],
    }
    for column, labels in text_columns.items():
        frame[f"{column} band"] = _bands(frame.pop(column), labels)
    rng = np.random.default_rng(seed)
    holey = [f"{c} band" for c in text_columns] + ["mean area", "texture error", "area error"]
    for column in holey:
        missing = rng.random(len(frame)) < MISSING_SHARE
        frame[column] = frame[column].astype("object").where(~missing, None)
        if column in ("mean area", "texture error", "area error"):
            frame[column] = frame[column].astype("float64")
    names = list(data.target_names)
    frame["diagnosis"] = [names[i] for i in data.target]
    return frame


def heavy_frame(seed: int = SEED) -> pd.DataFrame:
    """Handwritten digits (8×8 pixels), with copies shifted one pixel left and right, and
    a share of the labels replaced at random.

    The shifted copies and the noise stand in for a large, hard dataset: on the clean
    1,797 digits the trees stop splitting after a few levels, and the model is cheap.
    """
    from sklearn.datasets import load_digits

    data = load_digits(as_frame=True)
    pixels = data.frame.drop(columns=["target"]).astype("float64")
    images = pixels.to_numpy().reshape(-1, 8, 8)
    shifted = [images, np.roll(images, 1, axis=2), np.roll(images, -1, axis=2)]
    frame = pd.DataFrame(
        np.concatenate(shifted).reshape(-1, 64), columns=pixels.columns, dtype="float64"
    )
    labels = np.tile(data.target.to_numpy(), len(shifted))
    rng = np.random.default_rng(seed)
    flip = rng.random(len(labels)) < LABEL_NOISE
    labels[flip] = rng.integers(0, 10, int(flip.sum()))
    frame["digit"] = labels
    return frame


def git_commit(repo: Path) -> str:
    """The short commit of ``repo``, or ``unknown``."""
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()
    return "unknown"
