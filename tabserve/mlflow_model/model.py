"""The registered MLflow model: the model files as a pyfunc for raw frames.

The ``train`` stage logs :class:`TabularModel` with its model files (``models/bundle``:
the booster, the FeatureSchema and, for regression, the interval's model) as an
artifact and, as its code (``code_paths``), the core and this layer only
(:func:`carried_code`), so the model scores frames as
they come from a CSV or Parquet file (text columns as ``str`` or ``object``, missing
values) wherever MLflow models run: ``mlflow.pyfunc.load_model``, ``mlflow models
serve``, ``mlflow.pyfunc.spark_udf``. It answers through the service's own
:class:`~tabserve.core.predictor.Predictor` and answer columns (``label``, ``proba_<class>``;
or ``prediction``, ``low``, ``high``), so its numbers are the ones ``POST /predict``
gives for the same rows.

A categorical value never seen in training is read as missing, as the service does by
default; with ``TABSERVE_UNKNOWN_CATEGORY=refuse`` in the scoring process's environment
the call fails instead, naming the columns and values.

Nothing here is imported by the service: MLflow is a training dependency only.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.types import ColSpec, Schema

from tabserve.core.schema import FeatureSchema

BUNDLE_ARTIFACT = "bundle"
UNKNOWN_CATEGORY_ENV = "TABSERVE_UNKNOWN_CATEGORY"


class TabularModel(PythonModel):
    """Scores a raw frame: one answer row per input row (see the module doc)."""

    def load_context(self, context: Any) -> None:
        """Load the model files (verified when the bundle is served; here as logged)."""
        from tabserve.core.predictor import Predictor

        self.predictor = Predictor.from_files(context.artifacts[BUNDLE_ARTIFACT], version="mlflow")

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Answers for ``model_input`` (columns the model does not know are ignored)."""
        from tabserve.core.encoding import unknown_categories

        policy = os.environ.get(UNKNOWN_CATEGORY_ENV, "missing")
        if policy not in ("missing", "refuse"):
            raise ValueError(f"{UNKNOWN_CATEGORY_ENV} must be missing or refuse, not {policy!r}")
        if policy == "refuse":
            unknown = unknown_categories(self.predictor.schema, model_input)
            if unknown:
                listed = "; ".join(f"{name}: {values}" for name, values in unknown.items())
                raise ValueError(f"categories never seen in training ({listed})")
        # Whole columns, not an answer dict per row: the same numbers, a file of millions
        # of rows at half the cost (tabserve score, spark_udf).
        columns = self.predictor.answer_columns(self.predictor.matrix(model_input))
        return pd.DataFrame(columns, index=model_input.index)


def signature(schema: FeatureSchema, frame: pd.DataFrame) -> ModelSignature:
    """The model's signature: the raw training frame's column types (as MLflow infers
    them, so a frame read the same way passes its checks; a date or timestamp of any
    type), optional where the schema says a feature may be missing; the answer's
    columns.
    """
    from mlflow.models import infer_signature
    from mlflow.types.schema import AnyType

    inferred = infer_signature(frame[schema.feature_names]).inputs
    inputs = Schema(
        [
            ColSpec(
                # A date is text in a CSV and a date type in Parquet: either is taken.
                AnyType() if schema.feature(column.name).is_when else column.type,
                column.name,
                required=not schema.feature(column.name).nullable,
            )
            for column in inferred.inputs
        ]
    )
    if schema.target.is_regression:
        outputs = Schema([ColSpec("double", name) for name in ("prediction", "low", "high")])
    else:
        classes = schema.target.classes
        label_type = "long" if all(isinstance(c, int) for c in classes) else "string"
        outputs = Schema(
            [ColSpec(label_type, "label"), *(ColSpec("double", f"proba_{c}") for c in classes)]
        )
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example(schema: FeatureSchema, frame: pd.DataFrame, rows: int = 5) -> pd.DataFrame:
    """The first ``rows`` of a raw split, as a client would send them."""
    return frame[schema.feature_names].head(rows)


def log_model(bundle: str | Path, schema: FeatureSchema, train: pd.DataFrame) -> Any:
    """Log the model to the active MLflow run as ``model``; return MLflow's ``ModelInfo``.

    Args:
        bundle: the folder of model files ``train`` wrote (``models/bundle``).
        schema: their schema, for the signature.
        train: the raw training split, for the signature's column types and the example.
    """
    import warnings

    import numpy as np
    import pydantic
    import xgboost as xgb

    here = Path(__file__).resolve().parent
    with warnings.catch_warnings():
        # MLflow's hint that integer columns cannot hold missing values: the signature
        # marks every feature that was missing in training optional, and a missing value
        # in any other feature is refused by the model's contract anyway.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        model_signature = signature(schema, train)
    with tempfile.TemporaryDirectory() as staging:
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(here / "entry.py"),
            artifacts={BUNDLE_ARTIFACT: str(bundle)},
            code_paths=[str(carried_code(Path(staging)))],
            signature=model_signature,
            input_example=input_example(schema, train),
            pip_requirements=[
                f"xgboost-cpu=={xgb.__version__}",
                f"pandas=={pd.__version__}",
                f"numpy=={np.__version__}",
                f"pydantic=={pydantic.__version__}",
            ],
        )


# What the registered model carries of tabserve: the core it scores with and this layer.
CARRIED_LAYERS = ("core", "mlflow_model")


def carried_code(staging: Path) -> Path:
    """A copy of the part of the ``tabserve`` package the model needs, under ``staging``.

    MLflow copies each of ``code_paths`` beside the model and puts it on ``sys.path``
    when the model is loaded; giving it the whole package would carry the security,
    HTTP and serving layers (and their BentoML patches) into every copy of the model.

    Returns:
        ``staging/tabserve``: its ``__init__.py`` and the :data:`CARRIED_LAYERS`.
    """
    package = Path(__file__).resolve().parents[1]
    target = staging / "tabserve"
    target.mkdir()
    shutil.copy2(package / "__init__.py", target / "__init__.py")
    for layer in CARRIED_LAYERS:
        shutil.copytree(
            package / layer, target / layer, ignore=shutil.ignore_patterns("__pycache__")
        )
    return target
