"""The registered MLflow model: the booster and its schema as a pyfunc for raw frames.

The ``train`` stage logs :class:`TabularModel` with the booster (``model.ubj``) and the
FeatureSchema as artifacts and this package as its code (``code_paths``), so the model
scores frames as they come from a CSV or Parquet file (text columns as ``str`` or
``object``, missing values) wherever MLflow models run: ``mlflow.pyfunc.load_model``,
``mlflow models serve``, ``mlflow.pyfunc.spark_udf``. It uses the service's own
encoding (:meth:`FeatureSchema.encode`) and answers (:func:`answer_columns`), so its
numbers are the ones ``POST /predict`` gives for the same rows.

Nothing here is imported by the service: MLflow is a training dependency only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.types import ColSpec, Schema

from tabserve.schema import FeatureSchema

MODEL_ARTIFACT = "booster"
SCHEMA_ARTIFACT = "schema"
MODEL_FILE = "model.ubj"


class TabularModel(PythonModel):
    """Scores a raw frame: one row of ``label`` and ``proba_<class>`` per input row."""

    def load_context(self, context: Any) -> None:
        """Load the booster (one thread) and the schema from the model's artifacts."""
        import xgboost as xgb

        self.schema = FeatureSchema.load(context.artifacts[SCHEMA_ARTIFACT])
        self.booster = xgb.Booster(model_file=context.artifacts[MODEL_ARTIFACT])
        self.booster.set_param({"nthread": 1})

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Answers for ``model_input`` (columns the model does not know are ignored)."""
        from tabserve.predictor import answer_columns, class_probabilities, classification_answers

        proba = class_probabilities(self.booster, self.schema.encode(model_input))
        answers = classification_answers(list(self.schema.target.classes), proba)
        return pd.DataFrame(answer_columns(answers), index=model_input.index)


def signature(schema: FeatureSchema, frame: pd.DataFrame) -> ModelSignature:
    """The model's signature: the raw training frame's column types (as MLflow infers
    them, so a frame read the same way passes its checks), optional where the schema
    says a feature may be missing; the answer's columns.
    """
    from mlflow.models import infer_signature

    inferred = infer_signature(frame[schema.feature_names]).inputs
    inputs = Schema(
        [
            ColSpec(column.type, column.name, required=not schema.feature(column.name).nullable)
            for column in inferred.inputs
        ]
    )
    label_type = "long" if all(isinstance(c, int) for c in schema.target.classes) else "string"
    outputs = Schema(
        [
            ColSpec(label_type, "label"),
            *(ColSpec("double", f"proba_{c}") for c in schema.target.classes),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example(schema: FeatureSchema, frame: pd.DataFrame, rows: int = 5) -> pd.DataFrame:
    """The first ``rows`` of a raw split, as a client would send them."""
    return frame[schema.feature_names].head(rows)


def log_model(
    model_file: str | Path, schema_file: str | Path, schema: FeatureSchema, train: pd.DataFrame
) -> Any:
    """Log the model to the active MLflow run as ``model``; return MLflow's ``ModelInfo``.

    Args:
        model_file: the booster (``model.ubj``).
        schema_file: the FeatureSchema (``schema.json``).
        schema: that schema, for the signature.
        train: the raw training split, for the signature's column types and the example.
    """
    import warnings

    import numpy as np
    import pydantic
    import xgboost as xgb

    package = Path(__file__).resolve().parent
    with warnings.catch_warnings():
        # MLflow's hint that integer columns cannot hold missing values: the signature
        # marks every feature that was missing in training optional, and a missing value
        # in any other feature is refused by the model's contract anyway.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        model_signature = signature(schema, train)
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=str(package / "pyfunc_model.py"),
        artifacts={MODEL_ARTIFACT: str(model_file), SCHEMA_ARTIFACT: str(schema_file)},
        code_paths=[str(package)],
        signature=model_signature,
        input_example=input_example(schema, train),
        pip_requirements=[
            f"xgboost-cpu=={xgb.__version__}",
            f"pandas=={pd.__version__}",
            f"numpy=={np.__version__}",
            f"pydantic=={pydantic.__version__}",
        ],
    )
