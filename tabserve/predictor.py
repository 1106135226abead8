"""The predictor: a verified model bundle turned into labels, probabilities and explanations.

Used by the BentoML service and, in-process, by the UI. Prediction goes through
``Booster.inplace_predict`` (no DMatrix per request; one thread per worker, since
BentoML scales with worker processes); explanations use ``pred_contribs``,
which needs a DMatrix.

When every feature is numeric, the model input is a float64 matrix built straight
from the rows: building a pandas frame (``FeatureSchema.to_frame``) cost about 40
times more than the prediction itself, per call (see the benchmark notes in the
README). Schemas with categoricals go through the frame, which carries the
category encoding.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from tabserve.bundle import (
    MODEL_FILE,
    BundleIntegrityError,
    Lineage,
    read_examples,
    read_schema,
    verify_bundle,
)
from tabserve.schema import FeatureSchema, Label

logger = logging.getLogger("tabserve.predictor")


class SchemaMismatchError(BundleIntegrityError):
    """The booster's features do not match the bundle's schema."""


@dataclass(frozen=True)
class ModelCard:
    """What ``GET /model`` answers: version, lineage, metrics, params and schema."""

    version: str
    tag: str
    lineage: Lineage
    schema: FeatureSchema
    example_row: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the card."""
        lineage = self.lineage
        return {
            "version": self.version,
            "tag": self.tag,
            "model_name": lineage.model_name,
            "task": self.schema.target.task,
            "lineage": {
                "mlflow_run_id": lineage.mlflow_run_id,
                "registry_version": lineage.registry_version,
                "data_md5": lineage.data_md5,
                "git_commit": lineage.git_commit,
                "model_sha256": lineage.model_sha256,
                "created_at": lineage.created_at,
            },
            "metrics": lineage.metrics,
            "params": lineage.params,
            "schema": self.schema.model_dump(mode="json"),
            "example_row": self.example_row,
        }


