"""The predictor: a verified model bundle turned into answers and explanations.

A classifier answers a label and class probabilities, a regression model a value and
its prediction interval (the quantile model of ``quantiles.ubj``, calibrated as
``intervals.json`` says). Used by the BentoML service, in process by the UI, and by the
registered MLflow model (``tabserve/mlflow_model/model.py``) and the `train`/`promote` stages, so
that every one of them gives the same numbers. The booster reads the schema's
one encoding (:meth:`FeatureSchema.encode`): a float64 matrix with each category as its
code in schema order and missing as NaN. Prediction goes through
``Booster.inplace_predict`` on that matrix (no DMatrix per request, no pandas frame: for a
model with text columns the frame cost about 4 ms a call against 0.3 ms, with identical
outputs; the booster knows from training which columns are categorical). Explanations
use ``pred_contribs``, which needs a DMatrix, built from the same matrix with the
schema's feature types. One thread per worker: BentoML scales with processes.
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

from tabserve.core.answers import (
    answer_columns,
    class_probabilities,
    classification_answers,
    classification_columns,
    regression_answers,
    regression_columns,
    regression_values,
)
from tabserve.core.bundle import (
    MODEL_FILE,
    QUANTILES_FILE,
    BundleIntegrityError,
    Interval,
    Lineage,
    read_examples,
    read_interval,
    read_schema,
    verify_bundle,
)
from tabserve.core.schema import FeatureSchema, Label

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
    interval_coverage: float | None = None  # regression: the intervals' nominal coverage

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the card."""
        lineage = self.lineage
        return {
            "version": self.version,
            "tag": self.tag,
            "model_name": lineage.model_name,
            "task": self.schema.target.task,
            "interval_coverage": self.interval_coverage,
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
    """A loaded, verified model bundle: a classifier's labels and probabilities, or a
    regression model's values with their prediction intervals.

    Args:
        booster: the XGBoost booster.
        schema: its FeatureSchema.
        lineage: its lineage (verified against the model files by :meth:`from_bundle`);
            None where there is none yet (the MLflow model, before registration).
        version: the version callers see (``X-Model-Version``).
        tag: the BentoML model tag, for the model card.
        examples: sample test rows with labels.
        interval: regression only: the booster of the interval's ends and its calibration.

    Raises:
        SchemaMismatchError: if the booster's features or outputs differ from the schema's.
    """

    def __init__(
        self,
        booster: xgb.Booster,
        schema: FeatureSchema,
        lineage: Lineage | None,
        *,
        version: str,
        tag: str = "",
        examples: list[dict[str, Any]] | None = None,
        interval: tuple[xgb.Booster, Interval] | None = None,
    ) -> None:
        self.booster = booster
        self.schema = schema
        self.lineage = lineage
        self.version = version
        self.tag = tag
        self.examples = examples or []
        self.classes: list[Label] = list(schema.target.classes)
        self.regression = schema.target.is_regression
        self.interval = interval
        self._names = schema.model_feature_names
        # Each model column's input feature: a date's parts explain as the date.
        self._sources = [column.feature for column in schema.columns]
        self._aggregate = schema.has_when
        if self.regression and interval is None:
            raise SchemaMismatchError("a regression bundle needs its interval model")
        # One thread per worker: BentoML scales with processes, and 2+ threads per
        # request only contend with the other workers.
        self.booster.set_param({"nthread": 1})
        if interval is not None:
            interval[0].set_param({"nthread": 1})
        self._check_schema()

    @classmethod
    def from_files(
        cls,
        directory: str | Path,
        *,
        lineage: Lineage | None = None,
        version: str,
        tag: str = "",
        examples: list[dict[str, Any]] | None = None,
    ) -> Predictor:
        """Load the model files in ``directory`` (as ``train`` writes them, or a bundle).

        Raises:
            BundleIntegrityError: for a model or schema file that cannot be read.
            SchemaMismatchError: if booster and schema disagree.
        """
        directory = Path(directory)
        try:
            booster = xgb.Booster(model_file=str(directory / MODEL_FILE))
            schema = read_schema(directory)
            calibration = read_interval(directory)
            interval = (
                None
                if calibration is None
                else (xgb.Booster(model_file=str(directory / QUANTILES_FILE)), calibration)
            )
        except (xgb.core.XGBoostError, ValueError, OSError) as exc:
            raise BundleIntegrityError(f"bundle {directory} cannot be loaded: {exc}") from exc
        return cls(
            booster,
            schema,
            lineage,
            version=version,
            tag=tag,
            examples=examples,
            interval=interval,
        )

    @classmethod
    def from_bundle(cls, directory: str | Path, *, version: str, tag: str = "") -> Predictor:
        """Load and verify the bundle in ``directory``.

        Raises:
            BundleIntegrityError: for a missing file, a sha256 mismatch, or a model or
                schema file that cannot be read.
            SchemaMismatchError: if booster and schema disagree.
        """
        lineage = verify_bundle(directory)
        return cls.from_files(
            directory,
            lineage=lineage,
            version=version,
            tag=tag,
            examples=read_examples(directory),
        )

    def _check_schema(self) -> None:
        boosters = [self.booster] + ([self.interval[0]] if self.interval else [])
        wanted = [t == "c" for t in self.schema.feature_types]
        for booster in boosters:
            names = booster.feature_names
            if names is not None and list(names) != self._names:
                raise SchemaMismatchError(
                    f"booster features {list(names)} differ from schema features {self._names}"
                )
            types = booster.feature_types
            if types is not None and [t == "c" for t in types] != wanted:
                raise SchemaMismatchError(
                    f"the booster's categorical features {list(types)} differ from the "
                    f"schema's {self.schema.feature_types}"
                )
        matrix = self.matrix([self.schema.example_row()])
        if self.regression:
            assert self.interval is not None
            ends = np.asarray(self.interval[0].inplace_predict(matrix))
            if np.asarray(self.booster.inplace_predict(matrix)).ndim != 1 or ends.shape != (1, 2):
                raise SchemaMismatchError(
                    "a regression bundle needs a one-output model and a two-quantile model"
                )
            return
        outputs = class_probabilities(self.booster, matrix).shape[1]
        if outputs != len(self.classes):
            raise SchemaMismatchError(
                f"the booster outputs {outputs} class probabilities, the schema has "
                f"{len(self.classes)} classes"
            )

    # ---- prediction --------------------------------------------------------
    def matrix(self, rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> np.ndarray:
        """The booster's input for ``rows``: the schema's encoding (see the module doc)."""
        return self.schema.encode(rows)

    def predict_proba(self, rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> np.ndarray:
        """Class probabilities, shape ``(n_rows, n_classes)``, columns in class order."""
        return class_probabilities(self.booster, self.matrix(rows))

    def predict_values(
        self, rows: pd.DataFrame | Iterable[Mapping[str, Any]]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Regression: ``(values, lows, highs)`` of the rows, each ``(n_rows,)``."""
        assert self.interval is not None
        return regression_values(self.booster, *self.interval, self.matrix(rows))

    def predict(self, rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """One answer per row: ``{"label", "probabilities"}`` for a classifier,
        ``{"value", "interval": {"low", "high", "coverage"}}`` for a regression model."""
        return self.answers(self.matrix(rows))

    def answers(self, matrix: np.ndarray) -> list[dict[str, Any]]:
        """:meth:`predict` of rows already encoded (:meth:`matrix`)."""
        if self.regression:
            assert self.interval is not None
            values = regression_values(self.booster, *self.interval, matrix)
            return regression_answers(*values, self.interval[1].coverage)
        return classification_answers(self.classes, class_probabilities(self.booster, matrix))

    def answer_columns(self, matrix: np.ndarray) -> dict[str, np.ndarray]:
        """:meth:`answers` as whole columns (``label`` and ``proba_<class>``, or
        ``prediction``, ``low``, ``high``): :func:`answer_columns` of the answers, without a
        dict per row."""
        if self.regression:
            assert self.interval is not None
            return regression_columns(*regression_values(self.booster, *self.interval, matrix))
        return classification_columns(self.classes, class_probabilities(self.booster, matrix))

    # ---- explanations ------------------------------------------------------
    def explain(self, rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Per row: the prediction, and each feature's contribution (margin space) to it.

        ``base_value + sum(contributions) == margin`` of the explained output: the value
        of a regression model; the log-odds of class 1 for a binary model, of the
        predicted class otherwise.
        """
        return self.explanations(self.matrix(rows))

    def explanations(self, data: np.ndarray) -> list[dict[str, Any]]:
        """:meth:`explain` of rows already encoded (:meth:`matrix`)."""
        contribs = self.booster.predict(
            xgb.DMatrix(
                data,
                feature_names=self._names,
                feature_types=self.schema.feature_types,
                enable_categorical=True,
                nthread=1,
            ),
            pred_contribs=True,
        )
        if self.regression:
            values = np.asarray(self.booster.inplace_predict(data), dtype=np.float64)
            return [
                {
                    "value": float(value),
                    "base_value": float(row[-1]),
                    "contributions": self._by_feature(row[:-1]),
                }
                for value, row in zip(values, contribs, strict=True)
            ]
        proba = class_probabilities(self.booster, data)
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
                    "contributions": self._by_feature(row_contribs[:-1]),
                }
            )
        return answers

    def _by_feature(self, values: np.ndarray) -> dict[str, float]:
        """Contributions per input feature: a date's or timestamp's parts summed into it."""
        if not self._aggregate:
            return {n: float(v) for n, v in zip(self._names, values, strict=True)}
        summed = dict.fromkeys(self.schema.feature_names, 0.0)
        for source, value in zip(self._sources, values, strict=True):
            summed[source] += float(value)
        return summed

    def global_importance(self, importance_type: str = "total_gain") -> dict[str, float]:
        """Feature importance over the whole model, normalised to sum to 1 (a date's or
        timestamp's parts summed into it)."""
        raw = self.booster.get_score(importance_type=importance_type)
        # Multi-output vector leaves give a list per feature; their sum is the feature's score.
        scores = {k: float(np.sum(v)) for k, v in raw.items()}
        total = sum(scores.values()) or 1.0
        by_feature = dict.fromkeys(self.schema.feature_names, 0.0)
        for column in self.schema.columns:
            by_feature[column.feature] += scores.get(column.name, 0.0) / total
        return by_feature

    # ---- model card --------------------------------------------------------
    def card(self) -> ModelCard:
        """The model card served at ``GET /model``.

        Raises:
            ValueError: for a predictor without lineage (not a served bundle).
        """
        if self.lineage is None:
            raise ValueError("a model card needs the bundle's lineage")
        return ModelCard(
            version=self.version,
            tag=self.tag,
            lineage=self.lineage,
            schema=self.schema,
            example_row=self.schema.example_row(),
            interval_coverage=None if self.interval is None else self.interval[1].coverage,
        )


__all__ = [
    "ModelCard",
    "Predictor",
    "SchemaMismatchError",
    "answer_columns",
    "class_probabilities",
    "classification_answers",
    "regression_answers",
    "regression_values",
]
