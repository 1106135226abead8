"""params.yaml, validated: a typo or a wrong type is an error, never a silent default."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

CLASSIFICATION_METRICS = {"accuracy": True, "roc_auc": True, "f1": True, "log_loss": False}
REGRESSION_METRICS = {"rmse": False, "mae": False, "r2": True, "mape": False}
# Every test metric the promotion can compare on, and whether higher is better.
METRICS_HIGHER_IS_BETTER = CLASSIFICATION_METRICS | REGRESSION_METRICS
# `promote.metric: auto`: the metric of each task.
DEFAULT_METRIC = {"classification": "roc_auc", "regression": "rmse"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


ColumnType = Literal["numeric", "categorical", "date", "timestamp", "id", "text"]


class CsvParams(_Strict):
    """How a CSV source is read; each is sniffed from the file when not given."""

    sep: Literal[",", ";", "\t", "|"] | None = None
    decimal: Literal[".", ","] | None = None
    encoding: str = "utf-8"


class DataParams(_Strict):
    source: str = Field(min_length=1)
    target: str = Field(min_length=1)
    # Columns left out of the model; `features`, when given, is the only ones kept.
    # Names are checked against the data by `prepare` (an unknown one is an error).
    drop: list[str] = Field(default_factory=list)
    features: list[str] | None = None
    # What the model predicts. auto: a numeric target with more than 20 distinct values
    # (or a non-integral one) is regression, anything else classification.
    task: Literal["auto", "classification", "regression"] = "auto"
    # Per column, its type instead of the inferred one: numeric, categorical, date,
    # timestamp, or id and text (left out). Checked against the data by `prepare`.
    types: dict[str, ColumnType] = Field(default_factory=dict)
    # Per date or timestamp column written otherwise than ISO 8601: its strftime format
    # ("%d/%m/%Y"); the served model then takes the same text (and ISO 8601).
    formats: dict[str, str] = Field(default_factory=dict)
    # How a CSV source is read (`ingest`); sniffed when not given.
    csv: CsvParams = Field(default_factory=CsvParams)

    @model_validator(mode="after")
    def _target_is_kept(self) -> DataParams:
        if self.target in self.drop or (self.features is not None and self.target in self.features):
            raise ValueError(f"the target {self.target!r} cannot be in data.drop or data.features")
        if self.features is not None and not self.features:
            raise ValueError("data.features, when given, must name at least one column")
        return self


class PrepareParams(_Strict):
    test_size: float = Field(gt=0, lt=0.9)
    valid_size: float = Field(gt=0, lt=0.9)
    min_rows_per_class: int = Field(ge=3)
    # A feature that alone predicts the target at least this well (ROC AUC, out of fold)
    # stops the stage as a suspected leak, unless listed in `allow`.
    leakage_threshold: float = Field(default=0.99, gt=0.5, le=1.0)
    allow: list[str] = Field(default_factory=list)
    # A categorical keeps at most this many levels: the most frequent, the rest folded
    # into one "(other)" level (what unseen categories become when served).
    max_categories: int = Field(default=50, ge=2, le=10_000)
    # A text column with at least this share of distinct values is an identifier, and
    # left out (unless data.types declares it).
    unique_share: float = Field(default=0.95, gt=0.5, le=1.0)
    # A text column whose values are at least this long (median, characters) is free
    # text, and left out.
    text_length: int = Field(default=40, ge=5, le=100_000)


class Range(_Strict):
    low: float
    high: float
    log: bool = False
    type: Literal["float", "int"] = "float"

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log-scale range needs low > 0")
        return self


class TuneParams(_Strict):
    """The tuning budget, the search space and how a study survives a dead worker.

    The budget is a trial count, so the result does not depend on the machine's
    speed; ``timeout_s`` is an optional wall-clock cap, off unless set.
    """

    n_trials: int = Field(ge=1)
    timeout_s: float | None = Field(default=None, gt=0)
    num_boost_round: int = Field(ge=1)
    early_stopping_rounds: int = Field(ge=1)
    space: dict[str, Range]
    # Optuna's heartbeat: a running trial whose worker has sent no heartbeat for
    # ``grace_period_s`` is failed, then retried, by the next worker to start a trial.
    heartbeat_interval_s: int = Field(default=5, ge=1)
    grace_period_s: int = Field(default=20, ge=2)

    @model_validator(mode="after")
    def _grace_outlasts_heartbeat(self) -> TuneParams:
        if self.grace_period_s <= self.heartbeat_interval_s:
            raise ValueError(
                f"grace_period_s ({self.grace_period_s}) must exceed heartbeat_interval_s "
                f"({self.heartbeat_interval_s}), or live trials would be failed as dead"
            )
        return self


class TrainParams(_Strict):
    num_boost_round: int = Field(ge=1)
    early_stopping_rounds: int = Field(ge=1)
    nthread: int = Field(ge=1)
    # Regression only: the loss of the model of the value (tuned and trained with it).
    regression_objective: Literal[
        "reg:squarederror", "reg:absoluteerror", "reg:pseudohubererror"
    ] = "reg:squarederror"
    # Regression only: the nominal coverage of the prediction interval (quantile models
    # of its two ends, calibrated on the validation split).
    interval_coverage: float = Field(default=0.9, gt=0.5, lt=1.0)


class RegistryParams(_Strict):
    model_name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$")
    experiment: str = Field(min_length=1)


class PromoteParams(_Strict):
    metric: Literal["auto", "accuracy", "roc_auc", "log_loss", "f1", "rmse", "mae", "r2", "mape"]
    evidence: Literal["test", "live"] = "test"
    min_live_rows: int = Field(default=200, ge=1)
    alpha: float = Field(default=0.05, gt=0, lt=1)

    def metric_for(self, task: str) -> str:
        """The metric to compare on for ``task`` (``classification`` or ``regression``).

        Raises:
            ValueError: for a metric of the other task, naming the ones that fit.
        """
        if self.metric == "auto":
            return DEFAULT_METRIC[task]
        fitting = REGRESSION_METRICS if task == "regression" else CLASSIFICATION_METRICS
        if self.metric not in fitting:
            raise ValueError(
                f"promote.metric {self.metric!r} does not fit a {task} model; use auto or "
                f"one of {', '.join(fitting)}"
            )
        return self.metric


class Params(_Strict):
    seed: int
    data: DataParams
    prepare: PrepareParams
    tune: TuneParams
    train: TrainParams
    registry: RegistryParams
    promote: PromoteParams

    @model_validator(mode="after")
    def _metric_fits_the_task(self) -> Params:
        # With data.task: auto the task is known at `prepare`; `promote` checks it then.
        if self.data.task != "auto":
            self.promote.metric_for(self.data.task)
        return self


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``.

    Raises:
        pydantic.ValidationError: naming the key at fault.
    """
    with Path(path).open(encoding="utf-8") as handle:
        return Params.model_validate(yaml.safe_load(handle))
