"""Stage `train`: the final fit with the tuned params, test-set metrics and plots.

Outputs ``models/model.ubj`` (XGBoost's native format, no pickle),
``metrics.json`` (test accuracy, ROC AUC, log loss, F1), DVC plot data under
``plots/`` and ``models/train_run.json`` (the MLflow run that holds the same
metrics, the plots as images, the schema and the logged model).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn import metrics as skm

from tabserve.bundle import md5_file, sha256_file
from tabserve.schema import FeatureSchema
from training.modeling import (
    classification_metrics,
    dmatrix,
    fit,
    objective_params,
    predict_proba,
)
from training.params import Params, load_params

log = logging.getLogger("training.train")

MODEL_PATH = Path("models/model.ubj")
RUN_PATH = Path("models/train_run.json")
METRICS_PATH = Path("metrics.json")
PLOTS_DIR = Path("plots")
N_EXAMPLES = 200


@dataclass(frozen=True)
class Trained:
    """The result of :func:`train`: the booster, its test metrics and plot data."""

    booster: xgb.Booster
    booster_params: dict[str, Any]
    metrics: dict[str, float]
    proba: np.ndarray
    y_true: np.ndarray


def train(
    schema: FeatureSchema, splits: dict[str, pd.DataFrame], params: Params, best: dict[str, Any]
) -> Trained:
    """Fit on train with early stopping on valid; score on the frozen test split."""
    booster_params = objective_params(schema, params.seed, params.train.nthread) | best["params"]
    booster = fit(
        booster_params,
        dmatrix(schema, splits["train"]),
        dmatrix(schema, splits["valid"]),
        params.train.num_boost_round,
        params.train.early_stopping_rounds,
    )
    # Keep only the trees up to the best iteration: what is served is what was scored.
    booster = booster[: booster.best_iteration + 1]
    test = splits["test"]
    proba = predict_proba(booster, schema, test)
    y_true = schema.encode_target(test[schema.target.name])
    return Trained(booster, booster_params, classification_metrics(y_true, proba), proba, y_true)


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


def write_plot_images(
    schema: FeatureSchema, y_true: np.ndarray, proba: np.ndarray, folder: Path
) -> list[Path]:
    """ROC, PR and confusion-matrix PNGs (for MLflow)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

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

    from tabserve.pyfunc import log_model as log_pyfunc_model
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
    MODEL_PATH.parent.mkdir(parents=True, exist_ok=True)
    result.booster.save_model(MODEL_PATH)
    METRICS_PATH.write_text(json.dumps(result.metrics, indent=2, sort_keys=True) + "\n")
    PLOTS_DIR.mkdir(exist_ok=True)
    points = curve_points(schema, result.y_true, result.proba)
    (PLOTS_DIR / "roc.json").write_text(json.dumps(points["roc"]) + "\n")
    (PLOTS_DIR / "pr.json").write_text(json.dumps(points["pr"]) + "\n")
    (PLOTS_DIR / "confusion.json").write_text(
        json.dumps(confusion_rows(schema, result.y_true, result.proba)) + "\n"
    )

    data_md5 = {s: md5_file(args.prepared / f"{s}.parquet") for s in ("train", "valid", "test")}
    sha = sha256_file(MODEL_PATH)
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
        for path in write_plot_images(schema, result.y_true, result.proba, Path(tmp)):
            mlflow.log_artifact(str(path), artifact_path="plots")
        mlflow.log_artifact(str(args.prepared / "schema.json"))
        log_data_report(json.loads((args.prepared / "report.json").read_text()))
        example_path = Path(tmp) / "examples.json"
        example_path.write_text(json.dumps(examples(schema, splits["test"], params.seed)) + "\n")
        mlflow.log_artifact(str(example_path))
        mlflow.log_artifact(str(args.best))
        info = log_pyfunc_model(MODEL_PATH, args.prepared / "schema.json", schema, splits["train"])
        record = {
            "run_id": run.info.run_id,
            "model_uri": info.model_uri,
            "model_sha256": sha,
            "data_md5": data_md5,
            "git_commit": commit,
            "metrics": result.metrics,
            "params": {k: v for k, v in result.booster_params.items() if k != "verbosity"},
        }
    RUN_PATH.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    log.info(
        "test metrics %s; model %s (sha256 %s…); MLflow run %s",
        result.metrics,
        MODEL_PATH,
        sha[:12],
        run.info.run_id,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
