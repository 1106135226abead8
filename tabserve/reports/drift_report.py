"""``tabserve drift-report``: one HTML page comparing served rows with the training data.

The rows come from an inference log (``tabserve/serving/inference_log.py``: a folder or a
file of JSON lines, with the answers the service gave) or from a CSV or Parquet file
of rows (the validation split, say, for comparison: its answers are computed with the
bundle's own predictor). For each feature the page shows the reference and served
shares per bin and the PSI, and the same for the predictions, with the numbers of the
service's drift gauges (``tabserve/core/drift.py``). Plotly draws it; the page embeds
plotly.js, so it opens without a network.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from tabserve.core.drift import (
    DriftReport,
    Reference,
    compare,
    feature_bins,
    prediction_bins,
    prediction_statistic,
    shares,
)
from tabserve.core.inference_records import read_log
from tabserve.core.predictor import Predictor
from tabserve.reports.page import report_page

REFERENCE_COLOUR = "#94a3b8"
SERVED_COLOUR = "#ea580c"


def load_rows(
    path: Path, predictor: Predictor
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    """The rows of ``path`` with their answers, and a description of where they came from.

    Raises:
        ValueError: for a file that is neither an inference log nor a CSV/Parquet table.
    """
    names = predictor.schema.feature_names
    if path.is_dir() or path.suffix in (".jsonl", ".log") or ".jsonl" in path.name:
        records = [r for r in read_log(path) if r.get("endpoint", "predict") == "predict"]
        if not records:
            raise ValueError(f"{path} holds no predictions (an empty inference log?)")
        rows = [{n: r["row"].get(n) for n in names} for r in records]
        return rows, [r["answer"] for r in records], f"inference log {path}"
    if path.suffix == ".csv":
        frame = pd.read_csv(path)
    elif path.suffix in (".parquet", ".pq"):
        frame = pd.read_parquet(path)
    else:
        raise ValueError(f"{path}: give an inference log (.jsonl or its folder), .csv or .parquet")
    features = frame[[n for n in names if n in frame.columns]]
    rows = features.astype(object).where(features.notna(), None).to_dict("records")
    return rows, predictor.predict(features), f"rows of {path} (answers from the model)"


def _bars(title: str, labels: list[str], reference: list[float], served: list[float]) -> go.Figure:
    figure = go.Figure(
        [
            go.Bar(name="training reference", x=labels, y=reference, marker_color=REFERENCE_COLOUR),
            go.Bar(name="served", x=labels, y=served, marker_color=SERVED_COLOUR),
        ]
    )
    figure.update_layout(
        title={"text": title, "x": 0, "font": {"size": 14}},
        barmode="group",
        height=280,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        template="plotly_white",
        yaxis={"title": "share of rows", "tickformat": ".0%"},
        xaxis={"type": "category"},
        legend={"orientation": "h", "y": 1.12, "x": 1, "xanchor": "right"},
    )
    return figure


def drift_page(
    reference: Reference,
    predictor: Predictor,
    rows: list[dict[str, Any]],
    answers: list[dict[str, Any]],
    source: str,
) -> tuple[str, DriftReport]:
    """The HTML page and the numbers it shows (features by decreasing PSI)."""
    bins = feature_bins(reference, predictor.matrix(rows))
    predicted = prediction_bins(reference, prediction_statistic(predictor.schema, answers))
    report = compare(reference, bins, predicted)
    order = sorted(
        range(len(reference.features)),
        key=lambda i: -report.feature_psi[reference.features[i].name],
    )
    profile = reference.prediction
    prediction_psi = report.prediction_psi or 0.0
    figures = [
        _bars(
            f"Predictions ({profile.statistic.replace('_', ' ')}): PSI {prediction_psi:.3f}",
            profile.labels,
            profile.shares,
            shares(predicted, len(profile.shares)),
        )
    ]
    rows_html = []
    for index in order:
        feature = reference.features[index]
        value, missing = report.feature_psi[feature.name], report.missing_delta[feature.name]
        served_missing = float(np.mean(bins[:, index] < 0)) if len(bins) else 0.0
        figures.append(
            _bars(
                f"{feature.name}: PSI {value:.3f}, missing {feature.missing_rate:.1%} → "
                f"{served_missing:.1%}",
                feature.labels,
                feature.shares,
                shares(bins[:, index], len(feature.shares)),
            )
        )
        rows_html.append(
            f"<tr><td>{html.escape(feature.name)}</td><td class=n>{value:.3f}</td>"
            f"<td class=n>{missing:+.1%}</td><td>{_verdict(value)}</td></tr>"
        )
    charts = "".join(
        f"<div>{pio.to_html(f, full_html=False, include_plotlyjs=i == 0)}</div>"
        for i, f in enumerate(figures)
    )
    body = f"""<p>{len(rows)} served rows ({html.escape(source)}) against the training reference
({reference.rows} training rows; predictions: the validation split). PSI under 0.1:
stable; 0.1 to 0.2: a moderate shift; over 0.2: significant (the alert's threshold).
With {len(rows)} rows, sampling alone gives a PSI of about {9 / max(len(rows), 1):.2f} over
ten bins (bins &minus; 1 over rows) even when nothing changed: read the numbers above that.</p>
<table id="summary"><tr><th>feature</th><th>PSI</th><th>missing rate change</th><th></th></tr>
{"".join(rows_html)}
<tr><th>predictions</th><th class=n>{prediction_psi:.3f}</th><th></th>
<th>{_verdict(prediction_psi)}</th></tr></table>
<div class="grid">{charts}</div>"""
    page = report_page("tabserve drift report", f"Drift report: model {predictor.version}", body)
    return page, report


def _verdict(value: float) -> str:
    if value > 0.2:
        return "significant shift"
    if value > 0.1:
        return "moderate shift"
    return "stable"