class Predictor:
    """A loaded, verified model bundle.

    Args:
        booster: the XGBoost booster.
        schema: its FeatureSchema.
        lineage: its lineage (verified against the model file by :meth:`from_bundle`).
        version: the version callers see (``X-Model-Version``).
        tag: the BentoML model tag, for the model card.
        examples: sample test rows with labels.

    Raises:
        SchemaMismatchError: if the booster's feature names differ from the schema's.
    """

    def __init__(
        self,
        booster: xgb.Booster,
        schema: FeatureSchema,
        lineage: Lineage,
        *,
        version: str,
        tag: str = "",
        examples: list[dict[str, Any]] | None = None,
    ) -> None:
        self.booster = booster
        self.schema = schema
        self.lineage = lineage
        self.version = version
        self.tag = tag
        self.examples = examples or []
        self.classes: list[Label] = list(schema.target.classes)
        self._names = schema.feature_names
        self._numeric_only = all(spec.kind == "numeric" for spec in schema.features)
        self._check_schema()
        # One thread per worker: BentoML scales with processes, and 2+ threads per
        # request only contend with the other workers.
        self.booster.set_param({"nthread": 1})

    @classmethod
    def from_bundle(cls, directory: str | Path, *, version: str, tag: str = "") -> Predictor:
        """Load and verify the bundle in ``directory``.

        Raises:
            BundleIntegrityError: for a missing file, a sha256 mismatch, or a model or
                schema file that cannot be read.
            SchemaMismatchError: if booster and schema disagree.
        """
        directory = Path(directory)
        lineage = verify_bundle(directory)
        booster = xgb.Booster()
        try:
            booster.load_model(str(directory / MODEL_FILE))
            schema = read_schema(directory)
        except (xgb.core.XGBoostError, ValueError, OSError) as exc:
            raise BundleIntegrityError(f"bundle {directory} cannot be loaded: {exc}") from exc
        return cls(
            booster,
            schema,
            lineage,
            version=version,
            tag=tag,
            examples=read_examples(directory),
        )

    def _check_schema(self) -> None:
        names = self.booster.feature_names
        if names is not None and list(names) != self.schema.feature_names:
            raise SchemaMismatchError(
                f"booster features {list(names)} differ from schema features "
                f"{self.schema.feature_names}"
            )
        outputs = self._probabilities(self.schema.to_frame([self.schema.example_row()])).shape[1]
        if outputs != len(self.classes):
            raise SchemaMismatchError(
                f"the booster outputs {outputs} class probabilities, the schema has "
                f"{len(self.classes)} classes"
            )

    # ---- prediction --------------------------------------------------------
    def frame(self, rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> pd.DataFrame:
        """The model input frame for ``rows`` (schema order and dtypes)."""
        return self.schema.to_frame(rows)

    def _model_input(
        self, rows: pd.DataFrame | Iterable[Mapping[str, Any]]
    ) -> np.ndarray | pd.DataFrame:
        """What the booster reads: a float64 matrix for numeric-only schemas, else the frame.

        The matrix holds exactly what :meth:`frame` would (missing → NaN); a value that
        ``float()`` cannot take (text, ``pd.NA``) falls back to the frame and its rules.
        """
        if self._numeric_only and not isinstance(rows, pd.DataFrame):
            rows = rows if isinstance(rows, list) else list(rows)
            names = self._names
            try:  # numpy turns None into NaN, as the frame does
                values = np.array([list(map(row.get, names)) for row in rows], dtype=np.float64)
            except (TypeError, ValueError, AttributeError):
                return self.frame(rows)
            return values.reshape(len(rows), len(names))
        return self.frame(rows)

    def _probabilities(self, frame: pd.DataFrame | np.ndarray) -> np.ndarray:
        raw = np.asarray(self.booster.inplace_predict(frame), dtype=np.float64)
        if raw.ndim == 1:  # binary:logistic gives P(class 1) only
            raw = np.column_stack([1.0 - raw, raw])
        return raw

    def predict_proba(self, rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> np.ndarray:
        """Class probabilities, shape ``(n_rows, n_classes)``, columns in class order."""
        return self._probabilities(self._model_input(rows))

    def predict(self, rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """One ``{"label", "probabilities"}`` object per row."""
        proba = self.predict_proba(rows)
        keys = [str(c) for c in self.classes]
        return [
            {
                "label": self.classes[int(np.argmax(p))],
                "probabilities": {k: float(v) for k, v in zip(keys, p, strict=True)},
            }
            for p in proba
        ]

    # ---- explanations ------------------------------------------------------
    def explain(self, rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Per row: the label, and the contributions (margin space) towards it.

        ``base_value + sum(contributions) == margin`` of the explained class (the
        log-odds of class 1 for a binary model, of the predicted class otherwise).
        """
        data = self._model_input(rows)
        proba = self._probabilities(data)
        matrix = (
            xgb.DMatrix(data, feature_names=self._names)
            if isinstance(data, np.ndarray)
            else xgb.DMatrix(data, enable_categorical=True)
        )
        contribs = self.booster.predict(matrix, pred_contribs=True)
        names = self._names
        binary = contribs.ndim == 2
        answers = []
        for i, p in enumerate(proba):
            label_index = int(np.argmax(p))
            explained = 1 if binary else label_index
            row_contribs = contribs[i] if binary else contribs[i, label_index]
            answers.append(
                {
                    "label": self.classes[label_index],
                    "explained_class": self.classes[explained],
                    "base_value": float(row_contribs[-1]),
                    "contributions": {
                        n: float(v) for n, v in zip(names, row_contribs[:-1], strict=True)
                    },
                }
            )
        return answers

    def global_importance(self, importance_type: str = "total_gain") -> dict[str, float]:
        """Feature importance over the whole model, normalised to sum to 1."""
        raw = self.booster.get_score(importance_type=importance_type)
        # Multi-output vector leaves give a list per feature; their sum is the feature's score.
        scores = {k: float(np.sum(v)) for k, v in raw.items()}
        total = sum(scores.values()) or 1.0
        return {name: scores.get(name, 0.0) / total for name in self.schema.feature_names}

    # ---- model card --------------------------------------------------------
    def card(self) -> ModelCard:
        """The model card served at ``GET /model``."""
        return ModelCard(
            version=self.version,
            tag=self.tag,
            lineage=self.lineage,
            schema=self.schema,
            example_row=self.schema.example_row(),
        )
