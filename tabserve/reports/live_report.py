"""``tabserve live-report``: the champion and its shadow challenger on the same labelled
live rows, as one self-contained HTML page (and, with ``--snapshot``, the rows it stands
on, for the pipeline's ``promote`` stage).

The numbers are :mod:`tabserve.core.live_evidence`'s: each metric with a 95 % bootstrap
interval, and a paired test of the primary metric's difference.
"""

from __future__ import annotations

import html
import math
from collections import Counter

import plotly.graph_objects as go
import plotly.io as pio

from tabserve.core.live_evidence import Comparison, Snapshot
from tabserve.record.store import RecordStore
from tabserve.reports.page import report_page


def snapshot_from(store: RecordStore, limit: int, shadow: str | None = None) -> Snapshot:
    """The most recently labelled rows (at most ``limit``) that ``shadow`` (default: the
    shadow of the most recent one) and the champion it ran beside both answered."""
    pairs = store.pairs(limit, labelled=True)
    if shadow is None and pairs:
        shadow = pairs[0].shadow_model
    pairs = [p for p in pairs if p.shadow_model == shadow]
    if not pairs:
        return Snapshot(None, shadow, [])
    champion = Counter(p.champion_model for p in pairs).most_common(1)[0][0]
    rows = [
        {"id": p.id, "champion": p.champion, "shadow": p.shadow, "actual": p.actual}
        for p in sorted(pairs, key=lambda p: p.id)
        if p.champion_model == champion
    ]
    return Snapshot(champion, shadow, rows)


def _number(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.4f}"


def live_page(snapshot: Snapshot, comparison: Comparison, alpha: float) -> str:
    """The HTML page."""
    title = (
        f"champion {snapshot.champion} vs shadow {snapshot.shadow}"
        if snapshot.rows
        else "no labelled row both models answered yet"
    )
    rows_html, charts = [], ""
    for f in comparison.figures:
        better = (f.shadow > f.champion) == f.higher_is_better and f.shadow != f.champion
        rows_html.append(
            f"<tr><td>{html.escape(f.metric)}</td>"
            f"<td class=n>{_number(f.champion)}</td>"
            f"<td class=n>[{_number(f.champion_ci[0])}, {_number(f.champion_ci[1])}]</td>"
            f"<td class=n>{_number(f.shadow)}</td>"
            f"<td class=n>[{_number(f.shadow_ci[0])}, {_number(f.shadow_ci[1])}]</td>"
            f"<td>{'shadow' if better else 'champion'}"
            f"{'' if f.higher_is_better else ' (lower is better)'}</td></tr>"
        )
    if comparison.figures:
        figure = go.Figure()
        for who, color in (("champion", "#64748b"), ("shadow", "#2563eb")):
            values = [getattr(f, who) for f in comparison.figures]
            cis = [getattr(f, f"{who}_ci") for f in comparison.figures]
            figure.add_bar(
                name=who,
                x=[f.metric for f in comparison.figures],
                y=values,
                marker_color=color,
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [hi - v for v, (_, hi) in zip(values, cis, strict=True)],
                    "arrayminus": [v - lo for v, (lo, _) in zip(values, cis, strict=True)],
                },
            )
        figure.update_layout(
            barmode="group", title="Both models on the same rows (95 % intervals)", height=420
        )
        charts = pio.to_html(figure, full_html=False, include_plotlyjs=True)
    significant = comparison.p_value < alpha
    verdict = (
        f"{'The shadow' if comparison.shadow_better else 'The champion'} is better on "
        f"{comparison.primary}; the difference is "
        f"{'significant' if significant else 'not significant'} at {alpha} "
        f"(p = {comparison.p_value:.4g}, {html.escape(comparison.test)})."
        if comparison.rows
        else "Nothing to compare: send the truth of rows the shadow scored (POST /feedback)."
    )
    body = f"""<p>{comparison.rows} served rows that both models answered and whose ground
truth came back (<code>POST /feedback</code>): the same rows for both. Intervals: 95 % percentile
bootstrap, seeded.</p>
<p id="verdict"><strong>{verdict}</strong></p>
<table id="figures"><tr><th>metric</th><th>champion</th><th>95 % interval</th>
<th>shadow</th><th>95 % interval</th><th>better</th></tr>
{"".join(rows_html)}</table>
<div>{charts}</div>"""
    return report_page("tabserve live report", f"Live report: {title}", body)
