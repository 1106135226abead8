"""The test plots of stage ``train``: the data DVC draws (``dvc plots``) and PNG images
for the MLflow run (ROC, precision-recall and confusion for a classifier, predicted vs
actual and residuals for a regression model)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from tabserve.core.schema import FeatureSchema
from training.modeling import Evaluation

log = logging.getLogger("training.train")


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
