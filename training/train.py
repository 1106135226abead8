"""Stage `train`: the final fit with the tuned params, test-set metrics and plots.

Outputs ``models/bundle/`` (the model files: XGBoost's native format, no pickle, and
the schema; for regression also the interval's quantile model and its calibration),
``metrics.json`` (classification: test accuracy, ROC AUC, log loss, F1; regression:
RMSE, MAE, R², MAPE, and the interval's test coverage beside its nominal value), DVC
plot data under ``plots/`` and ``models/train_run.json`` (the MLflow run that holds the
same metrics, the plots as images, the data report and the logged model).
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
from typing import Any

import pandas as pd
import xgboost as xgb

from tabserve.core.bundle import (
    INTERVAL_FILE,
    MODEL_FILE,
    QUANTILES_FILE,
    REFERENCE_FILE,
    SCHEMA_FILE,
    Interval,
    md5_file,
    model_files_sha256,
    sha256_file,
)
from tabserve.core.drift import Reference, build_reference
from tabserve.core.predictor import Predictor
from tabserve.core.schema import FeatureSchema
from training.modeling import Evaluation, dmatrix, evaluate, fit, fit_interval, objective_params
from training.params import Params, load_params
from training.plots import write_plot_data, write_plot_images

log = logging.getLogger("training.train")

BUNDLE_DIR = Path("models/bundle")
RUN_PATH = Path("models/train_run.json")
METRICS_PATH = Path("metrics.json")
PLOTS_DIR = Path("plots")
N_EXAMPLES = 200


@dataclass(frozen=True)
class Trained:
    """The result of :func:`train`: the boosters, how they score on the test split, and
    the reference profile of the service's drift gauges."""

    booster: xgb.Booster
    booster_params: dict[str, Any]
    interval: tuple[xgb.Booster, Interval] | None
    evaluation: Evaluation
    reference: Reference

    @property
    def metrics(self) -> dict[str, float]:
        """The test metrics."""
        return self.evaluation.metrics


def train(
    schema: FeatureSchema, splits: dict[str, pd.DataFrame], params: Params, best: dict[str, Any]
) -> Trained:
    """Fit on train with early stopping on valid; score on the frozen test split.

    A regression model also gets its prediction interval (``fit_interval``). The test
    metrics come from the service's own predictor, so they are the served model's.
    """
    booster_params = objective_params(schema, params.seed, params.train) | best["params"]
    dtrain, dvalid = dmatrix(schema, splits["train"]), dmatrix(schema, splits["valid"])
    booster = fit(
        booster_params,
        dtrain,
        dvalid,
        params.train.num_boost_round,
        params.train.early_stopping_rounds,
    )
    # Keep only the trees up to the best iteration: what is served is what was scored.
    booster = booster[: booster.best_iteration + 1]
    interval = None
    if schema.target.is_regression:
        interval = fit_interval(
            booster_params,
            dtrain,
            dvalid,
            params.train.interval_coverage,
            params.train.num_boost_round,
            params.train.early_stopping_rounds,
        )
    predictor = Predictor(booster, schema, None, version="test", interval=interval)
    reference = build_reference(
        schema, schema.encode(splits["train"]), predictor.predict(splits["valid"])
    )
    return Trained(
        booster, booster_params, interval, evaluate(predictor, splits["test"]), reference
    )


