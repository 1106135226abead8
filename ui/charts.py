"""Plotly figures of one prediction and of the model (built from plain dicts)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise

import plotly.graph_objects as go

ACCENT = "#ea580c"
MUTED = "#94a3b8"
POSITIVE = "#dc2626"
NEGATIVE = "#2563eb"
MAX_BARS = 15


def _layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0, "font": {"size": 14}},
        height=height,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        template="plotly_white",
        showlegend=False,
    )
    return fig


def probability_chart(probabilities: Mapping[str, float], label: object) -> go.Figure:
    """Bars of the class probabilities; the predicted class stands out."""
    classes = list(probabilities)
    values = [probabilities[c] for c in classes]
    fig = go.Figure(
        go.Bar(
            x=classes,
            y=values,
            text=[f"{v:.3f}" for v in values],
            textposition="auto",
            marker_color=[ACCENT if c == str(label) else MUTED for c in classes],
            hovertemplate="class %{x}: %{y:.6f}<extra></extra>",
        )
    )
    fig.update_yaxes(range=[0, 1], title="probability")
    fig.update_xaxes(type="category", title="class")
    return _layout(fig, "Class probabilities", 300)


def value_chart(
    value: float, low: float, high: float, coverage: float, quantiles: Sequence[float], name: str
) -> go.Figure:
    """A regression answer against what training saw: the training target's distribution
    (bars between its deciles, each holding a tenth of the rows), the prediction interval
    as a band and the predicted value as a line."""
    edges = sorted(set(quantiles))
    fig = go.Figure()
    if len(edges) >= 2:
        share = 1.0 / (len(edges) - 1)
        centers = [(a + b) / 2 for a, b in pairwise(edges)]
        widths = [b - a for a, b in pairwise(edges)]
        density = [share / w if w > 0 else 0.0 for w in widths]
        fig.add_bar(
            x=centers,
            y=density,
            width=widths,
            marker_color=MUTED,
            opacity=0.55,
            hovertemplate="training rows between deciles<extra></extra>",
            name="training target",
        )
    fig.add_vrect(
        x0=low,
        x1=high,
        fillcolor=ACCENT,
        opacity=0.18,
        line_width=0,
        annotation_text=f"{coverage:.0%} interval",
        annotation_position="top right",
    )
    fig.add_vline(x=value, line_color=ACCENT, line_width=3)
    fig.update_xaxes(title=name)
    fig.update_yaxes(title="training density", showticklabels=False)
    return _layout(fig, f"Predicted {name}: {value:.4g} [{low:.4g}, {high:.4g}]", 300)


def contribution_chart(
    contributions: Mapping[str, float], explained_class: object, base_value: float
) -> go.Figure:
    """This row's feature contributions (margin space), largest magnitude first.

    ``explained_class`` None: a regression model's value (its contributions add up to it).
    """
    ranked = sorted(contributions.items(), key=lambda kv: abs(kv[1]), reverse=True)
    shown = ranked[:MAX_BARS]
    rest = ranked[MAX_BARS:]
    if rest:
        shown.append((f"{len(rest)} other features", sum(v for _, v in rest)))
    names = [n for n, _ in shown][::-1]  # plotly draws the first bar at the bottom
    values = [v for _, v in shown][::-1]
    fig = go.Figure(
        go.Bar(
            x=values,
            y=names,
            orientation="h",
            marker_color=[POSITIVE if v > 0 else NEGATIVE for v in values],
            hovertemplate="%{y}: %{x:+.4f}<extra></extra>",
        )
    )
    fig.update_xaxes(
        title="contribution to the predicted value"
        if explained_class is None
        else f"contribution to class {explained_class} (log-odds)"
    )
    fig.update_yaxes(type="category", automargin=True)
    title = f"Why this prediction (base value {base_value:+.3f})"
    return _layout(fig, title, 120 + 24 * len(shown))


def importance_chart(importance: Mapping[str, float]) -> go.Figure:
    """The model's global feature importance (share of total gain), largest first."""
    ranked = sorted(importance.items(), key=lambda kv: kv[1], reverse=True)[:MAX_BARS]
    names = [n for n, _ in ranked][::-1]
    values = [v for _, v in ranked][::-1]
    fig = go.Figure(
        go.Bar(
            x=values,
            y=names,
            orientation="h",
            marker_color=ACCENT,
            hovertemplate="%{y}: %{x:.1%}<extra></extra>",
        )
    )
    fig.update_xaxes(title="share of total gain", tickformat=".0%")
    fig.update_yaxes(type="category", automargin=True)
    return _layout(fig, "Global feature importance", 120 + 24 * len(ranked))


def empty_chart(title: str, message: str) -> go.Figure:
    """A placeholder figure carrying a message (e.g. while the form is invalid)."""
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, title, 200)
