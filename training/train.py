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

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn import metrics as skm

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


def write_plot_data(schema: FeatureSchema, evaluation: Evaluation, folder: Path) -> None:
    """DVC plot data for the task: ROC, PR and confusion for a classifier; predicted vs
    actual and residuals for a regression model (the files of the other task removed)."""
    folder.mkdir(exist_ok=True)
    y_true, outputs = evaluation.y_true, evaluation.outputs
    if schema.target.is_regression:
        files: dict[str, Any] = {
            "predicted_vs_actual.json": [
                {"actual": round(float(a), 6), "predicted": round(float(p), 6)}
                for a, p in zip(y_true, outputs, strict=True)
            ],
            "residuals.json": [
                {"predicted": round(float(p), 6), "residual": round(float(a - p), 6)}
                for a, p in zip(y_true, outputs, strict=True)
            ],
        }
    else:
        points = curve_points(schema, y_true, outputs)
        files = {
            "roc.json": points["roc"],
            "pr.json": points["pr"],
            "confusion.json": confusion_rows(schema, y_true, outputs),
        }
    for stale in set(PLOT_FILES) - set(files):
        (folder / stale).unlink(missing_ok=True)
    for name, records in files.items():
        (folder / name).write_text(json.dumps(records) + "\n")


PLOT_FILES = (
    "roc.json",
    "pr.json",
    "confusion.json",
    "predicted_vs_actual.json",
    "residuals.json",
)


def curve_points(
    schema: FeatureSchema, y_true: np.ndarray, proba: np.ndarray
) -> dict[str, list[dict[str, Any]]]:
    """ROC and PR curve points per class (one-vs-rest; the positive class for binary)."""
    classes = schema.target.classes
    wanted = [1] if len(classes) == 2 else list(range(len(classes)))
    roc: list[dict[str, Any]] = []
    pr: list[dict[str, Any]] = []
    for k in wanted:
        positive = (y_true == k).astype(int)
        fpr, tpr, _ = skm.roc_curve(positive, proba[:, k])
        precision, recall, _ = skm.precision_recall_curve(positive, proba[:, k])
        roc += [
            {"class": str(classes[k]), "fpr": round(float(a), 6), "tpr": round(float(b), 6)}
            for a, b in zip(fpr, tpr, strict=True)
        ]
        pr += [
            {
                "class": str(classes[k]),
                "recall": round(float(a), 6),
                "precision": round(float(b), 6),
            }
            for a, b in zip(recall, precision, strict=True)
        ]
    return {"roc": roc, "pr": pr}


def confusion_rows(
    schema: FeatureSchema, y_true: np.ndarray, proba: np.ndarray
) -> list[dict[str, str]]:
    """One record per test row (actual, predicted): DVC's confusion template counts them."""
    classes = [str(c) for c in schema.target.classes]
    return [
        {"actual": classes[a], "predicted": classes[p]}
        for a, p in zip(y_true, proba.argmax(axis=1), strict=True)
    ]


def write_plot_images(schema: FeatureSchema, evaluation: Evaluation, folder: Path) -> list[Path]:
    """The test plots as PNGs (for MLflow): ROC, PR and confusion matrix, or predicted vs
    actual (with the intervals) and residuals."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    if schema.target.is_regression:
        return _regression_images(schema, evaluation, folder, plt)
    y_true, proba = evaluation.y_true, evaluation.outputs

    classes = [str(c) for c in schema.target.classes]
    points = curve_points(schema, y_true, proba)
    paths = []
    for kind, x, y in (("roc", "fpr", "tpr"), ("pr", "recall", "precision")):
        fig, ax = plt.subplots(figsize=(5, 4))
        frame = pd.DataFrame(points[kind])
        for label, part in frame.groupby("class", sort=False):
            ax.plot(part[x], part[y], label=f"class {label}")
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_title(f"{kind.upper()} (test split)")
        ax.legend(loc="best")
        fig.tight_layout()
        paths.append(folder / f"{kind}.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    matrix = skm.confusion_matrix(y_true, proba.argmax(axis=1), labels=range(len(classes)))
    fig, ax = plt.subplots(figsize=(5, 4))
    skm.ConfusionMatrixDisplay(matrix, display_labels=classes).plot(ax=ax, colorbar=False)
    ax.set_title("Confusion matrix (test split)")
    fig.tight_layout()
    paths.append(folder / "confusion_matrix.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths


def _regression_images(
    schema: FeatureSchema, evaluation: Evaluation, folder: Path, plt: Any
) -> list[Path]:
    y_true, values = evaluation.y_true, evaluation.outputs
    assert evaluation.lows is not None
    assert evaluation.highs is not None
    name = schema.target.name
    coverage = evaluation.metrics["interval_coverage"]
    nominal = evaluation.metrics["interval_nominal"]
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.errorbar(
        y_true,
        values,
        yerr=[values - evaluation.lows, evaluation.highs - values],
        fmt="o",
        markersize=3,
        elinewidth=0.6,
        alpha=0.6,
        label=f"interval: {coverage:.0%} of targets inside ({nominal:.0%} nominal)",
    )
    edges = [min(y_true.min(), values.min()), max(y_true.max(), values.max())]
    ax.plot(edges, edges, color="black", linewidth=1, label="predicted = actual")
    ax.set_xlabel(f"actual {name}")
    ax.set_ylabel(f"predicted {name}")
    ax.set_title("Predicted vs actual (test split)")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    paths = [folder / "predicted_vs_actual.png"]
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(values, y_true - values, s=9, alpha=0.6)
    ax.axhline(0, color="black", linewidth=1)
    ax.set_xlabel(f"predicted {name}")
    ax.set_ylabel("residual (actual - predicted)")
    ax.set_title("Residuals (test split)")
    fig.tight_layout()
    paths.append(folder / "residuals.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths


def examples(
    schema: FeatureSchema, test: pd.DataFrame, seed: int, n: int = N_EXAMPLES
) -> list[dict[str, Any]]:
    """Up to ``n`` test rows as JSON-ready dicts (missing as None), for the UI and load tests."""
    sample = test.sample(n=min(n, len(test)), random_state=seed).sort_index()
    sample = sample.astype(object).where(sample.notna(), None)
    rows = sample.to_dict(orient="records")
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()} for row in rows]


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