def write_model_files(result: Trained, schema_file: Path, folder: Path) -> dict[str, str]:
    """The model files into ``folder`` (emptied first); return the extra files' sha256."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    result.booster.save_model(folder / MODEL_FILE)
    shutil.copyfile(schema_file, folder / SCHEMA_FILE)
    if result.interval is not None:
        ends, calibration = result.interval
        ends.save_model(folder / QUANTILES_FILE)
        (folder / INTERVAL_FILE).write_text(calibration.model_dump_json(indent=2) + "\n")
    (folder / REFERENCE_FILE).write_text(result.reference.model_dump_json(indent=1) + "\n")
    return model_files_sha256(folder)


def examples(
    schema: FeatureSchema, test: pd.DataFrame, seed: int, n: int = N_EXAMPLES
) -> list[dict[str, Any]]:
    """Up to ``n`` test rows as JSON-ready dicts (missing as None), for the UI and load tests."""
    sample = test.sample(n=min(n, len(test)), random_state=seed).sort_index()
    rows = sample.astype(object).to_dict(orient="records")
    return [schema.json_row(row) for row in rows]


def log_data_report(report: dict[str, Any]) -> None:
    """The prepare stage's report in the active MLflow run: the whole of it as
    ``data_report.json``, its summary as metrics (leakage score, quality counts)."""
    import mlflow

    mlflow.log_dict(report, "data_report.json")
    quality, leakage = report["quality"], report["leakage"]
    mlflow.log_metrics(
        {
            "data_max_feature_score": float(leakage["max_score"]),
            "data_duplicate_rows": quality["duplicate_rows"],
            "data_test_rows_in_train": quality["test_rows_in_train"],
            "data_mostly_missing_columns": len(quality["mostly_missing"]),
        }
    )
    mlflow.set_tags(
        {
            "data.leakage_allowed": ",".join(leakage["allowed"]) or "-",
            "data.dropped": ",".join(d["name"] for d in report["dropped"]) or "-",
        }
    )


def main(argv: list[str] | None = None) -> int:
    """CLI: final fit, metrics, plots, and an MLflow run with the logged model."""
    import mlflow

    from tabserve.mlflow_model.model import log_model as log_pyfunc_model
    from training.environment import configure_logging, configure_mlflow, git_commit

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    parser.add_argument(
        "--prepared", type=Path, default=Path("data/prepared"), help="prepared data folder"
    )
    parser.add_argument(
        "--best", type=Path, default=Path("tuning/best_params.json"), help="tuned params"
    )
    args = parser.parse_args(argv)
    configure_logging()
    params = load_params(args.params)
    schema = FeatureSchema.load(args.prepared / "schema.json")
    splits = {
        s: pd.read_parquet(args.prepared / f"{s}.parquet") for s in ("train", "valid", "test")
    }
    best = json.loads(args.best.read_text())

    result = train(schema, splits, params, best)
    files_sha256 = write_model_files(result, args.prepared / "schema.json", BUNDLE_DIR)
    METRICS_PATH.write_text(json.dumps(result.metrics, indent=2, sort_keys=True) + "\n")
    write_plot_data(schema, result.evaluation, PLOTS_DIR)

    data_md5 = {s: md5_file(args.prepared / f"{s}.parquet") for s in ("train", "valid", "test")}
    sha = sha256_file(BUNDLE_DIR / MODEL_FILE)
    commit = git_commit()
    configure_mlflow(params.registry.experiment)
    with mlflow.start_run(run_name="train") as run, tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tags(
            {
                "stage": "train",
                "git_commit": commit,
                "model_sha256": sha,
                "data_md5": json.dumps(data_md5, sort_keys=True),
                "tune.study": best["study"],
            }
        )
        mlflow.log_params({k: v for k, v in result.booster_params.items() if k != "verbosity"})
        mlflow.log_params(
            {
                "n_trees": result.booster.num_boosted_rounds(),
                "seed": params.seed,
                "data.source": params.data.source,
                "data.target": params.data.target,
            }
        )
        mlflow.log_metrics({f"test_{k}": v for k, v in result.metrics.items()})
        for path in write_plot_images(schema, result.evaluation, Path(tmp)):
            mlflow.log_artifact(str(path), artifact_path="plots")
        mlflow.log_artifact(str(args.prepared / "schema.json"))
        mlflow.log_artifact(str(BUNDLE_DIR / REFERENCE_FILE))  # the drift reference
        log_data_report(json.loads((args.prepared / "report.json").read_text()))
        example_path = Path(tmp) / "examples.json"
        example_path.write_text(json.dumps(examples(schema, splits["test"], params.seed)) + "\n")
        mlflow.log_artifact(str(example_path))
        mlflow.log_artifact(str(args.best))
        info = log_pyfunc_model(BUNDLE_DIR, schema, splits["train"])
        record = {
            "run_id": run.info.run_id,
            "model_uri": info.model_uri,
            "model_sha256": sha,
            "files_sha256": files_sha256,
            "data_md5": data_md5,
            "git_commit": commit,
            "metrics": result.metrics,
            "params": {k: v for k, v in result.booster_params.items() if k != "verbosity"},
        }
    RUN_PATH.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    log.info(
        "test metrics %s; model %s (sha256 %s…); MLflow run %s",
        result.metrics,
        BUNDLE_DIR / MODEL_FILE,
        sha[:12],
        run.info.run_id,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
